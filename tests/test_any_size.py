"""Inference at any size: native resolution (reflection-padded) and tiled, for both pipelines."""

import itertools

import numpy as np
import pytest
import torch
from conftest import ROOT, seeded
from PIL import Image
from test_pipeline import arr, make_pipe, photo
from test_pix2pixhd import hd_pipe, scene

from p2p_models import FeatureEncoder, GlobalGenerator, LocalEnhancer, Pix2PixPipeline, UNetGenerator
from p2p_models.pipelines import size_rule
from p2p_models.tiling import blend_window, reflect_pad, run_padded, run_tiled, tile_starts


def test_reflect_pad_mirrors_and_handles_pads_wider_than_the_image():
    x = torch.arange(3.0).view(1, 1, 1, 3)
    padded, top, left = reflect_pad(x, 1, 7)
    assert padded.shape == (1, 1, 1, 7) and (top, left) == (0, 2)
    assert padded[0, 0, 0].tolist() == [0, 1, 0, 1, 2, 1, 2]  # mirrored twice
    single = reflect_pad(torch.ones(1, 1, 1, 1), 4, 4)[0]  # a 1-pixel image is repeated
    assert single.shape == (1, 1, 4, 4) and bool((single == 1).all())


def test_tiles_cover_the_image_with_the_overlap():
    assert tile_starts(100, 100, 10) == [0]
    starts = tile_starts(1000, 256, 64)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 64 for a, b in itertools.pairwise(starts))
    window = blend_window(8, 8, 3)
    assert window.min() > 0 and window[0, 0, 4, 4] == 1


def test_tiled_and_padded_runs_equal_a_whole_run_for_a_pointwise_network():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 2, 1)
    x = torch.randn(1, 3, 150, 233)
    with torch.no_grad():
        whole = net(x)
        assert torch.allclose(run_padded(net, x, 64), whole, atol=1e-6)
        assert torch.allclose(run_tiled(net, x, (64, 128), 16, 64), whole, atol=1e-6)
    with pytest.raises(ValueError, match="tile_size 60x64 must be divisible by the network's factor 32"):
        run_tiled(net, x, (60, 64), 8, 32)
    with pytest.raises(ValueError, match=r"tile_overlap must lie in \[0, 64\)"):
        run_tiled(net, x, (64, 64), 64, 32)


@pytest.mark.parametrize("model, factor, minimum", [
    (UNetGenerator(num_downs=6, ngf=8), 64, 64),  # the innermost level is 1x1
    (GlobalGenerator(5, ngf=4, n_downsampling=2, n_blocks=1), 4, 8),  # its innermost reflection pads need 2 pixels
    (LocalEnhancer(5, ngf=4, n_downsample_global=2, n_blocks_global=1, n_local_enhancers=1, n_blocks_local=1), 8, 16),
    (FeatureEncoder(3, 3, nef=4, n_downsampling=3), 8, 16),
])
def test_each_model_states_its_sizes(model, factor, minimum):
    assert (model.downsampling_factor, model.min_size) == (factor, minimum)
    net = model.layers if isinstance(model, FeatureEncoder) else model
    size = (minimum, minimum + factor)
    assert net(torch.zeros(1, model.config.in_channels, *size)).shape[-2:] == size
    with pytest.warns(FutureWarning, match="downsampling_factor"):
        assert size_rule(model) == (factor, minimum)


def lively_pipe():
    """make_pipe() with weights large enough that outputs vary across the image (init_weights'
    N(0, 0.02) gives a nearly flat grey)."""
    pipe = make_pipe()
    with torch.no_grad():
        for m in pipe.generator.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.mul_(10)
    return pipe


@pytest.mark.parametrize("deterministic", [True, False])
def test_native_and_tiled_outputs_keep_the_input_size(deterministic):
    pipe = make_pipe()
    image = photo(150, 97)
    for mode in ("native", "tiled"):
        out = pipe(image, generator=seeded(3), deterministic=deterministic, size_mode=mode).images[0]
        assert out.size == (150, 97)
        again = pipe(image, generator=seeded(3), deterministic=deterministic, size_mode=mode).images[0]
        assert np.array_equal(arr(out), arr(again))
    outs = pipe([image, photo(40, 300, seed=1)], generator=[seeded(1), seeded(2)], deterministic=deterministic,
                size_mode="native").images
    assert [o.size for o in outs] == [(150, 97), (40, 300)]


def test_native_at_the_working_size_is_the_resize_path_and_differs_elsewhere():
    pipe = lively_pipe()
    image = photo(64, 64)
    native = pipe(image, deterministic=True, size_mode="native").images[0]
    assert np.array_equal(arr(native), arr(pipe(image, deterministic=True).images[0]))
    big = photo(256, 192)
    native, resized = (arr(pipe(big, deterministic=True, size_mode=m).images[0]) for m in ("native", "resize"))
    assert np.abs(native - resized).mean() > 1  # not resized through 64x64
    single_tile = pipe(image, deterministic=True, size_mode="tiled", tile_size=128).images[0]
    assert np.array_equal(arr(single_tile), arr(pipe(image, deterministic=True, size_mode="native").images[0]))


def test_tiled_output_agrees_with_native_on_the_shipped_maps_model():
    """A trained maps generator is local enough that blended 256 px tiles of a 512x512 aerial photo
    agree with the whole-image output to about a grey level, while resize-and-back differs more."""
    pipe = Pix2PixPipeline.from_pretrained(ROOT / "pretrained" / "maps_aerial2map")
    aerial = Image.open(ROOT / "examples" / "maps" / "aerial_100.jpg").convert("RGB").resize((512, 512), Image.BICUBIC)
    native = arr(pipe(aerial, deterministic=True, size_mode="native").images[0])
    tiled = arr(pipe(aerial, deterministic=True, size_mode="tiled", tile_size=256, tile_overlap=64).images[0])
    resized = arr(pipe(aerial, deterministic=True).images[0])
    assert np.abs(tiled - native).mean() < 3 < np.abs(resized - native).mean()


def test_max_pixels_and_bad_options_apply_to_every_size_mode():
    pipe = make_pipe()
    pipe.max_pixels = 100 * 100
    for mode in ("resize", "native", "tiled"):
        with pytest.raises(ValueError, match="image 1: 150x97 is 14,550 pixels, over this pipeline's limit"):
            pipe([photo(30, 30), photo(150, 97)], size_mode=mode)
    with pytest.raises(ValueError, match="size_mode must be one of"):
        pipe(photo(), size_mode="crop")
    with pytest.raises(ValueError, match="tile_size 48x48 must be divisible"):
        make_pipe()(photo(200, 200), size_mode="tiled", tile_size=48)
    with pytest.raises(ValueError, match="tile_size must be a positive int"):
        pipe(photo(), size_mode="tiled", tile_size=(64, 64, 3))


def test_hd_native_and_tiled_at_the_label_maps_size():
    pipe = hd_pipe()
    labels, inst = scene()
    big_labels, big_inst = (np.kron(a, np.ones((3, 2), np.int64)) for a in (labels, inst))  # 192x512
    for mode in ("native", "tiled"):
        out = pipe(big_labels, big_inst, generator=seeded(0), size_mode=mode).images[0]
        assert out.size == (512, 192)
    native = np.asarray(pipe(labels, inst, generator=seeded(0), size_mode="native").images[0]).astype(int)
    resized = np.asarray(pipe(labels, inst, generator=seeded(0)).images[0])
    assert np.array_equal(native, resized)  # at the working size: the same
    photo_style = pipe(big_labels[:150, :301], big_inst[:150, :301], generator=seeded(0), size_mode="native",
                       style_image=Image.fromarray(np.zeros((40, 40, 3), np.uint8)))
    assert photo_style.images[0].size == (301, 150)
    pipe.max_pixels = 1000
    with pytest.raises(ValueError, match="label_map: 512x192 is 98,304 pixels"):
        pipe(big_labels, size_mode="tiled")
