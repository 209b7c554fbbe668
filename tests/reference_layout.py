"""Networks with the reference implementation's module layout (junyanz/pytorch-CycleGAN-and-pix2pix):
written here from its documented structure to produce state dicts with its key names, and
outputs to compare ours against. Not used by the library."""

import torch
from torch import nn


def _norm(norm, channels):
    return {"batch": lambda: nn.BatchNorm2d(channels), "instance": lambda: nn.InstanceNorm2d(channels),
            "none": nn.Identity}[norm]()


class RefSkipBlock(nn.Module):
    """One U-Net level: `model` is down, [sub-level], up; non-outermost levels return cat(x, model(x))."""

    def __init__(self, outer, inner, norm, in_ch=None, sub=None, outermost=False, innermost=False, dropout=False):
        super().__init__()
        bias = norm == "instance"  # the reference: a bias only before InstanceNorm
        in_ch = in_ch or outer
        down = nn.Conv2d(in_ch, inner, 4, 2, 1, bias=bias)
        if outermost:
            layers = [down, sub, nn.ReLU(), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1), nn.Tanh()]
        elif innermost:
            layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=bias),
                      _norm(norm, outer)]
        else:
            layers = [nn.LeakyReLU(0.2), down, _norm(norm, inner), sub, nn.ReLU(),
                      nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=bias), _norm(norm, outer)]
            layers += [nn.Dropout(0.5)] if dropout else []
        self.outermost = outermost
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class RefUnet(nn.Module):
    def __init__(self, in_ch, out_ch, num_downs, ngf, norm, dropout=True):
        super().__init__()
        block = RefSkipBlock(ngf * 8, ngf * 8, norm, innermost=True)
        for _ in range(num_downs - 5):
            block = RefSkipBlock(ngf * 8, ngf * 8, norm, sub=block, dropout=dropout)
        block = RefSkipBlock(ngf * 4, ngf * 8, norm, sub=block)
        block = RefSkipBlock(ngf * 2, ngf * 4, norm, sub=block)
        block = RefSkipBlock(ngf, ngf * 2, norm, sub=block)
        self.model = RefSkipBlock(out_ch, ngf, norm, in_ch=in_ch, sub=block, outermost=True)

    def forward(self, x):
        return self.model(x)


class RefNLayerD(nn.Module):
    def __init__(self, in_ch, ndf, n_layers, norm):
        super().__init__()
        bias = norm == "instance"
        seq = [nn.Conv2d(in_ch, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2 if n < n_layers else 1, 1, bias=bias),
                    _norm(norm, ndf * mult), nn.LeakyReLU(0.2)]
        seq += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


class RefPixelD(nn.Module):
    def __init__(self, in_ch, ndf, norm):
        super().__init__()
        bias = norm == "instance"
        self.net = nn.Sequential(nn.Conv2d(in_ch, ndf, 1), nn.LeakyReLU(0.2), nn.Conv2d(ndf, ndf * 2, 1, bias=bias),
                                 _norm(norm, ndf * 2), nn.LeakyReLU(0.2), nn.Conv2d(ndf * 2, 1, 1, bias=bias))

    def forward(self, x):
        return self.net(x)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Distinct random values in every parameter and BatchNorm buffer, so misplaced tensors show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model
