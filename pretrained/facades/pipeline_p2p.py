"""Lets `diffusers.DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` load this p2p
folder: Pix2PixPipeline comes from the installed p2p package."""

from importlib import import_module

try:
    Pix2PixPipeline = import_module("p2p_models").Pix2PixPipeline
except ImportError as e:
    raise ImportError(
        "this is a p2p pipeline (pix2pix / pix2pixHD): loading it needs the p2p package (its `p2p_models` "
        "module) installed: `pip install -e .` in a checkout of p2p"
    ) from e
