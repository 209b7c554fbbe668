"""pix2pix's objective: a conditional GAN loss plus lambda * L1 for the generator."""

import torch
import torch.nn.functional as F
from torch import nn

GAN_MODES = ("vanilla", "lsgan", "hinge")


class GANLoss(nn.Module):
    """GAN loss on a discriminator's logit map.

    Modes: `vanilla` (BCE with logits, the paper's), `lsgan` (least squares, pix2pixHD's) and
    `hinge`. For `hinge`, the discriminator's terms are relu(1 -/+ x) and the generator's -x.

    Call: `loss(prediction (B, 1, H', W'), target_is_real, for_discriminator=True) -> scalar`.
    """

    def __init__(self, mode: str = "vanilla", real_label: float = 1.0, fake_label: float = 0.0):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"gan mode must be one of {GAN_MODES}, got {mode!r}")
        self.mode = mode
        self.real_label = real_label
        self.fake_label = fake_label

    def forward(self, prediction: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        prediction = prediction.float()  # losses in fp32, also under bf16 autocast
        if self.mode == "hinge":
            if not for_discriminator:
                if not target_is_real:
                    raise ValueError("the hinge generator loss is only defined for target_is_real=True")
                return -prediction.mean()
            sign = -1.0 if target_is_real else 1.0
            return F.relu(1.0 + sign * prediction).mean()
        target = torch.full_like(prediction, self.real_label if target_is_real else self.fake_label)
        if self.mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)


def summed_gan_loss(
    gan_loss: GANLoss, predictions: torch.Tensor | list[torch.Tensor], target_is_real: bool, for_discriminator=True
) -> torch.Tensor:
    """The GAN loss of one logit map, or the sum over a list of them (several discriminators, or
    the projected discriminator's scales)."""
    if isinstance(predictions, torch.Tensor):
        return gan_loss(predictions, target_is_real, for_discriminator)
    return sum(gan_loss(p, target_is_real, for_discriminator) for p in predictions)


def pix2pix_generator_loss(
    gan_loss: GANLoss, d_fake: torch.Tensor | list[torch.Tensor] | None, fake: torch.Tensor, target: torch.Tensor,
    lambda_l1: float = 100.0, l1_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G's objective: GAN(D(A, G(A)) -> real) + lambda_l1 * |G(A) - B|_1, in fp32.

    Returns the total and its parts (`g_gan`, `g_l1`, detached) for logging. `lambda_l1=0` gives the
    GAN-only objective; pass `d_fake=None` for the L1-only baseline, a list of logit maps for
    several discriminators (their terms summed). `l1_weights` (B, 1, H, W) weights the L1 per pixel
    (colorization's class rebalancing, `p2p_models.rebalancing`).
    """
    error = (fake.float() - target.float()).abs()
    l1 = (error * l1_weights).mean() if l1_weights is not None else error.mean()
    gan = summed_gan_loss(gan_loss, d_fake, True, for_discriminator=False) if d_fake is not None \
        else torch.zeros_like(l1)
    return gan + lambda_l1 * l1, {"g_gan": gan.detach(), "g_l1": l1.detach()}


def discriminator_loss(
    gan_loss: GANLoss, d_real: torch.Tensor | list[torch.Tensor], d_fake: torch.Tensor | list[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """D's objective: the average of the real and fake terms (the paper halves D's loss to slow it
    down relative to G). `d_fake` must come from a detached G output. Lists of logit maps (several
    discriminators) sum their terms."""
    real = summed_gan_loss(gan_loss, d_real, True)
    fake = summed_gan_loss(gan_loss, d_fake, False)
    return 0.5 * (real + fake), {"d_real": real.detach(), "d_fake": fake.detach()}


def multiscale_gan_loss(
    gan_loss: GANLoss, predictions: list[list[torch.Tensor]], target_is_real: bool, for_discriminator: bool = True
) -> torch.Tensor:
    """pix2pixHD: the GAN loss of every scale's logit map (its last feature), summed over scales."""
    return sum(gan_loss(scale[-1], target_is_real, for_discriminator) for scale in predictions)


def feature_matching_loss(
    fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]], lambda_feat: float = 10.0
) -> torch.Tensor:
    """pix2pixHD's discriminator feature matching: L1 between D's intermediate features of fake
    and real pairs (all layers but the logits), weighted 4 / (n_layers + 1) per layer and
    1 / num_d per scale, times `lambda_feat`. Real features are detached."""
    num_d = len(fake)
    loss = torch.zeros((), device=fake[0][0].device)
    for fake_scale, real_scale in zip(fake, real):
        layer_weight = 4.0 / (len(fake_scale) - 1)  # n_layers + 2 maps per scale, so n_layers + 1 = len - 1
        for f, r in zip(fake_scale[:-1], real_scale[:-1]):
            loss = loss + layer_weight / num_d * F.l1_loss(f.float(), r.detach().float())
    return loss * lambda_feat
