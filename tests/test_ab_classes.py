"""Colorization as classification (`p2p_models.ab_classes`, Zhang et al. 2016): the ab bins, the
soft-encoded targets, the annealed mean, the cross-entropy, and the U-Net head that uses them."""

import numpy as np
import pytest
import torch
from conftest import seeded
from PIL import Image

from p2p_models import Pix2PixPipeline, UNetGenerator
from p2p_models.ab_classes import ab_cross_entropy, annealed_mean, bin_centres, soft_encode
from p2p_models.rebalancing import ColorRebalancing

RED, BLUE = torch.tensor([0.6, 0.4]), torch.tensor([0.1, -0.6])  # model-space ab (Lab ab / 110)


def colours(*ab):
    """Pixels (1, 2, 1, N) of the given model-space ab values."""
    return torch.stack(ab, dim=1)[None, :, None, :]


def test_bin_centres_are_numbered_as_the_rebalancing_bins():
    centres = bin_centres()
    assert centres.shape == (22 * 22, 2)
    rebalancing = ColorRebalancing(torch.zeros(22, 22))
    numbered = rebalancing.bin_index(centres.T[None, :, :, None])[0, :, 0]
    assert torch.equal(numbered, torch.arange(len(centres)))  # centre q lies in bin q
    assert centres.abs().max() < 1 and torch.allclose(centres.mean(0), torch.zeros(2), atol=1e-6)


def test_soft_encoding_spreads_each_colour_over_its_five_nearest_bins():
    centres = bin_centres()
    target = soft_encode(colours(RED, BLUE, centres[100], torch.tensor([-1.0, 1.0])))  # the last on a corner
    assert target.shape == (1, len(centres), 1, 4)
    assert torch.allclose(target.sum(1), torch.ones(1, 1, 4))
    assert (target > 0).sum(1).tolist() == [[[5, 5, 5, 4]]]  # a corner bin has 4 on the grid
    own = ColorRebalancing(torch.zeros(22, 22)).bin_index(colours(RED, BLUE, centres[100]))[0, 0]
    assert torch.equal(target.argmax(1)[0, 0, :3], own)  # the heaviest bin is the colour's own
    assert target[0, 100, 0, 2] > 0.5  # a colour at a centre keeps most of its weight there
    # the same as measuring every centre (only the 9 around the colour's bin are)
    ab = torch.rand(3, 2, 5, 7, generator=seeded(0)) * 1.8 - 0.9  # off the corner bins
    pixels = ab.permute(0, 2, 3, 1).reshape(-1, 2)
    distance, nearest = torch.cdist(pixels * 110, centres * 110).topk(5, dim=1, largest=False)
    expected = torch.zeros(len(pixels), len(centres)).scatter_(1, nearest, torch.softmax(-distance**2 / 50, dim=1))
    assert torch.allclose(soft_encode(ab).permute(0, 2, 3, 1).reshape(-1, len(centres)), expected, atol=1e-5)


def test_the_annealed_mean_keeps_the_likelier_colour_saturated():
    """Red 60%, blue 40%: the mean (T = 1) is a dull mixture, the annealed mean (T = 0.38) leans to red,
    a near one-hot distribution decodes to its bin's centre."""
    centres = bin_centres()
    red, blue = (ColorRebalancing(torch.zeros(22, 22)).bin_index(colours(c)).item() for c in (RED, BLUE))
    logits = torch.full((1, len(centres), 1, 1), -1e4)
    logits[0, red], logits[0, blue] = np.log(0.6), np.log(0.4)
    mean, annealed = annealed_mean(logits, centres, 1.0)[0, :, 0, 0], annealed_mean(logits, centres, 0.38)[0, :, 0, 0]
    assert torch.allclose(mean, 0.6 * centres[red] + 0.4 * centres[blue], atol=1e-5)
    w = 0.6 ** (1 / 0.38) / (0.6 ** (1 / 0.38) + 0.4 ** (1 / 0.38))  # 0.74: red's share after annealing
    assert torch.allclose(annealed, w * centres[red] + (1 - w) * centres[blue], atol=1e-5)
    assert (annealed - centres[red]).norm() < 0.7 * (mean - centres[red]).norm()
    one_hot = torch.zeros(1, len(centres), 1, 1)
    one_hot[0, 7] = 50
    assert torch.allclose(annealed_mean(one_hot, centres, 0.38)[0, :, 0, 0], centres[7], atol=1e-5)


def test_the_annealed_mean_of_channels_last_logits_is_the_same():
    """The fast CPU paths give channels-last logits, decoded along their last dimension: the same ab as
    the strided softmax over the contiguous logits' dim 1, in float32 and from bf16."""
    centres = bin_centres()
    logits = 3 * torch.randn(2, len(centres), 6, 5, generator=seeded(0))
    expected = torch.einsum("bqhw,qc->bchw", torch.softmax(logits / 0.5, dim=1), centres)
    for dtype in (torch.float32, torch.bfloat16):
        plain = logits.to(dtype)
        last = plain.contiguous(memory_format=torch.channels_last)
        assert not plain.is_contiguous(memory_format=torch.channels_last) and not last.is_contiguous()
        tolerance = 1e-5 if dtype == torch.float32 else 2e-2
        assert torch.allclose(annealed_mean(plain, centres, 0.5), expected, atol=tolerance)
        assert torch.allclose(annealed_mean(last, centres, 0.5), annealed_mean(plain, centres, 0.5), atol=1e-5)


def test_the_cross_entropy_is_least_at_the_target_and_rebalanced():
    ab = colours(RED, BLUE, torch.zeros(2), torch.zeros(2))
    exact = torch.log(soft_encode(ab).clamp_min(1e-12))
    random = torch.randn(exact.shape, generator=seeded(0), requires_grad=True)
    assert ab_cross_entropy(exact, ab) < ab_cross_entropy(random, ab)
    ab_cross_entropy(random, ab).backward()
    assert torch.isfinite(random.grad).all() and random.grad.abs().sum() > 0
    rebalancing = ColorRebalancing.from_ab(colours(*[torch.zeros(2)] * 9, RED, BLUE))  # grey common, colour rare
    weighted = ab_cross_entropy(random.detach(), ab, rebalancing)
    assert weighted != ab_cross_entropy(random.detach(), ab)


def test_the_unet_head_predicts_logits_at_half_resolution_and_decodes_ab():
    torch.manual_seed(0)
    g = UNetGenerator(1, 2, num_downs=5, ngf=8, output_activation="ab_classes").eval()
    x = torch.randn(2, 1, 64, 96)
    ab, logits = g(x, return_logits=True)
    assert ab.shape == (2, 2, 64, 96) and logits.shape == (2, 484, 32, 48)
    assert ab.abs().max() < 1 and torch.equal(g(x), ab)
    with pytest.raises(ValueError, match="out_channels must be 2"):
        UNetGenerator(1, 3, num_downs=5, ngf=8, output_activation="ab_classes")


@pytest.mark.parametrize("backend", ["fast", "onnxruntime"])
def test_a_classification_pipeline_saves_loads_and_runs_on_every_backend(tmp_path, backend):
    torch.manual_seed(0)
    g = UNetGenerator(1, 2, num_downs=5, ngf=8, output_activation="ab_classes")
    with torch.no_grad():
        g.up_blocks[0].conv.bias.normal_(0, 3)  # a decided, colourful distribution
    Pix2PixPipeline(generator=g, image_size=64, color_space="lab").save_pretrained(tmp_path / "pipe")
    pipe = Pix2PixPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.generator.config.output_activation == "ab_classes"
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    expected = [np.asarray(pipe(photo, deterministic=d, generator=seeded(1)).images[0], dtype=int) for d in (1, 0)]
    assert np.asarray(Image.fromarray(expected[0].astype(np.uint8)).convert("HSV"))[..., 1].mean() > 20  # colour
    pipe.set_backend(backend)
    got = [np.asarray(pipe(photo, deterministic=d, generator=seeded(1)).images[0], dtype=int) for d in (1, 0)]
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(got, expected))
