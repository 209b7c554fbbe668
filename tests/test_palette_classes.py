"""Rendered targets as classification (`p2p_models.palette_classes`): the palette fitted to the
targets, the class weights, the cross-entropy, and the U-Net head that decodes the palette."""

import numpy as np
import pytest
import torch
from conftest import seeded
from PIL import Image

from p2p_models import Pix2PixPipeline, UNetGenerator
from p2p_models.palette_classes import class_weights, fit_palette, nearest_class, palette_cross_entropy

GREY, WHITE, ORANGE = [0.85, 0.84, 0.8], [1.0, 1.0, 1.0], [0.95, 0.35, -0.8]


def tiles() -> torch.Tensor:
    """Two map-like tiles (2, 3, 32, 32) in [-1, 1]: grey ground (75%), white roads, an orange highway
    (1/16 of the pixels), with a little rendering noise."""
    x = torch.tensor(GREY)[:, None, None].repeat(2, 1, 32, 32)
    x[:, :, 8:12, :] = torch.tensor(WHITE)[:, None, None]
    x[:, :, :, 20:24] = torch.tensor(WHITE)[:, None, None]
    x[1, :, 24:28, :16] = torch.tensor(ORANGE)[:, None, None]
    return (x + 0.01 * torch.randn(x.shape, generator=seeded(0))).clamp(-1, 1)


def test_the_palette_is_the_targets_colours_most_common_first():
    palette = fit_palette(tiles(), 3)
    assert torch.allclose(palette, torch.tensor([GREY, WHITE, ORANGE]), atol=0.02)
    assert torch.equal(fit_palette(tiles(), 3), palette)  # reproducible


def test_rare_classes_weigh_more_and_the_weights_average_one():
    x, palette = tiles(), torch.tensor([GREY, WHITE, ORANGE])
    counts = torch.bincount(nearest_class(x, palette).flatten(), minlength=3).float()
    p = counts / counts.sum()
    for mix in (0.0, 0.5):
        w = class_weights(x, palette, mix)
        assert w[2] > w[1] > w[0]  # orange is the rarest, grey the commonest
        assert torch.isclose((p * w).sum(), torch.tensor(1.0))
    assert torch.allclose(class_weights(x, palette, 1.0), torch.ones(3))


def test_the_cross_entropy_rewards_the_nearest_colour():
    x, palette = tiles(), torch.tensor([GREY, WHITE, ORANGE])
    index = nearest_class(x, palette)
    right = torch.nn.functional.one_hot(index, 3).permute(0, 3, 1, 2).float() * 10
    wrong = right.roll(1, dims=1)
    assert palette_cross_entropy(right, x, palette) < 1e-3 < 5 < palette_cross_entropy(wrong, x, palette)
    logits = torch.zeros(2, 3, 32, 32, requires_grad=True)
    weighted = palette_cross_entropy(logits, x, palette, class_weights(x, palette, 0.5))
    weighted.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[1, 2, 24:28, :16] < 0).all()  # towards orange where it is


def test_the_unet_head_decodes_its_palette():
    torch.manual_seed(0)
    palette = [GREY, WHITE, ORANGE]
    g = UNetGenerator(3, 3, num_downs=5, ngf=8, output_activation="palette", output_palette=palette).eval()
    x = torch.randn(2, 3, 64, 96)
    image, logits = g(x, return_logits=True)
    assert image.shape == (2, 3, 64, 96) and logits.shape == (2, 3, 64, 96) and torch.equal(g(x), image)
    with torch.no_grad():
        g.up_blocks[0].conv.bias.copy_(torch.tensor([0.0, 0.0, 100.0]))  # decided: orange everywhere
    assert torch.allclose(g(x), torch.tensor(ORANGE)[:, None, None].expand(2, 3, 64, 96), atol=1e-4)
    assert "palette" not in g.state_dict()  # the config holds it, not the weights
    with pytest.raises(ValueError, match="go together"):
        UNetGenerator(3, 3, num_downs=5, ngf=8, output_activation="palette")
    with pytest.raises(ValueError, match="go together"):
        UNetGenerator(3, 3, num_downs=5, ngf=8, output_palette=palette)
    with pytest.raises(ValueError, match=r"K >= 2 colours of out_channels = 3 values in \[-1, 1\], got shape \(2, 2\)"):
        UNetGenerator(3, 3, num_downs=5, ngf=8, output_activation="palette", output_palette=[[0, 0], [1, 1]])
    with pytest.raises(ValueError, match="got shape"):
        UNetGenerator(3, 3, num_downs=5, ngf=8, output_activation="palette", output_palette=[[2.0, 0, 0], WHITE])


@pytest.mark.parametrize("backend", ["fast", "onnxruntime"])
def test_a_palette_pipeline_saves_loads_and_runs_on_every_backend(tmp_path, backend):
    torch.manual_seed(0)
    g = UNetGenerator(3, 3, num_downs=5, ngf=8, output_activation="palette", output_palette=[GREY, WHITE, ORANGE])
    Pix2PixPipeline(generator=g, image_size=64).save_pretrained(tmp_path / "pipe")
    pipe = Pix2PixPipeline.from_pretrained(tmp_path / "pipe")
    assert torch.equal(pipe.generator.palette, g.palette)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    expected = [np.asarray(pipe(photo, deterministic=d, generator=seeded(1)).images[0], dtype=int) for d in (1, 0)]
    pipe.set_backend(backend)
    got = [np.asarray(pipe(photo, deterministic=d, generator=seeded(1)).images[0], dtype=int) for d in (1, 0)]
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(got, expected))
