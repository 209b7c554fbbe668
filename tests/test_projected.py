"""The projected discriminator: per-scale logits, a frozen backbone and projections, conditioning,
and a save_pretrained / from_pretrained round trip."""

import torch

from p2p_models.efficientnet import pretrained_efficientnet_lite0
from p2p_models.projected import ProjectedDiscriminator


def test_per_scale_logits_and_only_the_small_discriminators_learn():
    torch.manual_seed(0)
    d = ProjectedDiscriminator(6, ndf=16, proj_channels=16).load_imagenet_backbone()
    torch.testing.assert_close(d.backbone.state_dict(), pretrained_efficientnet_lite0(include_top=False).state_dict())
    frozen = {k: v.clone() for k, v in d.state_dict().items() if k.startswith(("backbone", "ccm", "csm"))}
    logits = d(torch.randn(2, 6, 128, 96))
    assert [tuple(x.shape) for x in logits] == [(2, 1, 4, 3)] * 4
    d.requires_grad_(False).requires_grad_(True)  # as the training steps toggle D
    trainable = {n for n, p in d.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("discriminators.") for n in trainable)
    optimizer = torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(2, 6, 64, 64, requires_grad=True)
    sum(l.mean() for l in d(x)).backward()
    optimizer.step()
    assert x.grad.abs().sum() > 0  # G's gradient passes through the frozen backbone
    assert all(torch.equal(d.state_dict()[k], v) for k, v in frozen.items())


def test_the_condition_matters_and_colorization_pairs_work():
    torch.manual_seed(0)
    d = ProjectedDiscriminator(6, ndf=16, proj_channels=16).eval()
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    a = d(torch.cat([torch.zeros(1, 3, 64, 64), image], 1))
    b = d(torch.cat([torch.ones(1, 3, 64, 64), image], 1))
    assert all(not torch.allclose(x, y) for x, y in zip(a, b))
    lab = ProjectedDiscriminator(3, image_channels=2, ndf=16, proj_channels=16)
    assert len(lab(torch.rand(1, 3, 64, 64) * 2 - 1)) == 4


def test_round_trip_through_save_pretrained(tmp_path):
    torch.manual_seed(0)
    d = ProjectedDiscriminator(4, ndf=16, proj_channels=16).load_imagenet_backbone().eval()
    d.save_pretrained(tmp_path)
    loaded = ProjectedDiscriminator.from_pretrained(tmp_path).eval()
    x = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(d(x), loaded(x)))
    assert not any(p.requires_grad for n, p in loaded.named_parameters() if n.startswith("backbone"))
