"""Inference pipelines (diffusers `DiffusionPipeline`s): one file per pipeline, the image and
label-map processing they share, and the Hub / model-card code."""

from ..backends import BACKENDS
from ..modes import eval_mode, sampling_mode
from .image_processor import HIGH_BIT_MODES, MAX_PIXELS, P2PImageProcessor, check_image
from .label_processor import ID_MODES, LabelMapProcessor
from .pipeline_pix2pix import Pix2PixPipeline
from .pipeline_pix2pixhd import Pix2PixHDPipeline
from .pipeline_utils import MAX_SEED, P2PPipeline, seeded_generator, size_rule

__all__ = [
    "BACKENDS",
    "HIGH_BIT_MODES",
    "ID_MODES",
    "LabelMapProcessor",
    "MAX_PIXELS",
    "MAX_SEED",
    "P2PImageProcessor",
    "P2PPipeline",
    "Pix2PixHDPipeline",
    "Pix2PixPipeline",
    "check_image",
    "eval_mode",
    "sampling_mode",
    "seeded_generator",
    "size_rule",
]
