import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from p2p_models import PatchDiscriminator, UNetGenerator


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_reference():
    # Counted from the reference networks.py for the same configs.
    assert n_params(UNetGenerator(in_channels=3, out_channels=3, num_downs=8, ngf=64, norm="batch")) == 54_413_955
    assert n_params(PatchDiscriminator(in_channels=6, ndf=64, n_layers=3, norm="batch")) == 2_768_705


@pytest.mark.parametrize(
    "num_downs, size", [(7, (128, 128)), (8, (256, 256)), (7, (128, 384)), (8, (512, 256)), (5, (96, 160))]
)
def test_unet_output_shapes(num_downs, size):
    g = UNetGenerator(in_channels=1, out_channels=2, num_downs=num_downs, ngf=8).eval()
    x = torch.randn(2, 1, *size)
    y = g(x)
    assert y.shape == (2, 2, *size)
    assert y.abs().max() <= 1.0  # Tanh


def test_unet_rejects_sizes_not_divisible_by_its_depth():
    g = UNetGenerator(num_downs=7, ngf=8)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*num_downs = 128"):
        g(torch.randn(1, 3, 128, 200))


def test_unet_layer_structure_as_the_reference():
    g = UNetGenerator(num_downs=8, ngf=8, norm="batch")
    downs, ups = g.down_blocks, g.up_blocks
    assert isinstance(downs[0].act, nn.Identity) and isinstance(downs[0].norm, nn.Identity)
    assert all(isinstance(b.act, nn.LeakyReLU) and b.act.negative_slope == 0.2 for b in downs[1:])
    assert isinstance(downs[7].norm, nn.Identity)  # innermost: no norm
    assert all(isinstance(b.norm, nn.BatchNorm2d) for b in downs[1:7])
    assert all(isinstance(b.act, nn.ReLU) for b in ups)
    assert isinstance(ups[0].norm, nn.Tanh) and ups[0].conv.bias is not None
    assert all(b.conv.bias is None for b in list(downs) + list(ups[1:]))  # BatchNorm: no conv bias
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
    # dropout in the three 8ngf decoder levels above the innermost (unet_256), 2 for unet_128
    assert [k for k, b in enumerate(ups) if isinstance(b.dropout, nn.Dropout)] == [4, 5, 6]
    assert sum(isinstance(m, nn.Dropout) for m in UNetGenerator(num_downs=7, ngf=8).modules()) == 2
    assert not any(isinstance(m, nn.Dropout) for m in UNetGenerator(ngf=8, use_dropout=False).modules())


def test_skip_connections_carry_every_encoder_level():
    """Zeroing encoder level k's contribution to the skip must change the output for every k."""
    g = UNetGenerator(num_downs=5, ngf=4, norm="none", use_dropout=False).eval()
    x = torch.randn(1, 3, 32, 32)
    base = g(x)
    for k in range(4):  # levels with a skip into the decoder
        w = g.up_blocks[k].conv.weight  # (in, out, 4, 4): input channels are [skip_k, h]
        skip_channels = g.down_blocks[k].conv.out_channels
        with torch.no_grad():
            saved = w[:skip_channels].clone()
            w[:skip_channels] = 0
            changed = not torch.allclose(g(x), base)
            w[:skip_channels] = saved
        assert changed, f"level {k} skip has no effect"


def test_default_init_is_normal_0_02():
    torch.manual_seed(0)
    g = UNetGenerator(ngf=32)
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert abs(w.mean().item()) < 1e-3 and abs(w.std().item() - 0.02) < 1e-3
    bn = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1.0) < 0.01


def test_norm_choices():
    assert any(isinstance(m, nn.InstanceNorm2d) for m in UNetGenerator(ngf=8, norm="instance").modules())
    plain = UNetGenerator(ngf=8, norm="none")
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in plain.modules())
    with pytest.raises(ValueError, match="norm must be one of"):
        UNetGenerator(norm="group")
    with pytest.raises(ValueError, match="norm must be one of"):
        PatchDiscriminator(norm="layer")


def _measured_receptive_field(d: PatchDiscriminator, size: int) -> int:
    """Side of the input region that influences the centre logit, from gradients."""
    d = d.eval()
    x = torch.randn(1, d.config.in_channels, size, size, requires_grad=True)
    y = d(x)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = (x.grad.abs().sum(dim=(0, 1, 3)) > 0).nonzero()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("n_layers, rf", [(1, 16), (3, 70), (5, 286)])
def test_patchgan_receptive_fields(n_layers, rf):
    d = PatchDiscriminator(in_channels=6, ndf=4, n_layers=n_layers)
    assert d.receptive_field == rf
    assert _measured_receptive_field(d, 400) == rf


def test_patchgan_output_maps():
    x = torch.randn(2, 6, 256, 256)
    assert PatchDiscriminator(ndf=8).eval()(x).shape == (2, 1, 30, 30)  # 70x70 PatchGAN at 256
    pixel = PatchDiscriminator(ndf=8, pixel=True).eval()
    assert pixel(x).shape == (2, 1, 256, 256)
    assert pixel.receptive_field == 1 and _measured_receptive_field(pixel, 32) == 1
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        PatchDiscriminator(n_layers=0)


@pytest.mark.parametrize("cls, kwargs, shape", [
    (UNetGenerator, {"ngf": 8, "norm": "batch"}, (1, 3, 256, 256)),
    (PatchDiscriminator, {"ndf": 8, "n_layers": 2, "norm": "instance"}, (1, 6, 64, 64)),
])
def test_save_load_round_trip_is_bit_exact(tmp_path, cls, kwargs, shape):
    model = cls(**kwargs)
    with torch.no_grad():  # non-trivial BatchNorm statistics too
        for name, b in model.named_buffers():
            if "running" in name:
                b.uniform_(0.5, 1.5)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = cls.from_pretrained(tmp_path)
    assert not loaded.training  # from_pretrained returns eval mode
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(model.config)
    saved = load_file(tmp_path / "diffusion_pytorch_model.safetensors")
    for name, t in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
        assert torch.equal(saved[name], t), name
    x = torch.randn(*shape)
    assert torch.equal(loaded(x), model.eval()(x))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights_give_a_clear_error(tmp_path, damage):
    UNetGenerator(num_downs=5, ngf=4).save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00" * 8 + data[8:], "empty": b""}[damage])
    with pytest.raises(ValueError, match="is not a valid safetensors file") as info:
        UNetGenerator.from_pretrained(tmp_path)
    assert str(weights) in str(info.value)


def test_folding_batchnorm_keeps_the_deterministic_output():
    from p2p_models.optimize import fold_batch_norms

    torch.manual_seed(0)
    for model, x in ((UNetGenerator(num_downs=6, ngf=8), torch.randn(2, 3, 64, 64)),
                     (PatchDiscriminator(ndf=8), torch.randn(2, 6, 64, 64))):
        with torch.no_grad():
            for name, b in model.named_buffers():
                if "running" in name:
                    b.uniform_(0.5, 1.5)
        model.eval()
        folded = fold_batch_norms(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
        with torch.no_grad():
            torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
