"""Emoji sprites (datasets/sprites.py) and procedural scenes (datasets/scenes.py)."""
from __future__ import annotations

import hashlib
import math

import pytest
import torch
from torch import Tensor

from bench.errors import UserError
from datasets import sprites as S
from datasets.scenes import SCENE_CATEGORIES, render_scenes, scene_index


def identity(n: int, *, flip: bool = False) -> dict[str, Tensor]:
    """Placements filling the canvas with the bank sprite (scale 1, centred, upright)."""
    return {"scale": torch.ones(n), "centre": torch.zeros(n, 2), "angle": torch.zeros(n),
            "flip": torch.full((n,), flip)}


@pytest.fixture(scope="module")
def bank64() -> Tensor:
    return S.load_sprite_bank(["boat_sailboat", "dog_poodle", "waterbird_flamingo"], 64)


# ------------------------------------------------------------------------------------------------ sprites


def test_manifest_sprites_load_and_match_hashes() -> None:
    manifest = S.load_manifest()
    assert len(manifest) >= 40
    for name, entry in manifest.items():
        data = (S.SPRITE_DIR / f"{name}.png").read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        sprite = S.load_sprite(name)
        assert sprite.dtype == torch.uint8 and sprite.shape[0] == 4 and max(sprite.shape[1:]) == 64, name
        alpha = sprite[3]
        assert (alpha == 0).any() and (alpha == 255).any(), name


def test_groups_and_missing_sprite() -> None:
    for group in ("boat", "airplane", "truck", "dog", "horse", "bird", "train", "bus"):
        assert len(S.sprites_in_group(group)) >= 2, group
    assert S.sprites_in_group("zebra") == ["zebra_zebra"]
    assert len(S.sprites_in_group("landbird")) == 4 and len(S.sprites_in_group("waterbird")) == 4
    assert S.sprites_in_group("deer") == ["deer_deer"] and S.sprites_in_group("tie") == ["tie_bow"]
    with pytest.raises(UserError, match="restore datasets/assets/sprites from git"):
        S.load_sprite("no_such_sprite")
    with pytest.raises(UserError, match="no sprites in group"):
        S.sprites_in_group("no_such_group")


def test_bank_is_square_rgba_in_unit_range(bank64: Tensor) -> None:
    assert bank64.shape == (3, 4, 64, 64) and bank64.dtype == torch.float32
    assert bank64.min() >= 0.0 and bank64.max() <= 1.0
    assert (bank64[:, :3] * (bank64[:, 3:] == 0)).abs().max() == 0  # no colour where fully transparent


@pytest.mark.parametrize("size", [64, 224])
def test_identity_placement_reproduces_bank(size: int) -> None:
    bank = S.load_sprite_bank(["boat_sailboat", "landbird_owl"], size)
    rgb, alpha = S.place_sprites(bank, torch.tensor([1, 0]), size, **identity(2))
    assert rgb.shape == (2, 3, size, size) and alpha.shape == (2, 1, size, size)
    assert torch.allclose(alpha, bank[[1, 0], 3:], atol=1e-4)
    prem, expected = rgb * alpha, bank[[1, 0], :3] * bank[[1, 0], 3:]
    assert torch.allclose(prem, expected, atol=1e-4)


def test_flip_mirrors(bank64: Tensor) -> None:
    which = torch.arange(3)
    rgb, alpha = S.place_sprites(bank64, which, 64, **identity(3, flip=True))
    assert torch.allclose(alpha, bank64[:, 3:].flip(-1), atol=1e-4)
    assert torch.allclose(rgb * alpha, (bank64[:, :3] * bank64[:, 3:]).flip(-1), atol=1e-4)


def sprite_coordinates(size: int, scale: float, centre: tuple[float, float], angle: float) -> Tensor:
    """max(|qx|, |qy|) of every pixel centre in the sprite frame (independent of placement_matrices)."""
    axis = (torch.arange(size, dtype=torch.float64) * 2 + 1) / size - 1
    py, px = torch.meshgrid(axis, axis, indexing="ij")
    dx, dy = px - centre[0], py - centre[1]
    # undo a counter-clockwise (as displayed, y down) rotation: rotate the offset clockwise on screen
    qx = (dx * math.cos(angle) - dy * math.sin(angle)) / scale
    qy = (dx * math.sin(angle) + dy * math.cos(angle)) / scale
    return torch.maximum(qx.abs(), qy.abs())


@pytest.mark.parametrize("size", [64, 224])
def test_alpha_vanishes_outside_the_placed_box(size: int) -> None:
    bank = S.load_sprite_bank(["truck_pickup_truck", "bird_eagle"], 48)
    scale, centre, angle = 0.5, (0.2, -0.1), 0.4
    place = {"scale": torch.full((2,), scale), "centre": torch.tensor([centre, centre]),
             "angle": torch.full((2,), angle), "flip": torch.tensor([False, True])}
    rgb, alpha = S.place_sprites(bank, torch.tensor([0, 1]), size, **place)
    outside = sprite_coordinates(size, scale, centre, angle) > 1 + 1 / 48 + 1e-3
    assert outside.any() and (~outside).any()
    assert (alpha[:, 0][:, outside] == 0).all() and (rgb[:, :, outside] == 0).all()
    assert (alpha > 0.99).any()


def test_rotation_is_counter_clockwise_as_displayed() -> None:
    bar = torch.zeros(1, 4, 16, 16)
    bar[0, :, 7:9, 8:] = 1.0  # an opaque bar from the centre to the right edge
    _, alpha = S.place_sprites(bar, torch.tensor([0]), 32, scale=torch.ones(1), centre=torch.zeros(1, 2),
                               angle=torch.tensor([math.pi / 2]), flip=torch.tensor([False]))
    assert alpha[0, 0, :12, 15:17].mean() > 0.9  # now points up
    assert alpha[0, 0, 20:, :].max() == 0


def test_random_placements_and_rendering_are_deterministic(bank64: Tensor) -> None:
    def draw() -> tuple[dict[str, Tensor], Tensor, Tensor]:
        gen = torch.Generator().manual_seed(5)
        place = S.random_placements(16, gen)
        rgb, alpha = S.place_sprites(bank64, torch.arange(16) % 3, 64, **place)
        return place, S.jitter_colour(rgb, gen, 0.3, weight=alpha), alpha

    (p1, rgb1, a1), (p2, rgb2, a2) = draw(), draw()
    assert all(torch.equal(p1[k], p2[k]) for k in p1) and torch.equal(rgb1, rgb2) and torch.equal(a1, a2)
    assert ((p1["scale"] >= 0.45) & (p1["scale"] <= 0.75)).all() and p1["centre"].abs().max() <= 0.25
    assert p1["angle"].abs().max() <= math.radians(15.0) and p1["flip"].dtype == torch.bool
    assert not S.random_placements(16, torch.Generator().manual_seed(5), flip=False)["flip"].any()
    assert rgb1.min() >= 0 and rgb1.max() <= 1


def test_jitter_colour_zero_strength_is_identity() -> None:
    rgb = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(S.jitter_colour(rgb, torch.Generator().manual_seed(1), 0.0), rgb, atol=1e-6)
    jittered = S.jitter_colour(rgb, torch.Generator().manual_seed(1), 0.5)
    assert not torch.allclose(jittered, rgb)


def test_composite_keeps_background_and_sprite_exactly(bank64: Tensor) -> None:
    background = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    rgb, alpha = S.place_sprites(bank64, torch.arange(3), 64, scale=torch.full((3,), 0.6), centre=torch.zeros(3, 2),
                                 angle=torch.zeros(3), flip=torch.zeros(3, dtype=torch.bool))
    out = S.composite(background, rgb, alpha)
    clear, opaque = (alpha == 0).expand_as(out), (alpha == 1).expand_as(out)
    assert clear.any() and opaque.any()
    assert torch.equal(out[clear], background[clear]) and torch.equal(out[opaque], rgb[opaque])


# ------------------------------------------------------------------------------------------------- scenes


def features(images: Tensor) -> Tensor:
    """Mean RGB and gradient energy along x and y."""
    gx = (images[..., :, 1:] - images[..., :, :-1]).pow(2).mean((1, 2, 3))
    gy = (images[..., 1:, :] - images[..., :-1, :]).pow(2).mean((1, 2, 3))
    return torch.cat([images.mean((2, 3)), gx[:, None], gy[:, None]], 1)


def test_render_scenes_shape_range_determinism() -> None:
    cats = torch.tensor([3, 0, 21, 3, 8, 0])
    a = render_scenes(cats, 32, torch.Generator().manual_seed(0))
    b = render_scenes(cats, 32, torch.Generator().manual_seed(0))
    c = render_scenes(cats, 32, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 32, 32) and a.dtype == torch.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[3])  # same category, different images
    assert render_scenes(torch.zeros(0, dtype=torch.long), 32, torch.Generator()).shape == (0, 3, 32, 32)


def test_scene_categories_are_distinguishable() -> None:
    k = len(SCENE_CATEGORIES)
    assert k >= 22 and len(set(SCENE_CATEGORIES)) == k
    cats = torch.arange(k).repeat_interleave(20)
    fit = features(render_scenes(cats, 64, torch.Generator().manual_seed(1)))
    test = features(render_scenes(cats, 64, torch.Generator().manual_seed(2)))
    mean, std = fit.mean(0), fit.std(0)
    fit, test = (fit - mean) / std, (test - mean) / std
    centroids = torch.stack([fit[cats == i].mean(0) for i in range(k)])
    accuracy = (torch.cdist(test, centroids).argmin(1) == cats).float().mean().item()
    assert accuracy > 0.9


def test_scene_index_and_errors() -> None:
    assert scene_index("beach") == 0 and SCENE_CATEGORIES[scene_index("grass_field")] == "grass_field"
    with pytest.raises(ValueError, match="unknown scene category 'moon'"):
        scene_index("moon")
    with pytest.raises(ValueError, match="must be in"):
        render_scenes(torch.tensor([0, len(SCENE_CATEGORIES)]), 16, torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    cats = torch.arange(len(SCENE_CATEGORIES)).repeat(2)
    cpu = render_scenes(cats, 64, torch.Generator().manual_seed(3), "cpu")
    gpu = render_scenes(cats, 64, torch.Generator().manual_seed(3), "cuda").cpu()
    assert (cpu - gpu).abs().mean() < 1e-4 and ((cpu - gpu).abs() > 1e-2).float().mean() < 1e-3
    bank = S.load_sprite_bank(["dog_dog", "tie_bow"], 64)
    place = S.random_placements(8, torch.Generator().manual_seed(0))
    rgb_c, a_c = S.place_sprites(bank, torch.arange(8) % 2, 64, **place)
    rgb_g, a_g = S.place_sprites(bank.cuda(), torch.arange(8) % 2, 64, **place)
    assert torch.allclose(a_c, a_g.cpu(), atol=1e-4) and torch.allclose(rgb_c * a_c, (rgb_g * a_g).cpu(), atol=1e-4)
