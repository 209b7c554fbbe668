"""Image and label-map conversion shared by the pipelines: input checks, PIL <-> arrays, label ids."""

import numpy as np
import torch
from PIL import Image

from ..labels import nearest_palette

RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_PIXELS = 4096 * 4096  # default input guard (`pipe.max_pixels`) and the largest working size a config may set
OFF_PALETTE_DISTANCE = 20  # RGB distance beyond which a colour label map's pixel matches no palette colour


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


def label_ids(label_map, palette: list[list[int]] | None, what: str = "label_map",
              max_pixels: int | None = MAX_PIXELS, max_off_palette: float = 1.0) -> np.ndarray:
    """A label map as (H, W) int64 ids: an integer array, an L / P / I / I;16 image of ids, or an RGB
    image of palette colours (snapped to the nearest colour; more than `max_off_palette` of its pixels
    farther than OFF_PALETTE_DISTANCE from every colour is an error). The size is checked against
    `max_pixels` before an image is decoded."""
    if isinstance(label_map, np.ndarray):
        if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
            raise ValueError(f"{what}: an array must be (H, W) integers, got {label_map.shape} {label_map.dtype}")
        check_size(label_map.shape[1], label_map.shape[0], max_pixels, what)
        return label_map.astype(np.int64)
    if not isinstance(label_map, Image.Image):
        raise TypeError(f"{what}: expected a PIL image or an (H, W) integer array, got {type(label_map).__name__}")
    check_size(label_map.width, label_map.height, max_pixels, what)
    if label_map.mode in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(label_map).astype(np.int64)
    if label_map.mode in ("RGB", "RGBA"):
        if palette is None:
            raise ValueError(f"{what}: a colour image needs the pipeline's palette, and this pipeline has none; "
                             "pass class ids (mode L or P, or an integer array)")
        ids, distance = nearest_palette(label_map, palette)
        off = (distance > OFF_PALETTE_DISTANCE).mean()
        if off > max_off_palette:
            raise ValueError(
                f"{what}: {off:.0%} of its pixels are far from every palette colour, so it looks like a photo, not "
                "a label map; colour-coded label maps must use the pipeline's `palette` (or pass class ids)"
            )
        return ids
    raise ValueError(f"{what}: unsupported image mode {label_map.mode!r}; expected ids (L, P, I, I;16) or RGB colours")
