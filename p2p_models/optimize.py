"""Inference-time rewrites that keep a model's function."""

import copy

import torch
from torch import nn

from .efficientnet import FrozenBatchNorm2d, SamePad
from .modes import samples_with_batch_statistics

PACKED_DTYPES = (torch.float32, torch.bfloat16)


def fold_batch_norms(model: nn.Module, batch_norms: bool = True) -> nn.Module:
    """A copy of `model` with every norm of fixed statistics that directly follows a conv (or
    transposed conv) in the same block folded into that conv's weights and bias; the norm becomes
    Identity. The norms: `FrozenBatchNorm2d` (the pretrained encoder's, fixed in every mode) and, if
    `batch_norms`, BatchNorm2d, which makes the copy valid only where BatchNorm uses its running
    statistics (eval mode, or sampling with them). Works on any module whose blocks hold the pair as
    `conv` + `norm` attributes or as neighbours in an `nn.Sequential`."""
    model = copy.deepcopy(model).eval()
    norms = (nn.BatchNorm2d, FrozenBatchNorm2d) if batch_norms else FrozenBatchNorm2d
    pairs = []
    for module in model.modules():
        children = module._modules
        if isinstance(children.get("conv"), (nn.Conv2d, nn.ConvTranspose2d)) and \
                isinstance(children.get("norm"), norms):
            pairs.append((module, "conv", "norm"))
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                if isinstance(module._modules[a], (nn.Conv2d, nn.ConvTranspose2d)) and \
                        isinstance(module._modules[b], norms):
                    pairs.append((module, a, b))
    with torch.no_grad():
        for parent, conv_name, norm_name in pairs:
            conv, bn = getattr(parent, conv_name), getattr(parent, norm_name)
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
            conv.weight.mul_(scale.view(shape))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
            conv.bias = nn.Parameter(bias * scale + shift)
            setattr(parent, norm_name, nn.Identity())
    return model


def same_pads_into_convs(model: nn.Module) -> nn.Module:
    """`model` (changed in place) with each `SamePad` of stride 1 and an odd kernel, which pads
    (k - 1) / 2 on every side whatever the input size, moved into the zero padding of the conv after
    it in an `nn.Sequential`: the same function without a padded copy of the activations per call."""
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                pad, conv = module._modules[a], module._modules[b]
                if isinstance(pad, SamePad) and isinstance(conv, nn.Conv2d) and pad.stride == 1 and \
                        pad.kernel_size % 2 and conv.padding == (0, 0) and conv.kernel_size == (pad.kernel_size,) * 2:
                    conv.padding = (pad.kernel_size // 2,) * 2
                    setattr(module, a, nn.Identity())
    return model


class PackedConv2d(nn.Module):
    """A Conv2d or ConvTranspose2d whose weight is reordered into oneDNN's blocked layout once per
    input shape (what inductor's freezing does), instead of on every call as plain eager does.
    Same function; CPU float32 or bfloat16 inputs of the weight's dtype without autograd only (others
    run the wrapped `conv`). Forward: (B, C_in, H, W) -> (B, C_out, H', W'), as the wrapped conv."""

    max_shapes = 2  # packed copies kept (one per recent input shape)

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d):
        super().__init__()
        self.conv = conv
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        output_padding = (list(conv.output_padding),) if self.transposed else ()
        self.args = (list(conv.padding), *output_padding, list(conv.stride), list(conv.dilation), conv.groups)
        self.packed: dict[tuple[int, ...], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype not in PACKED_DTYPES or x.dtype != self.conv.weight.dtype or \
                torch.is_grad_enabled():
            return self.conv(x)
        mkldnn = torch.ops.mkldnn
        shape = tuple(x.shape)
        weight = self.packed.get(shape)
        if weight is None:
            if len(self.packed) >= self.max_shapes:
                self.packed.clear()
            reorder = mkldnn._reorder_convolution_transpose_weight if self.transposed else \
                mkldnn._reorder_convolution_weight
            weight = self.packed[shape] = reorder(self.conv.weight.detach(), *self.args, list(shape))
        op = mkldnn._convolution_transpose_pointwise if self.transposed else mkldnn._convolution_pointwise
        return op(x, weight, self.conv.bias, *self.args, "none", [], "")


def packable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.padding_mode == "zeros" and \
        not isinstance(module.padding, str)


class CastCopy(nn.Module):
    """`model` (its weights in `dtype`) called with float32: the input cast to `dtype`, the output back
    to float32, other arguments (a dropout `generator`) passed on. (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.model(x.to(self.dtype), *args, **kwargs).float()


def fast_cpu_copy(model: nn.Module, deterministic: bool, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A copy of `model` for fast CPU inference: every conv a `PackedConv2d`, and, if
    `deterministic` (eval-mode use only) or the model samples with its running statistics
    (`modes.samples_with_batch_statistics`), BatchNorms folded into the convs (`fold_batch_norms`;
    the pretrained encoder's fixed ones always, and its stride-1 "SAME" pads moved into the convs).
    A sampling copy of a model that samples with batch statistics keeps its BatchNorms, so those work
    as before. A sampling copy draws the plain model's dropout masks (`blocks.Dropout` draws the same in
    any memory layout). With `dtype=torch.bfloat16` the copy's weights are bf16 (BatchNorm and
    InstanceNorm parameters and statistics stay float32) and it is called as the float32 model
    (`CastCopy`: float32 in and out); it draws the same dropout masks.
    Without oneDNN (`torch.backends.mkldnn`) the convs are left unpacked."""
    model = same_pads_into_convs(fold_batch_norms(model, deterministic or not samples_with_batch_statistics(model)))
    if torch.backends.mkldnn.is_available():
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if packable(child):
                    setattr(parent, name, PackedConv2d(child))
    if dtype == torch.float32:
        return model
    model.to(dtype)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            m.float()
    return CastCopy(model, dtype)
