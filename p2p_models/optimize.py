"""Inference-time rewrites that keep a model's function."""

import copy

import torch
from torch import nn


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """A copy of `model` with every BatchNorm that directly follows a conv (or transposed conv)
    in the same block folded into that conv's weights and bias; the BatchNorm becomes Identity.
    Valid for deterministic (eval-mode) inference only: the folded model always uses the running
    statistics. Works on any module whose blocks hold the pair as `conv` + `norm` attributes or as
    neighbours in an `nn.Sequential`."""
    model = copy.deepcopy(model).eval()
    pairs = []
    for module in model.modules():
        children = module._modules
        if isinstance(children.get("conv"), (nn.Conv2d, nn.ConvTranspose2d)) and \
                isinstance(children.get("norm"), nn.BatchNorm2d):
            pairs.append((module, "conv", "norm"))
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                if isinstance(module._modules[a], (nn.Conv2d, nn.ConvTranspose2d)) and \
                        isinstance(module._modules[b], nn.BatchNorm2d):
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
