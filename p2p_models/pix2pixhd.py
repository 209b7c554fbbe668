"""pix2pixHD networks (Wang et al., CVPR 2018): the global generator G1, the local enhancer G2,
the multiscale discriminator and the instance-wise feature encoder.

Layer order, kernel sizes and norms follow the reference implementation (NVIDIA/pix2pixHD,
`models/networks.py`); every conv carries a bias there and here. Norm defaults to InstanceNorm
without affine parameters, as the reference's `--norm instance`.
"""

import torch
from diffusers import ModelMixin  # noqa: F401  diffusers' loader finds a component's base class in its module
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from .blocks import NORMS, OutputTanh, ResnetBlock, init_weights, norm_layer
from .labels import instance_average
from .modeling_utils import P2PModelMixin


UPSAMPLINGS = ("transposed", "nearest")


def _check_options(norm, upsampling="transposed"):
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {upsampling!r}")


def _conv7(in_channels, out_channels):
    return [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, out_channels, kernel_size=7)]


def _down(in_channels, out_channels, norm):
    return [nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
            norm_layer(norm, out_channels), nn.ReLU()]


def _up(in_channels, out_channels, norm, upsampling):
    """x2: the reference's 3x3 stride-2 transposed conv, or `nearest`: nearest-neighbour x2 then a 3x3 conv
    (resize-convolution, Odena et al. 2016: every output pixel gets the same number of taps, so no
    checkerboard)."""
    if upsampling == "transposed":
        up = [nn.ConvTranspose2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, output_padding=1)]
    else:
        up = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_channels, out_channels, 3, padding=1)]
    return [*up, norm_layer(norm, out_channels), nn.ReLU()]


def _encoder_decoder(in_channels, out_channels, ngf, n_downsampling, n_blocks, norm,
                     upsampling="transposed") -> list[nn.Module]:
    """c7s1-ngf, n stride-2 downsamplings, residual blocks, n x2 upsamplings, c7s1-out, Tanh."""
    layers = [*_conv7(in_channels, ngf), norm_layer(norm, ngf), nn.ReLU()]
    for i in range(n_downsampling):
        layers += _down(ngf * 2**i, ngf * 2 ** (i + 1), norm)
    layers += [ResnetBlock(ngf * 2**n_downsampling, norm) for _ in range(n_blocks)]
    for i in range(n_downsampling, 0, -1):
        layers += _up(ngf * 2**i, ngf * 2 ** (i - 1), norm, upsampling)
    return layers + [*_conv7(ngf, out_channels), OutputTanh()]


class EncoderDecoderSizes:
    """The input sizes an encoder-decoder takes, from its `downsampling_factor` (set by each model):
    multiples of the factor, at least two factors (the innermost reflection pads need 2 pixels)."""

    downsampling_factor: int

    @property
    def min_size(self) -> int:
        return 2 * self.downsampling_factor


class GlobalGenerator(EncoderDecoderSizes, P2PModelMixin, ConfigMixin):
    """G1: (B, in_channels, H, W) -> (B, out_channels, H, W) in [-1, 1]; H and W divisible by
    2**n_downsampling.

    Args: in_channels (label_nc [+1 boundary map] [+feat_num]), out_channels, ngf (64),
    n_downsampling (4), n_blocks (9 residual blocks), norm (`instance` | `batch` | `none`),
    upsampling (`transposed`: the reference's; `nearest`: resize-convolution, no checkerboard).
    """

    @register_to_config
    def __init__(self, in_channels: int = 36, out_channels: int = 3, ngf: int = 64, n_downsampling: int = 4,
                 n_blocks: int = 9, norm: str = "instance", upsampling: str = "transposed"):
        super().__init__()
        _check_options(norm, upsampling)
        self.layers = nn.Sequential(*_encoder_decoder(in_channels, out_channels, ngf, n_downsampling, n_blocks, norm,
                                                      upsampling))
        init_weights(self)

    @property
    def downsampling_factor(self) -> int:
        return 2**self.config.n_downsampling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LocalEnhancer(EncoderDecoderSizes, P2PModelMixin, ConfigMixin):
    """G2 = G1 (its output layers dropped) run on the input downsampled 2**n_local_enhancers times,
    plus one enhancer per factor 2: a front-end at that resolution whose features are summed
    element-wise with the coarser stage's last feature map, then residual blocks and upsampling.
    (B, in_channels, H, W) -> (B, out_channels, H, W).

    Args: in_channels, out_channels, ngf (32: the enhancer's width; G1 inside has
    ngf * 2**n_local_enhancers), n_downsample_global (4), n_blocks_global (9),
    n_local_enhancers (1 = 2x, 2 = 4x), n_blocks_local (3), norm, upsampling (as G1's, for G1 and the enhancers).
    `LocalEnhancer.from_global(g1)` builds one around a trained G1 (coarse-to-fine training).
    """

    @register_to_config
    def __init__(self, in_channels: int = 36, out_channels: int = 3, ngf: int = 32, n_downsample_global: int = 4,
                 n_blocks_global: int = 9, n_local_enhancers: int = 1, n_blocks_local: int = 3,
                 norm: str = "instance", upsampling: str = "transposed"):
        super().__init__()
        _check_options(norm, upsampling)
        g1 = _encoder_decoder(in_channels, out_channels, ngf * 2**n_local_enhancers, n_downsample_global,
                              n_blocks_global, norm, upsampling)
        self.global_layers = nn.Sequential(*g1[:-3])  # without G1's c7s1 output layer and Tanh
        self.enhancers = nn.ModuleList()
        for n in range(1, n_local_enhancers + 1):
            width = ngf * 2 ** (n_local_enhancers - n)
            enhancer = nn.Module()
            enhancer.downsample = nn.Sequential(*_conv7(in_channels, width), norm_layer(norm, width), nn.ReLU(),
                                                *_down(width, width * 2, norm))
            up = [ResnetBlock(width * 2, norm) for _ in range(n_blocks_local)] + _up(width * 2, width, norm, upsampling)
            if n == n_local_enhancers:
                up += [*_conv7(ngf, out_channels), OutputTanh()]
            enhancer.upsample = nn.Sequential(*up)
            self.enhancers.append(enhancer)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        init_weights(self)

    @classmethod
    def from_global(cls, global_generator: GlobalGenerator, n_local_enhancers: int = 1, n_blocks_local: int = 3):
        """A LocalEnhancer whose G1 part holds `global_generator`'s weights (its width must be
        ngf * 2**n_local_enhancers)."""
        c = global_generator.config
        if c.ngf % 2**n_local_enhancers:
            raise ValueError(f"G1's ngf {c.ngf} is not divisible by 2**n_local_enhancers")
        model = cls(c.in_channels, c.out_channels, c.ngf // 2**n_local_enhancers, c.n_downsampling, c.n_blocks,
                    n_local_enhancers, n_blocks_local, c.norm, c.upsampling)
        model.load_global(global_generator)
        return model

    def load_global(self, global_generator: GlobalGenerator) -> None:
        """Copy a trained G1's weights (all but its output layer) into this model's G1 part."""
        if global_generator.config.upsampling != self.config.upsampling:
            raise ValueError(f"G1 upsamples with {global_generator.config.upsampling!r} but this LocalEnhancer with "
                             f"{self.config.upsampling!r}: build it with the same `upsampling`")
        state = {k: v for k, v in global_generator.layers.state_dict().items()
                 if int(k.split(".")[0]) < len(self.global_layers)}
        self.global_layers.load_state_dict(state)

    @property
    def downsampling_factor(self) -> int:
        """G1's factor on the input downsampled 2**n_local_enhancers times."""
        return 2 ** (self.config.n_downsample_global + self.config.n_local_enhancers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [x]
        for _ in self.enhancers:
            pyramid.append(self.pool(pyramid[-1]))
        h = self.global_layers(pyramid[-1])
        for n, enhancer in enumerate(self.enhancers):
            h = enhancer.upsample(enhancer.downsample(pyramid[-2 - n]) + h)
        return h


class NLayerDiscriminator(nn.Module):
    """pix2pixHD's PatchGAN (4x4 convs, padding 2, biases everywhere): (B, C, H, W) -> a list of
    the n_layers + 2 intermediate feature maps, the last being the (B, 1, H', W') logit map."""

    def __init__(self, in_channels: int, ndf: int, n_layers: int, norm: str):
        super().__init__()
        self.layers = nn.ModuleList([nn.Sequential(nn.Conv2d(in_channels, ndf, 4, stride=2, padding=2),
                                                   nn.LeakyReLU(0.2))])
        width = ndf
        for n in range(1, n_layers + 1):
            out = min(width * 2, 512)
            self.layers.append(nn.Sequential(nn.Conv2d(width, out, 4, stride=2 if n < n_layers else 1, padding=2),
                                             norm_layer(norm, out), nn.LeakyReLU(0.2)))
            width = out
        self.layers.append(nn.Sequential(nn.Conv2d(width, 1, 4, stride=1, padding=2)))

    def forward(self, x):
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(P2PModelMixin, ConfigMixin):
    """`num_d` PatchGANs; discriminator i sees the input average-pooled i times (3x3, stride 2,
    `count_include_pad=False`). Forward: (B, in_channels, H, W) -> [scale][layer] feature maps
    (scale 0 = full resolution; each scale's last map is its logits).

    Args: in_channels (label channels + image channels), ndf (64), n_layers (3), num_d (3, as the
    paper and the reference's scripts; the reference's code default is 2), norm.
    """

    @register_to_config
    def __init__(self, in_channels: int = 39, ndf: int = 64, n_layers: int = 3, num_d: int = 3,
                 norm: str = "instance"):
        super().__init__()
        _check_options(norm)
        self.discriminators = nn.ModuleList(NLayerDiscriminator(in_channels, ndf, n_layers, norm)
                                            for _ in range(num_d))
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        results = []
        for i, d in enumerate(self.discriminators):
            if i:
                x = self.pool(x)
            results.append(d(x))
        return results


class FeatureEncoder(EncoderDecoderSizes, P2PModelMixin, ConfigMixin):
    """E: a real image -> a `feat_num`-channel feature map, averaged within each instance.
    Forward: image (B, in_channels, H, W), instances (B, 1, H, W) ids -> (B, feat_num, H, W); without
    `instances`, the features per pixel (what the backends run).

    Args: in_channels (3), feat_num (3), nef (16), n_downsampling (4), norm.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, feat_num: int = 3, nef: int = 16, n_downsampling: int = 4,
                 norm: str = "instance"):
        super().__init__()
        _check_options(norm)
        self.layers = nn.Sequential(*_encoder_decoder(in_channels, feat_num, nef, n_downsampling, 0, norm))
        init_weights(self)

    @property
    def downsampling_factor(self) -> int:
        return 2**self.config.n_downsampling

    def forward(self, image: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        features = self.layers(image)
        return features if instances is None else instance_average(features, instances)
