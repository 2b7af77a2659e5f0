"""What the mask-guided methods (RRR, GAIN, ISNet, GALS) share: the region of the image where the label's
evidence should be, from the dataset's masks, and the random-mask control.

The control trains the same method with a region of the same shape and area placed at random in the image
(each sample's region rolled by an offset fixed per training sample, so it is the same "annotation" every
epoch): the difference between a method's real-mask and random-mask rows is what the masks' content buys."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bench.data import Batch
from bench.method import Method, TrainHparams, relevant_region

MASK_CONTROLS = ("none", "random")


@dataclass
class GuidedHparams(TrainHparams):
    mask_control: str = "none"  # "random": the control with randomly placed regions of the same area

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mask_control not in MASK_CONTROLS:
            raise ValueError(f"mask_control must be one of {', '.join(MASK_CONTROLS)}, got {self.mask_control!r}")


def rolled(region: Tensor, index: Tensor) -> Tensor:
    """Each sample's B×1×H×W region rolled cyclically by an offset fixed by its position ``index`` in the split
    (a multiplicative hash: no RNG state, the same offset every epoch); shape and area are kept."""
    _, _, height, width = region.shape
    dy = (index * 7919 + 13) % height
    dx = (index * 104729 + 7) % width
    rows = (torch.arange(height, device=region.device)[None, :] - dy[:, None]) % height  # B×H
    cols = (torch.arange(width, device=region.device)[None, :] - dx[:, None]) % width  # B×W
    sample = torch.arange(region.shape[0], device=region.device)[:, None, None]
    return region[sample, 0, rows[:, :, None], cols[:, None, :]][:, None]


class MaskGuided(Method):
    """A method told where the label's evidence is (``requires`` has "masks")."""

    def build(self) -> None:
        relevant_region(torch.zeros(1, 1, 1, 1), self.ctx.shortcut_region)  # refuses masks that locate nothing
        super().build()

    def losses(self, batch: Batch, create_graph: bool) -> dict[str, Tensor]:
        """The method's loss terms and their total ``loss``; ``create_graph``: training (double backward)."""
        raise NotImplementedError

    def step(self, batch: Batch) -> dict[str, Tensor]:
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        return self.descend(self.losses(batch, create_graph=True))

    def val_loss(self, batch: Batch) -> Tensor:
        with torch.enable_grad():  # the explanations inside the loss need gradients, even at validation
            return self.losses(batch, create_graph=False)["loss"].detach()

    def region(self, batch: Batch) -> Tensor:
        """Where the evidence should be (float B×1×H×W in {0, 1}); randomly placed under the control."""
        region = relevant_region(batch.mask, self.ctx.shortcut_region)
        if self.hp.mask_control == "random":
            assert batch.index is not None
            region = rolled(region, batch.index)
        return region
