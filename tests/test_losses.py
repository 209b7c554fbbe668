import math

import pytest
import torch

from p2p_models import GANLoss, discriminator_loss, pix2pix_generator_loss

X = torch.tensor([[[[-2.0, 0.5], [1.0, 3.0]]]])


def mean(values):
    return sum(values) / len(values)


def test_vanilla_is_bce_with_logits():
    xs = X.flatten().tolist()
    real = mean([-math.log(1 / (1 + math.exp(-x))) for x in xs])
    fake = mean([-math.log(1 - 1 / (1 + math.exp(-x))) for x in xs])
    loss = GANLoss("vanilla")
    assert loss(X, True).item() == pytest.approx(real, rel=1e-6)
    assert loss(X, False).item() == pytest.approx(fake, rel=1e-6)
    assert loss(X, True, for_discriminator=False).item() == pytest.approx(real, rel=1e-6)


def test_lsgan_is_least_squares():
    xs = X.flatten().tolist()
    loss = GANLoss("lsgan")
    assert loss(X, True).item() == pytest.approx(mean([(x - 1) ** 2 for x in xs]))
    assert loss(X, False).item() == pytest.approx(mean([x**2 for x in xs]))


def test_hinge():
    xs = X.flatten().tolist()
    loss = GANLoss("hinge")
    assert loss(X, True).item() == pytest.approx(mean([max(0, 1 - x) for x in xs]))
    assert loss(X, False).item() == pytest.approx(mean([max(0, 1 + x) for x in xs]))
    assert loss(X, True, for_discriminator=False).item() == pytest.approx(-mean(xs))
    with pytest.raises(ValueError, match="target_is_real=True"):
        loss(X, False, for_discriminator=False)


def test_unknown_mode():
    with pytest.raises(ValueError, match="gan mode must be one of"):
        GANLoss("wgan")


def test_pix2pix_objective():
    gan = GANLoss("vanilla")
    fake, target = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    total, parts = pix2pix_generator_loss(gan, X, fake, target, lambda_l1=100.0)
    assert parts["g_l1"].item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(gan(X, True).item() + 100 * 0.5, rel=1e-6)
    l1_only, parts = pix2pix_generator_loss(gan, None, fake, target, lambda_l1=100.0)
    assert l1_only.item() == pytest.approx(50.0) and parts["g_gan"].item() == 0.0


def test_discriminator_loss_averages_real_and_fake():
    gan = GANLoss("lsgan")
    d_real, d_fake = torch.ones(1, 1, 2, 2) * 0.8, torch.ones(1, 1, 2, 2) * 0.3
    total, parts = discriminator_loss(gan, d_real, d_fake)
    assert parts["d_real"].item() == pytest.approx(0.04)
    assert parts["d_fake"].item() == pytest.approx(0.09)
    assert total.item() == pytest.approx(0.5 * (0.04 + 0.09))
