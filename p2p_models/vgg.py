"""VGG19 features for pix2pixHD's perceptual loss. The network is defined here; ImageNet weights
come from the user (no weights are bundled or downloaded implicitly)."""

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file
from torch import nn

# conv widths, "M" = 2x2 max-pool; indices then match torchvision's / timm's `features.N`
VGG19_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
SLICES = (2, 7, 12, 21, 30)  # ends of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
NO_WEIGHTS = (
    "the VGG perceptual loss needs ImageNet VGG19 weights: pass a safetensors file or Hub repo holding a "
    "torchvision-layout or timm `vgg19` state dict (keys `features.N.weight/bias`), e.g. --vgg_weights "
    "vgg19.safetensors, or turn the loss off with --no_vgg_loss. Random VGG weights are never used."
)


class VGG19Features(nn.Module):
    """VGG19's convolutional part up to relu5_1: (B, 3, H, W) -> the 5 relu_1 feature maps."""

    def __init__(self):
        super().__init__()
        layers, width = [], 3
        for v in VGG19_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(width, v, 3, padding=1), nn.ReLU()]
                width = v
        self.features = nn.Sequential(*layers[: SLICES[-1]])

    def forward(self, x):
        outputs, start = [], 0
        for end in SLICES:
            x = self.features[start:end](x)
            outputs.append(x)
            start = end
        return outputs


def load_vgg19(source: str | os.PathLike | None) -> VGG19Features:
    """VGG19Features with ImageNet weights from a safetensors file or a Hub repo id (its
    `model.safetensors`). Accepts torchvision and timm key layouts (`features.N.*`, optionally
    prefixed `module.`/`model.`); the classifier is ignored."""
    if source is None:
        raise ValueError(NO_WEIGHTS)
    path = Path(source)
    if not path.is_file():
        try:
            path = Path(hf_hub_download(str(source), "model.safetensors"))
        except Exception as e:
            raise ValueError(f"VGG19 weights {source!r}: not a file and not loadable from the Hub ({e}). {NO_WEIGHTS}")
    state = load_file(path)
    model = VGG19Features()
    wanted = model.state_dict()
    found = {}
    for key, value in state.items():
        key = key.removeprefix("module.").removeprefix("model.")
        if key in wanted:
            found[key] = value
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ValueError(f"{path}: not a VGG19 state dict, missing {missing[:4]}... {NO_WEIGHTS}")
    model.load_state_dict(found)
    return model.eval().requires_grad_(False)


class VGGLoss(nn.Module):
    """pix2pixHD's perceptual loss: sum over relu1_1..relu5_1 of weight * L1(VGG(x), VGG(y)), with
    weights 1/32, 1/16, 1/8, 1/4, 1. As in the reference, images go in as they are ([-1, 1])."""

    def __init__(self, vgg: VGG19Features):
        super().__init__()
        self.vgg = vgg.eval().requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.vgg(x), self.vgg(y)
        return sum(w * F.l1_loss(a, b.detach()) for w, a, b in zip(WEIGHTS, fx, fy))
