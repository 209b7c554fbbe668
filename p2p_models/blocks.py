"""Building blocks shared by the generators and discriminators: norm factory, init, dropout, residual block."""

import torch
from torch import nn

NORMS = ("batch", "instance", "none")


def norm_layer(norm: str, channels: int) -> nn.Module:
    """The reference's norm choices: affine BatchNorm with running stats, InstanceNorm without
    affine parameters or running stats, or nothing."""
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class OutputTanh(nn.Tanh):
    """The generators' final Tanh, computed in fp32 under autocast (in bf16 the image would be
    rounded to 8 significant bits before the losses see it)."""

    def forward(self, x):
        return torch.tanh(x.float() if torch.is_autocast_enabled(x.device.type) else x)


def conv_bias(norm: str) -> bool:
    """BatchNorm has its own shift, so convs before it carry no bias (as the reference). The
    reference also drops the bias for `none`, leaving a bias-free net; we keep it there."""
    return norm != "batch"


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """pix2pix's init: conv weights N(0, std), BatchNorm weights N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def dropout_mask(shape: torch.Size, p: float, generator: torch.Generator | None, device=None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A dropout mask of `shape` scaled by 1 / (1 - p): an element is kept where a uniform draw from
    `generator` (torch's global RNG if None), taken in the shape's row-major order, is below 1 - p.
    One vectorised `torch.rand`: faster on the CPU than `bernoulli_`, which draws element by element."""
    keep = 1 - p
    kept = torch.rand(shape, generator=generator, device=device) < keep
    return kept.to(dtype).mul_(1 / keep) if keep else kept.to(dtype)


class Dropout(nn.Dropout):
    """`nn.Dropout` whose mask (`dropout_mask`) comes from a `torch.Generator` passed to
    `forward(x, generator)`, else from torch's global RNG: (B, C, H, W) -> (B, C, H, W). With a
    generator nothing global is drawn from, so concurrent calls don't share noise. The mask is drawn
    in (B, C, H, W) order whatever `x`'s memory layout (packed convolutions return channels-last
    tensors), so one RNG state gives one mask on every backend."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * dropout_mask(x.shape, self.p, generator, x.device, x.dtype)


class ResnetBlock(nn.Module):
    """x + [ReflectionPad 1, Conv 3x3, norm, ReLU, ReflectionPad 1, Conv 3x3, norm](x):
    (B, C, H, W) -> (B, C, H, W). pix2pixHD's residual block."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3),
            norm_layer(norm, channels),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3),
            norm_layer(norm, channels),
        )

    def forward(self, x):
        return x + self.conv_block(x)
