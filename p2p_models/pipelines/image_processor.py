"""Image conversion shared by the pipelines: input checks, PIL <-> arrays (label maps: label_processor.py)."""

import numpy as np
import torch
from PIL import Image

RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_PIXELS = 4096 * 4096  # default input guard (`pipe.max_pixels`) and the largest working size a config may set


def check_size(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """A clear error for an empty input or one over `max_pixels` (checked before any decoding)."""
    if width < 1 or height < 1:
        raise ValueError(f"{what}: is empty ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(
            f"{what}: {width}x{height} is {width * height:,} pixels, over this pipeline's limit of {max_pixels:,} "
            "(`max_pixels`); downscale it, or raise `pipe.max_pixels` if you have the memory"
        )


def check_image(image, index: int, max_pixels: int | None = None) -> Image.Image:
    """Validate one input: an 8-bit PIL image with no transparent pixels, at most `max_pixels` (checked
    from the header, so a lazily opened image is not decoded when it is too large)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"image {index}: expected a PIL.Image.Image, got {type(image).__name__}")
    check_size(image.width, image.height, max_pixels, f"image {index}")
    if image.mode in HIGH_BIT_MODES:
        raise ValueError(
            f"image {index}: mode {image.mode!r} (16-bit or float) is not supported; convert it to 8-bit RGB or L first"
        )
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:
            raise ValueError(
                f"image {index}: has transparent pixels (mode {image.mode}); the model needs an opaque image, "
                "so composite it onto a background first (e.g. Image.alpha_composite) or drop the alpha channel"
            )
    return image


def to_array(image: Image.Image) -> np.ndarray:
    """PIL (L or RGB) -> (C, H, W) float32 in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) in [0, 1], C = 1 or 3 -> PIL L or RGB."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
