"""p2p: pix2pix and pix2pixHD for the Hugging Face stack."""

from .losses import GANLoss, discriminator_loss, pix2pix_generator_loss
from .pipelines import Pix2PixPipeline
from .pix2pix import PatchDiscriminator, UNetGenerator

__all__ = [
    "GANLoss",
    "PatchDiscriminator",
    "Pix2PixPipeline",
    "UNetGenerator",
    "discriminator_loss",
    "pix2pix_generator_loss",
]
