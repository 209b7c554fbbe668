"""p2p: pix2pix and pix2pixHD for the Hugging Face stack."""

from .diffaugment import DiffAugment
from .efficientnet import EfficientNetLite0
from .losses import GANLoss, discriminator_loss, feature_matching_loss, multiscale_gan_loss, pix2pix_generator_loss
from .perceptual import EfficientNetPerceptualLoss
from .pipelines import LabelMapProcessor, P2PImageProcessor, P2PPipeline, Pix2PixHDPipeline, Pix2PixPipeline
from .pix2pix import PatchDiscriminator, UNetGenerator
from .pix2pixhd import FeatureEncoder, GlobalGenerator, LocalEnhancer, MultiscaleDiscriminator
from .projected import ProjectedDiscriminator
from .style_bank import StyleBank
from .vgg import VGGLoss, load_vgg19

__all__ = [
    "DiffAugment",
    "EfficientNetLite0",
    "EfficientNetPerceptualLoss",
    "FeatureEncoder",
    "GANLoss",
    "GlobalGenerator",
    "LabelMapProcessor",
    "LocalEnhancer",
    "MultiscaleDiscriminator",
    "P2PImageProcessor",
    "P2PPipeline",
    "PatchDiscriminator",
    "Pix2PixHDPipeline",
    "Pix2PixPipeline",
    "ProjectedDiscriminator",
    "StyleBank",
    "UNetGenerator",
    "VGGLoss",
    "discriminator_loss",
    "feature_matching_loss",
    "load_vgg19",
    "multiscale_gan_loss",
    "pix2pix_generator_loss",
]
