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


# pix2pixHD (NVIDIA/pix2pixHD): nested Sequentials named `model`, `model{n}_1/_2`, `scale{i}_layer{j}`.
def _hd_norm(c):
    return nn.InstanceNorm2d(c)


class RefResBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _hd_norm(dim), nn.ReLU(),
                                        nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _hd_norm(dim))

    def forward(self, x):
        return x + self.conv_block(x)


def ref_global_layers(in_ch, out_ch, ngf, n_down, n_blocks):
    m = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), _hd_norm(ngf), nn.ReLU()]
    for i in range(n_down):
        m += [nn.Conv2d(ngf * 2**i, ngf * 2 ** (i + 1), 3, 2, 1), _hd_norm(ngf * 2 ** (i + 1)), nn.ReLU()]
    m += [RefResBlock(ngf * 2**n_down) for _ in range(n_blocks)]
    for i in range(n_down):
        mult = 2 ** (n_down - i)
        m += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, 2, 1, output_padding=1), _hd_norm(ngf * mult // 2),
              nn.ReLU()]
    return m + [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh()]


class RefGlobal(nn.Module):
    def __init__(self, in_ch, out_ch, ngf, n_down, n_blocks):
        super().__init__()
        self.model = nn.Sequential(*ref_global_layers(in_ch, out_ch, ngf, n_down, n_blocks))

    def forward(self, x):
        return self.model(x)


class RefLocal(nn.Module):
    def __init__(self, in_ch, out_ch, ngf, n_down, n_blocks, n_local, n_blocks_local):
        super().__init__()
        self.n_local = n_local
        self.model = nn.Sequential(*ref_global_layers(in_ch, out_ch, ngf * 2**n_local, n_down, n_blocks)[:-3])
        for n in range(1, n_local + 1):
            w = ngf * 2 ** (n_local - n)
            down = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, w, 7), _hd_norm(w), nn.ReLU(),
                    nn.Conv2d(w, w * 2, 3, 2, 1), _hd_norm(w * 2), nn.ReLU()]
            up = [RefResBlock(w * 2) for _ in range(n_blocks_local)]
            up += [nn.ConvTranspose2d(w * 2, w, 3, 2, 1, output_padding=1), _hd_norm(w), nn.ReLU()]
            if n == n_local:
                up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh()]
            setattr(self, f"model{n}_1", nn.Sequential(*down))
            setattr(self, f"model{n}_2", nn.Sequential(*up))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x):
        pyramid = [x]
        for _ in range(self.n_local):
            pyramid.append(self.downsample(pyramid[-1]))
        out = self.model(pyramid[-1])
        for n in range(1, self.n_local + 1):
            out = getattr(self, f"model{n}_2")(getattr(self, f"model{n}_1")(pyramid[self.n_local - n]) + out)
        return out


class RefEncoder(nn.Module):
    def __init__(self, in_ch, out_ch, ngf, n_down):
        super().__init__()
        self.model = nn.Sequential(*ref_global_layers(in_ch, out_ch, ngf, n_down, 0))


class RefMultiscaleD(nn.Module):
    """getIntermFeat=True layout: `scale{i}_layer{j}`; scale num_D-1 sees the full resolution."""

    def __init__(self, in_ch, ndf, n_layers, num_d):
        super().__init__()
        self.num_d, self.n_layers = num_d, n_layers
        for i in range(num_d):
            seq = [[nn.Conv2d(in_ch, ndf, 4, 2, 2), nn.LeakyReLU(0.2)]]
            nf = ndf
            for n in range(1, n_layers):
                prev, nf = nf, min(nf * 2, 512)
                seq += [[nn.Conv2d(prev, nf, 4, 2, 2), _hd_norm(nf), nn.LeakyReLU(0.2)]]
            prev, nf = nf, min(nf * 2, 512)
            seq += [[nn.Conv2d(prev, nf, 4, 1, 2), _hd_norm(nf), nn.LeakyReLU(0.2)]]
            seq += [[nn.Conv2d(nf, 1, 4, 1, 2)]]
            for j, layer in enumerate(seq):
                setattr(self, f"scale{i}_layer{j}", nn.Sequential(*layer))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)

    def forward(self, x):
        result = []
        for i in range(self.num_d):
            feats = [x]
            for j in range(self.n_layers + 2):
                feats.append(getattr(self, f"scale{self.num_d - 1 - i}_layer{j}")(feats[-1]))
            result.append(feats[1:])
            if i != self.num_d - 1:
                x = self.downsample(x)
        return result
