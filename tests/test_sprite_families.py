"""The sprite-on-scene families prove the bias they claim: objects_on_scenes, waterbirds_like, dogs_with_ties."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.data import BiasedDataset, load_dataset
from datasets.dogs_with_ties import NO_TIE, TIE_COLOURS
from datasets.objects_on_scenes import BIAS_SCENES, NON_BIAS_SCENES, OOD_TEST_SCENES, OOD_VAL_SCENES


def build(name: str, seed: int = 0, **params: object) -> BiasedDataset:
    return load_dataset(name, params, seed)


@pytest.fixture(scope="module")
def objects() -> BiasedDataset:
    return build("objects_on_scenes", per_class_train=24, per_class_val=8, per_class_test=12, size=32)


def background_colour(split) -> torch.Tensor:
    """Mean RGB of each image outside its object mask."""
    outside = (~split.mask).float()
    return (split.x.float() * outside).sum((2, 3)) / outside.sum((2, 3)).clamp(min=1)


# --- objects on scenes ---------------------------------------------------------------------------
def test_scene_predicts_the_label_in_training_and_never_out_of_distribution(objects: BiasedDataset) -> None:
    train, ood, shift = objects.splits["train"], objects.splits["ood"], objects.splits["shift"]
    assert torch.equal(train.bias, train.y)  # strength 1: 100 % of training images
    first_ood = len(BIAS_SCENES) + len(NON_BIAS_SCENES) + len(OOD_VAL_SCENES)
    assert torch.all(ood.bias >= first_ood) and torch.all(ood.group == 2)  # unseen scenes, never a class scene
    assert torch.all(shift.bias < len(BIAS_SCENES)) and torch.all(shift.bias != shift.y)  # another class's scene
    val_ood = objects.splits["val_ood"]
    assert torch.all((val_ood.bias >= first_ood - len(OOD_VAL_SCENES)) & (val_ood.bias < first_ood))
    assert len(OOD_TEST_SCENES) == 3


def test_the_pictured_scene_is_the_bias_attribute(objects: BiasedDataset) -> None:
    """A nearest-centroid classifier on background colour, fitted on train, reads the scene of shift images."""
    train, shift = objects.splits["train"], objects.splits["shift"]
    features = background_colour(train)
    centroids = torch.stack([features[train.bias == k].mean(0) for k in range(len(BIAS_SCENES))])
    predicted = torch.cdist(background_colour(shift), centroids).argmin(1)
    assert float((predicted == shift.bias).float().mean()) > 0.8
    assert float((predicted == shift.y).float().mean()) < 0.1


def test_masks_cover_the_pasted_objects(objects: BiasedDataset) -> None:
    """The same objects over two different scenes agree inside the mask and differ outside it."""
    iid, ood = objects.splits["iid"], objects.splits["ood"]
    assert torch.equal(iid.mask, ood.mask) and torch.equal(iid.y, ood.y)
    interior = -F.max_pool2d(-iid.mask.float(), 3, stride=1, padding=1) > 0  # the mask minus its blended rim
    same = (iid.x.int() - ood.x.int()).abs().amax(1, keepdim=True) <= 1
    assert float(same[interior].float().mean()) > 0.95
    assert float(same[~iid.mask].float().mean()) < 0.15
    debiased_same = (iid.x.int() - iid.x_debiased.int()).abs().amax(1, keepdim=True) <= 1
    assert float(debiased_same[interior].float().mean()) > 0.95


def test_strength_below_one_uses_non_bias_scenes() -> None:
    ds = build("objects_on_scenes", strength=0.7, per_class_train=40, per_class_val=4, per_class_test=4, size=32)
    train = ds.splits["train"]
    aligned = (train.bias == train.y).float().mean()
    assert float(aligned) == pytest.approx(0.7, abs=0.08)
    neutral = train.bias[train.bias != train.y]
    assert torch.all((neutral >= len(BIAS_SCENES)) & (neutral < len(BIAS_SCENES) + len(NON_BIAS_SCENES)))


# --- waterbirds-like -----------------------------------------------------------------------------
def test_waterbirds_groups_follow_the_waterbirds_rule() -> None:
    ds = build("waterbirds_like", train_size=800, val_size=200, test_size=200, size=32)
    train = ds.splits["train"]
    assert int(train.y.sum()) == round(800 * 0.232)  # waterbirds are the minority
    assert float((train.bias == train.y).float().mean()) == pytest.approx(0.95, abs=0.03)
    assert torch.equal(train.group, 2 * train.y + train.bias)
    for name in ("val", "test"):
        split = ds.splits[name]
        for c in (0, 1):
            places = split.bias[split.y == c]
            assert abs(int(places.sum()) - len(places) / 2) <= 0.5  # half on water within each class
        assert set(split.group.tolist()) == {0, 1, 2, 3}


# --- dogs with ties ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dogs() -> BiasedDataset:
    return build("dogs_with_ties", size=64, per_class_train=12, per_class_val=4, per_class_test=8)


def test_tie_is_the_class_in_training_absent_in_ood_swapped_in_shift(dogs: BiasedDataset) -> None:
    train, iid, ood, shift = (dogs.splits[k] for k in ("train", "iid", "ood", "shift"))
    assert torch.equal(train.bias, train.y) and torch.equal(iid.bias, iid.y)
    assert torch.all(ood.bias == NO_TIE) and not ood.mask.any() and torch.equal(ood.x, ood.x_debiased)
    assert torch.equal(shift.bias, 1 - shift.y) and torch.all(shift.group == 1)
    assert torch.equal(iid.x_debiased, shift.x_debiased)  # the same dogs, only the tie differs


def test_tie_mask_is_the_drawn_tie_in_its_colour(dogs: BiasedDataset) -> None:
    for name in ("train", "iid", "shift"):
        split = dogs.splits[name]
        changed = (split.x != split.x_debiased).any(1, keepdim=True)
        assert torch.all(split.mask <= changed)  # every tie pixel changed the image
        assert int((changed & ~split.mask).sum()) <= int(split.mask.sum())  # only the antialiased rim besides
        assert torch.all(split.mask.flatten(1).any(1))  # every image wears a visible tie
        for tie in (0, 1):
            pixels = split.x.permute(0, 2, 3, 1)[(split.mask[:, 0]) & (split.bias == tie)[:, None, None]]
            mean = pixels.float().mean(0) / 255  # shading and blended rims darken it a little
            assert int(torch.cdist(mean[None], torch.tensor(TIE_COLOURS)).argmin()) == tie, (name, tie)
            assert torch.allclose(mean, torch.tensor(TIE_COLOURS[tie]), atol=0.2), (name, tie)



def test_waterbirds_files_replace_the_sprites(tmp_path) -> None:
    from tests.test_image_sources import write_waterbirds

    write_waterbirds(tmp_path)
    ds = build("waterbirds_like", source="files", root=str(tmp_path), size=16)
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [3, 1, 3]
    train = ds.splits["train"]
    assert torch.equal(train.group, 2 * train.y + train.bias) and train.mask is None
    assert ds.splits["test"].x.shape[1:] == (3, 16, 16)
    with pytest.raises(Exception, match="needs root"):
        build("waterbirds_like", source="files")
