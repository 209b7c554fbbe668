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


class Dropout(nn.Dropout):
    """`nn.Dropout` whose mask can come from a `torch.Generator` passed to `forward(x, generator)`:
    (B, C, H, W) -> (B, C, H, W). With a generator (in training mode) nothing global is drawn from,
    so concurrent calls don't share noise; the mask is drawn in (B, C, H, W) order whatever `x`'s memory
    layout (packed convolutions return channels-last tensors), with the ops of torch's CPU dropout, so a
    generator gives the mask the global RNG would in its state on a contiguous `x`. Without one it is
    `nn.Dropout` exactly (torch's global RNG), as in training."""

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None or not self.training or self.p == 0:
            return super().forward(x)
        keep = 1 - self.p
        mask = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(keep, generator=generator)
        return x * (mask.div_(keep) if keep else mask)


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
