"""`P2PImageProcessor`: the pipelines' image processor object, with diffusers' `VaeImageProcessor` interface."""

import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from p2p_models import (
    FeatureEncoder,
    GlobalGenerator,
    P2PImageProcessor,
    Pix2PixHDPipeline,
    Pix2PixPipeline,
    UNetGenerator,
)


def photo(width=40, height=30, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def test_each_pipeline_holds_one_built_from_its_config():
    pipe = Pix2PixPipeline(UNetGenerator(in_channels=1, num_downs=5, ngf=8), image_size=[32, 64], resample="lanczos")
    processor = pipe.image_processor
    assert isinstance(processor, VaeImageProcessor) and "image_processor" not in pipe.config
    assert (processor.config.vae_scale_factor, processor.config.resample) == (32, "lanczos")
    assert processor.config.do_convert_grayscale and processor.config.color_space == "rgb"
    lab = Pix2PixPipeline(UNetGenerator(in_channels=1, out_channels=2, num_downs=5, ngf=8), image_size=32,
                          color_space="lab")
    assert lab.image_processor.config.color_space == "lab" and not lab.image_processor.config.do_convert_grayscale
    hd = Pix2PixHDPipeline(GlobalGenerator(in_channels=4 + 1 + 3, ngf=8, n_downsampling=2, n_blocks=1),
                           FeatureEncoder(nef=8, n_downsampling=2), label_nc=4, image_size=[32, 32])
    assert hd.image_processor.config.vae_scale_factor == 4
    with pytest.raises(ValueError, match="resample must be one of"):
        P2PImageProcessor(resample="box")


def test_preprocess_takes_pil_numpy_and_torch_alike_and_postprocess_inverts_it():
    processor = P2PImageProcessor(vae_scale_factor=8)
    image = photo()
    as_array = np.asarray(image)
    as_tensor = torch.from_numpy(as_array).permute(2, 0, 1).float() / 255
    x = processor.preprocess(image)
    assert x.shape == (1, 3, 30, 40) and x.dtype == torch.float32 and x.is_contiguous()
    assert -1 <= x.min() and x.max() <= 1
    for other in (as_array, as_array[None], as_tensor, [as_tensor]):
        assert torch.equal(processor.preprocess(other), x)
    assert processor.preprocess([image, image], 16, 24).shape == (2, 3, 16, 24)
    assert np.array_equal(np.asarray(processor.postprocess(x)[0]), as_array)
    out = processor.postprocess(x, "np", sizes=[(20, 15)])
    assert out.shape == (1, 15, 20, 3) and out.dtype == np.float32
    assert processor.postprocess(x, "pt").shape == (1, 3, 30, 40)
    mixed = processor.postprocess(torch.cat([x, x]), "pt", sizes=[None, (20, 15)])
    assert [tuple(t.shape) for t in mixed] == [(3, 30, 40), (3, 15, 20)]  # different sizes: a list
    with pytest.raises(ValueError, match="output_type must be one of"):
        processor.postprocess(x, "latent")
    with pytest.raises(ValueError, match="over this pipeline's limit"):
        processor.preprocess(image, max_pixels=100)


def test_lab_recombines_the_inputs_lightness():
    processor = P2PImageProcessor(color_space="lab")
    image = photo(seed=1, mode="L")  # a grey photo: PIL's L is then Lab's lightness
    L = processor.preprocess(image)
    assert L.shape == (1, 1, 30, 40)
    ab = torch.zeros(1, 2, 15, 20)  # half size: upsampled to the input's L
    grey = processor.postprocess(ab, "pil", sizes=[image.size], inputs=[image])[0]
    assert grey.size == image.size
    assert np.abs(np.asarray(grey.convert("L"), np.float32) - np.asarray(image.convert("L"), np.float32)).mean() < 2


def test_the_pipelines_old_pre_and_postprocess_are_deprecated_aliases():
    pipe = Pix2PixPipeline(UNetGenerator(num_downs=5, ngf=8), image_size=32)
    image = photo()
    with pytest.warns(FutureWarning, match="image_processor.preprocess"):
        x = pipe.preprocess([image])
    assert torch.equal(x, pipe.image_processor.preprocess(image, 32, 32))
    with pytest.warns(FutureWarning, match="image_processor.postprocess"):
        out = pipe.postprocess(x, [image])
    assert out[0].size == image.size
