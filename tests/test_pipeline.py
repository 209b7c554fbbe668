import copy
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import ROOT, seeded
from PIL import Image
from safetensors.torch import load_file, save_file

from p2p_models import P2PPipeline, Pix2PixPipeline, UNetGenerator
from p2p_models.pipelines import seeded_generator


def make_pipe(**kwargs):
    torch.manual_seed(0)
    generator = UNetGenerator(num_downs=6, ngf=8, **kwargs)
    with torch.no_grad():  # running stats unlike any single image's, so train/eval modes differ
        for name, b in generator.named_buffers():
            if "running" in name:
                b.uniform_(0.5, 2.0)
    return Pix2PixPipeline(generator=generator.eval(), image_size=64, direction="BtoA")


def pipe_sampling_with(batch_statistics: bool):
    """`make_pipe`'s; without batch statistics, its running statistics those of random batches (as after
    training), so that its outputs are images and not the flat grey of a random net's tiny activations."""
    pipe = make_pipe(sample_with_batch_statistics=batch_statistics)
    if not batch_statistics:
        for m in pipe.generator.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average
        with torch.no_grad():
            for seed in range(4):
                pipe.generator.train()(torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(seed)))
        pipe.generator.eval()
    return pipe


@pytest.fixture
def pipe():
    return make_pipe()


def photo(width=90, height=50, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def arr(image):
    return np.asarray(image).astype(np.int16)


def test_pil_in_pil_out_at_the_input_size(pipe):
    out = pipe(photo(90, 50), generator=seeded(0)).images[0]
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (90, 50)
    assert pipe(photo(90, 50), generator=seeded(0), keep_size=False).images[0].size == (64, 64)
    batch = pipe([photo(90, 50), photo(33, 120, seed=1)], generator=seeded(0)).images
    assert [im.size for im in batch] == [(90, 50), (33, 120)]


def test_same_seed_same_output_different_seed_different_output(pipe):
    image = photo()
    a, b, c = (pipe(image, generator=seeded(s)).images[0] for s in (1, 1, 2))
    assert np.array_equal(arr(a), arr(b))
    assert np.abs(arr(a) - arr(c)).mean() > 1.0


def test_default_is_the_reference_test_behaviour(pipe):
    """Default sampling equals running the generator in train mode (dropout on, BatchNorm on the
    image's own statistics), as the reference's test script does without --eval."""
    image = photo()
    out = pipe(image, generator=seeded(5), keep_size=False).images[0]
    reference = copy.deepcopy(pipe.generator).train()
    torch.manual_seed(5)
    with torch.no_grad():
        expected = reference(pipe.image_processor.preprocess(image, *pipe.working_size))
    assert np.array_equal(arr(out), arr(pipe.image_processor.postprocess(expected)[0]))


def test_deterministic_is_eval_mode_and_ignores_seeds(pipe):
    image = photo()
    a, b = (pipe(image, generator=seeded(s), deterministic=True).images[0] for s in (1, 2))
    assert np.array_equal(arr(a), arr(b))
    with torch.no_grad():
        expected = pipe.generator.eval()(pipe.image_processor.preprocess(image, *pipe.working_size))
    out = pipe(image, deterministic=True, keep_size=False).images[0]
    assert np.array_equal(arr(out), arr(pipe.image_processor.postprocess(expected)[0]))
    sampled = pipe(image, generator=seeded(1)).images[0]
    assert np.abs(arr(a) - arr(sampled)).mean() > 1.0  # differs from the sampled output


def test_sampling_leaves_the_model_and_global_rng_untouched(pipe):
    state = {k: v.clone() for k, v in pipe.generator.state_dict().items()}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    pipe(photo(), generator=seeded(7))
    pipe([photo(), photo(seed=1)], generator=[seeded(s) for s in (1, 2)])
    assert torch.equal(torch.rand(3), expected_next)
    assert not pipe.generator.training and not any(m.training for m in pipe.generator.modules())
    for k, v in pipe.generator.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed"


def test_a_batch_gives_what_single_calls_give(pipe):
    images = [photo(seed=i) for i in range(3)]
    batch = pipe(images, generator=[seeded(s) for s in (4, 5, 6)]).images
    for image, seed, out in zip(images, [4, 5, 6], batch):
        assert np.array_equal(arr(out), arr(pipe(image, generator=seeded(seed)).images[0]))
    det = pipe(images, deterministic=True).images
    for image, out in zip(images, det):
        assert np.abs(arr(out) - arr(pipe(image, deterministic=True).images[0])).max() <= 1  # batched conv rounding


def test_a_generator_trained_on_batches_samples_with_its_running_statistics():
    """`sample_with_batch_statistics=False`: dropout on, BatchNorm in eval mode. Without dropout that is
    eval mode exactly; the same generator sampling with each image's own statistics gives another image."""
    image = photo()
    running = pipe_sampling_with(False)
    sampled = arr(running(image, generator=seeded(1)).images[0])
    assert np.abs(sampled - arr(running(image, generator=seeded(2)).images[0])).max() > 10  # dropout: seeds matter
    assert not any(m.training for m in running.generator.modules())  # left in eval mode
    running.generator.up_blocks[4].dropout.p = 0.0  # dropout off: eval mode exactly
    assert np.array_equal(arr(running(image, generator=seeded(1)).images[0]),
                          arr(running(image, deterministic=True).images[0]))
    running.generator.register_to_config(sample_with_batch_statistics=True)
    assert np.abs(arr(running(image, generator=seeded(1)).images[0]) - arr(running(image, deterministic=True).images[0])
                  ).mean() > 1.0


def test_without_dropout_or_batchnorm_seeds_do_not_matter():
    pipe = make_pipe(norm="instance", use_dropout=False)
    image = photo()
    sampled = arr(pipe(image, generator=seeded(1)).images[0])
    assert np.array_equal(sampled, arr(pipe(image, generator=seeded(2)).images[0]))
    assert np.array_equal(sampled, arr(pipe(image, deterministic=True).images[0]))


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "1", "YCbCr"])
def test_other_8bit_modes_are_converted(pipe, mode):
    image = photo().convert(mode)
    out = pipe(image, generator=seeded(0)).images[0]
    assert out.mode == "RGB" and out.size == image.size
    assert np.array_equal(arr(out), arr(pipe(image.convert("RGB"), generator=seeded(0)).images[0]))


def test_transparent_images_are_rejected(pipe):
    image = photo().convert("RGBA")
    image.putpixel((3, 3), (0, 0, 0, 10))
    with pytest.raises(ValueError, match="image 0: has transparent pixels"):
        pipe(image)
    paletted = photo().convert("P")
    paletted.info["transparency"] = paletted.getpixel((0, 0))
    with pytest.raises(ValueError, match="transparent pixels"):
        pipe([photo(), paletted])


@pytest.mark.parametrize("bad, error, message", [
    (np.zeros((8, 8, 4), np.uint8), ValueError, "image 0: an array must be .H, W, C. or .B, H, W, C. with C = 1 or 3"),
    (np.zeros((2, 8, 8, 3), np.int32), ValueError, "image 0: an array must be uint8, or float in .0, 1., got int32"),
    (np.full((8, 8, 3), 1.5, np.float32), ValueError, "image 0: float pixel values must be finite and in \\[0, 1\\]"),
    ([photo(), torch.zeros(3, 8, 8, dtype=torch.uint8)], ValueError,
     "image 1: a tensor must be .C, H, W. or .B, C, H, W. floats in .0, 1."),
    (torch.zeros(8, 8), ValueError, "a tensor must be"),
    ("cat.png", TypeError, "image 0: expected a PIL image, a numpy array or a torch tensor, got str"),
    (Image.new("I;16", (8, 8)), ValueError, "mode 'I;16' .16-bit or float. is not supported"),
    (Image.new("F", (8, 8)), ValueError, "mode 'F'"),
    (Image.new("RGB", (0, 5)), ValueError, "is empty"),
    ([], ValueError, "empty list"),
])
def test_bad_inputs_are_named(pipe, bad, error, message):
    with pytest.raises(error, match=message):
        pipe(bad)


def test_seed_list_must_match(pipe):  # the deprecated seed= alias; generator lists: test_diffusers_compat
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="got 3 seeds for 2 images"):
        pipe([photo(), photo()], seed=[1, 2, 3])


def test_single_channel_generators_take_and_give_grey_images():
    generator = UNetGenerator(in_channels=1, out_channels=1, num_downs=5, ngf=8)
    pipe = Pix2PixPipeline(generator=generator, image_size=[32, 64])
    out = pipe(photo(70, 30), generator=seeded(0)).images[0]
    assert out.mode == "L" and out.size == (70, 30)
    assert pipe(photo(70, 30), keep_size=False).images[0].size == (64, 32)


def test_invalid_pipeline_configs():
    g = UNetGenerator(num_downs=6, ngf=8)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*num_downs = 64"):
        Pix2PixPipeline(generator=g, image_size=100)
    with pytest.raises(ValueError, match="direction must be"):
        Pix2PixPipeline(generator=g, direction="A2B")
    with pytest.raises(ValueError, match="resample must be one of"):
        Pix2PixPipeline(generator=g, resample="box2")
    with pytest.raises(ValueError, match="1 or 3 out_channels, got 2"):
        Pix2PixPipeline(generator=UNetGenerator(out_channels=2, num_downs=6, ngf=8))


def test_save_and_from_pretrained_offline(pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_p2p", "Pix2PixPipeline"]  # diffusers' form for a custom class
    assert "import_module(\"p2p_models\").Pix2PixPipeline" in (tmp_path / "pipeline_p2p.py").read_text()
    assert "UNetGenerator" in (tmp_path / "generator" / "p2p_models.pix2pix.py").read_text()
    assert index["generator"] == ["p2p_models.pix2pix", "UNetGenerator"]
    assert (index["image_size"], index["direction"], index["resample"]) == (64, "BtoA", "bicubic")
    assert (tmp_path / "generator" / "diffusion_pytorch_model.safetensors").exists()
    assert "pipeline_tag: image-to-image" in (tmp_path / "README.md").read_text()

    loaded = Pix2PixPipeline.from_pretrained(tmp_path)
    assert not loaded.generator.training
    assert loaded.working_size == (64, 64) and loaded.config.direction == "BtoA"
    image = photo()
    assert np.array_equal(arr(loaded(image, generator=seeded(3)).images[0]),
                          arr(pipe(image, generator=seeded(3)).images[0]))
    out = loaded(image, deterministic=True).images[0]
    assert np.array_equal(arr(out), arr(pipe(image, deterministic=True).images[0]))


def test_rectangular_working_size_round_trips(tmp_path):
    pipe = Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=8), image_size=[32, 96])
    pipe.save_pretrained(tmp_path)
    loaded = Pix2PixPipeline.from_pretrained(tmp_path)
    assert loaded.working_size == (32, 96)
    assert loaded(photo(), keep_size=False).images[0].size == (96, 32)


def test_corrupt_pipeline_weights_name_the_file(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    weights = tmp_path / "generator" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="generator/diffusion_pytorch_model.safetensors is not a valid safetensors"):
        Pix2PixPipeline.from_pretrained(tmp_path)



def test_missing_or_empty_weights_are_named_at_load_not_at_the_first_call(tmp_path):
    Pix2PixPipeline.from_pretrained(ROOT / "pretrained" / "facades").save_pretrained(tmp_path)
    weights = tmp_path / "generator" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if k != "down_blocks.3.conv.weight"}, weights)
    with pytest.raises(ValueError, match=r"generator/diffusion_pytorch_model.safetensors: lacks 1 of UNetGenerator's "
                                         r"82 tensors, e.g. down_blocks.3.conv.weight"):
        Pix2PixPipeline.from_pretrained(tmp_path)
    save_file({}, weights)  # a valid file holding no tensors
    with pytest.raises(ValueError, match="lacks 82 of UNetGenerator's 82 tensors, e.g. down_blocks.0.conv.weight"):
        Pix2PixPipeline.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(OSError, match=r"/generator: no weights file \(diffusion_pytorch_model.safetensors\)"):
        Pix2PixPipeline.from_pretrained(tmp_path)


@pytest.mark.parametrize("file, key, value, message", [
    ("generator/config.json", "ngf", "64", "UNetGenerator config: ngf must be int, got '64' \\(str\\)"),
    ("generator/config.json", "use_dropout", "no", "UNetGenerator config: use_dropout must be bool, got 'no'"),
    ("generator/config.json", "num_downs", 8.0, "UNetGenerator config: num_downs must be int, got 8.0 \\(float\\)"),
    ("model_index.json", "image_size", "256", "Pix2PixPipeline config: image_size must be int \\| list\\[int\\]"),
])
def test_config_values_of_the_wrong_type_are_named_at_load(tmp_path, file, key, value, message):
    Pix2PixPipeline.from_pretrained(ROOT / "pretrained" / "facades").save_pretrained(tmp_path)
    config = json.loads((tmp_path / file).read_text())
    (tmp_path / file).write_text(json.dumps({**config, key: value}))
    with pytest.raises(ValueError, match=f"{file}: {message}"):
        Pix2PixPipeline.from_pretrained(tmp_path)


def test_an_hd_config_value_of_the_wrong_type_is_named_at_load(tmp_path):
    shutil.copytree(ROOT / "pretrained" / "camvid_hd", tmp_path / "hd")
    index = json.loads((tmp_path / "hd" / "model_index.json").read_text())
    (tmp_path / "hd" / "model_index.json").write_text(json.dumps({**index, "use_instance": "no"}))
    with pytest.raises(ValueError, match="model_index.json: Pix2PixHDPipeline config: use_instance must be bool"):
        P2PPipeline.from_pretrained(tmp_path / "hd")


def test_colorization_recombines_ab_with_the_full_resolution_L():
    from p2p_models.color import rgb_to_lab

    generator = UNetGenerator(in_channels=1, out_channels=2, num_downs=5, ngf=8)
    pipe = Pix2PixPipeline(generator=generator, image_size=32, color_space="lab")
    image = photo(90, 50)
    out = pipe(image, generator=seeded(0)).images[0]
    assert out.mode == "RGB" and out.size == (90, 50)
    lab_in = rgb_to_lab(torch.from_numpy(np.asarray(image, np.float32).transpose(2, 0, 1) / 255))
    lab_out = rgb_to_lab(torch.from_numpy(np.asarray(out, np.float32).transpose(2, 0, 1) / 255))
    # lightness is the input's own, pixel for pixel (up to 8-bit rounding and gamut clipping)
    assert (lab_out[0] - lab_in[0]).abs().median() < 1.0
    assert not np.array_equal(np.asarray(out), np.asarray(image.convert("L").convert("RGB")))  # it has colour
    assert pipe(image, keep_size=False).images[0].size == (32, 32)
    with pytest.raises(ValueError, match="color_space 'lab' needs a generator with 1 input and 2 output"):
        Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=8), image_size=32, color_space="lab")


def test_lab_conversions_have_finite_gradients_at_black_and_out_of_gamut():
    """Training backpropagates through Lab -> RGB (a projected D or the perceptual loss on colorization):
    black, saturated and out-of-gamut colours must give finite gradients, not where's 0 * inf."""
    from p2p_models.color import model_lab_to_rgb, rgb_to_lab

    L = torch.tensor([-1.0, -1.0, 0.0, 1.0, 0.2]).view(1, 1, 5, 1).requires_grad_()
    ab = torch.tensor([[0.0, 0.9, -1.0, 1.0, 0.0], [0.0, -0.9, 1.0, 1.0, 0.0]]).view(1, 2, 5, 1).requires_grad_()
    model_lab_to_rgb(L, ab).sum().backward()
    assert torch.isfinite(L.grad).all() and torch.isfinite(ab.grad).all()
    rgb = torch.tensor([0.0, 0.01, 0.5, 1.0, -0.1, 1.1]).view(1, 1, 6, 1).expand(1, 3, 6, 1).clone().requires_grad_()
    lab = rgb_to_lab(rgb)
    lab.sum().backward()
    assert torch.isfinite(lab).all() and torch.isfinite(rgb.grad).all()


@pytest.fixture(scope="session")
def bomb_png(tmp_path_factory) -> str:
    """A decompression bomb: a ~100 KB PNG of 10000x10000 pixels (100 MB once decoded)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("L", (10000, 10000)).save(path)
    assert path.stat().st_size < 200_000
    return str(path)


def test_max_pixels_refuses_large_inputs_before_decoding(pipe, bomb_png):
    with Image.open(bomb_png) as lazy:
        with pytest.raises(ValueError, match="10000x10000 is 100,000,000 pixels, over this pipeline's limit"):
            pipe(lazy)
        assert getattr(lazy, "_im", None) is None  # the pixels were never decoded
    pipe.max_pixels = 40 * 40
    with pytest.raises(ValueError, match="image 1: 90x50"):
        pipe([photo(30, 30), photo(90, 50)])
    assert pipe(photo(40, 40), generator=seeded(0)).images[0].size == (40, 40)
    pipe.max_pixels = None
    assert pipe(photo(90, 50), generator=seeded(0)).images[0].size == (90, 50)


def test_a_config_with_a_huge_working_size_is_refused_at_load(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "image_size": 8192}))
    with pytest.raises(ValueError, match="image_size \\[8192, 8192\\] is over the largest supported working size"):
        Pix2PixPipeline.from_pretrained(tmp_path)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "3", True])
def test_bad_seeds_get_a_clear_error(pipe, seed):
    with pytest.raises(ValueError, match="seed must be an integer in \\[0, 2\\*\\*64\\)"):
        seeded_generator(seed)
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="seed must be an integer"):
        pipe(photo(), seed=seed)  # the deprecated alias checks it the same way


def test_seeds_at_both_ends_of_the_range_work(pipe):
    sizes = {pipe(photo(), generator=seeded_generator(s)).images[0].size for s in (0, 2**64 - 1)}
    assert sizes == {(90, 50)}
    same = [pipe(photo(), generator=g).images[0].tobytes() for g in (seeded_generator(np.int64(7)), seeded(7))]
    assert same[0] == same[1]



def test_every_bit_of_a_seed_changes_the_noise():
    draws = [tuple(torch.rand(4, generator=seeded_generator(seed)).tolist()) for seed in
             [0, *(2**bit for bit in range(64)), 2**64 - 1]]
    assert len(set(draws)) == len(draws)
    for seed in (0, 12345, 2**32 - 1):  # below 2**32: what manual_seed gives
        assert torch.equal(torch.rand(4, generator=seeded_generator(seed)),
                           torch.rand(4, generator=torch.Generator().manual_seed(seed)))
    with pytest.raises(ValueError, match="seed must be an integer in \\[0, 2\\*\\*64\\)"):
        seeded_generator(2**64)


def test_nan_weights_give_an_error_not_a_black_image(pipe):
    with torch.no_grad():
        next(pipe.generator.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite values"):
        pipe(photo(), deterministic=True)


def test_empty_images_are_named(pipe):
    with pytest.raises(ValueError, match="image 0: is empty \\(0x5\\)"):
        pipe(Image.new("RGB", (0, 5)))


def test_seed_is_a_deprecated_shorthand_for_a_generator(pipe):
    image = photo()
    with pytest.warns(FutureWarning, match="seed= is deprecated") as caught:
        a = pipe(image, seed=3).images[0]
    assert caught[0].filename == __file__  # the caller's line
    assert np.array_equal(arr(a), arr(pipe(image, generator=torch.Generator().manual_seed(3)).images[0]))
