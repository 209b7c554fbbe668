"""DiffAugment: one draw moves the condition and the image of a pair alike, gradients pass, and the
draws come from its own seeded generator whose state can be saved and restored."""

import pytest
import torch

from p2p_models.diffaugment import DiffAugment


def pair(seed=0, condition_channels=3):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(4, 3, 32, 48, generator=g) * 2 - 1
    return torch.rand(4, condition_channels, 32, 48, generator=g) * 2 - 1, image


def test_geometric_transforms_move_both_halves_alike():
    for policy in (["translation"], ["cutout"], ["translation", "cutout"]):
        image = torch.randn(4, 3, 32, 48)
        condition = image[:, :1].clone()  # the condition is the image's first channel
        out_c, out_i = DiffAugment(policy, seed=1)(condition, image)
        assert torch.equal(out_c, out_i[:, :1]) and not torch.equal(out_i, image)
        zeros = out_i == 0  # translation fills with zeros, cutout zeroes a rectangle
        assert zeros.any() and torch.equal(zeros[:, :1], out_c == 0)


def test_translation_shifts_whole_pixels_and_cutout_zeroes_a_quarter():
    x = torch.arange(1, 32 * 48 + 1, dtype=torch.float).reshape(1, 1, 32, 48).expand(8, 1, -1, -1)
    _, shifted = DiffAugment(["translation"], seed=2)(x, x)
    for s in shifted:
        kept = s[s != 0]  # at most 1/8 of each side is shifted out
        assert len(kept) >= (32 - 4) * (48 - 6)
    _, cut = DiffAugment(["cutout"], seed=3)(x, x)
    assert ((cut == 0).flatten(1).sum(1) <= 16 * 24).all() and (cut == 0).any()


def test_color_changes_only_the_image_and_the_same_seed_repeats():
    condition, image = pair()
    out_c, out_i = DiffAugment(["color"], seed=4)(condition, image)
    assert torch.equal(out_c, condition) and not torch.allclose(out_i, image)
    again = DiffAugment(["color", "translation", "cutout"], seed=4)
    other = DiffAugment(["color", "translation", "cutout"], seed=5)
    first = DiffAugment(["color", "translation", "cutout"], seed=4)(condition, image)
    assert all(torch.equal(a, b) for a, b in zip(first, again(condition, image)))
    assert not torch.equal(first[1], other(condition, image)[1])


def test_differentiable_and_resumable():
    augment = DiffAugment(["color", "translation", "cutout"], seed=6)
    condition, image = pair()
    image.requires_grad_(True)
    augment(condition, image)[1].square().sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    state = augment.state_dict()
    expected = augment(condition, image.detach())
    resumed = DiffAugment(["color", "translation", "cutout"], seed=0)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(expected, resumed(condition, image.detach())))


def test_unknown_policy_is_named():
    with pytest.raises(ValueError, match="flip"):
        DiffAugment(["flip"])
