import pytest
import torch

from p2p_models import GANLoss, pix2pix_generator_loss
from p2p_models.rebalancing import ColorRebalancing


def photos_ab(red_share=0.1):
    """Targets (4, 2, 20, 20) in model-space ab: mostly near-grey, a `red_share` of saturated red."""
    ab = torch.randn(4, 2, 20, 20, generator=torch.Generator().manual_seed(0)) * 0.02
    ab[:, :, : int(20 * red_share)] = torch.tensor([0.6, 0.4])[:, None, None]  # a = 66, b = 44
    return ab


def test_rare_colours_weigh_more_and_the_prior_average_is_one():
    ab = photos_ab()
    rebalancing = ColorRebalancing.from_ab(ab)
    w = rebalancing.weights(ab)
    assert w.shape == (4, 1, 20, 20)
    red, grey = w[:, :, 0, 0], w[:, :, -1, -1]
    assert (red > 1.3 * grey).all()
    unmixed = ColorRebalancing.from_ab(ab, mix=0.0).weights(ab)  # w ~ 1 / p~ alone
    assert (unmixed[:, :, 0, 0] > 2 * unmixed[:, :, -1, -1]).all()
    never_seen = rebalancing.weights(torch.tensor([-0.9, 0.9])[None, :, None, None])  # saturated green
    assert never_seen.item() == rebalancing.bin_weights.max()
    # E_p~[w] = 1 over the smoothed prior; over the raw pixels it stays close to 1
    assert 0.8 < w.mean().item() < 1.2


def test_an_all_uniform_mix_weighs_every_pixel_the_same():
    ab = photos_ab()
    w = ColorRebalancing.from_ab(ab, mix=1.0).weights(ab)
    assert torch.allclose(w, torch.ones_like(w))


def test_the_weights_scale_each_pixel_of_the_l1():
    target = photos_ab()
    fake = target + 0.1
    weights = ColorRebalancing.from_ab(target).weights(target)
    _, plain = pix2pix_generator_loss(GANLoss(), None, fake, target, lambda_l1=1.0)
    _, weighted = pix2pix_generator_loss(GANLoss(), None, fake, target, lambda_l1=1.0, l1_weights=weights)
    assert plain["g_l1"].item() == pytest.approx(0.1, rel=1e-5)
    assert weighted["g_l1"].item() == pytest.approx(0.1 * weights.mean().item(), rel=1e-5)

