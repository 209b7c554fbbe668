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


OUTPUT_TYPES = ("pil", "np", "pt")


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")


def array_to_pil(array: np.ndarray, what: str) -> Image.Image:
    """(H, W, C) uint8, or float in [0, 1], C = 1 or 3 -> PIL L or RGB."""
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"{what}: an array must be (H, W, C) or (B, H, W, C) with C = 1 or 3, "
                         f"got shape {array.shape}")
    check_size(array.shape[1], array.shape[0], None, what)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"{what}: float pixel values must be finite and in [0, 1], found "
                             f"{np.nanmin(array):.3g}..{np.nanmax(array):.3g}")
        array = (array * 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"{what}: an array must be uint8, or float in [0, 1], got {array.dtype}")
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def image_list(image) -> list[Image.Image]:
    """Pipeline input as a list of PIL images: a PIL image; a numpy array (H, W, C) or (B, H, W, C),
    uint8 or float in [0, 1]; a torch tensor (C, H, W) or (B, C, H, W), float in [0, 1]; or a list of
    any of these (C = 1 or 3). Arrays and tensors become 8-bit images, as the pipelines resize with PIL."""
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    images = []
    for item in items:
        what = f"image {len(images)}"
        if isinstance(item, torch.Tensor):
            if not item.is_floating_point() or item.ndim not in (3, 4):
                raise ValueError(f"{what}: a tensor must be (C, H, W) or (B, C, H, W) floats in [0, 1], "
                                 f"got {tuple(item.shape)} {item.dtype}")
            item = (item if item.ndim == 4 else item[None]).detach().float().cpu().permute(0, 2, 3, 1).numpy()
        if isinstance(item, np.ndarray):
            batch = item if item.ndim == 4 else [item]
            images += [array_to_pil(a, f"image {len(images) + i}") for i, a in enumerate(batch)]
        elif isinstance(item, Image.Image):
            images.append(item)
        else:
            raise TypeError(f"{what}: expected a PIL image, a numpy array or a torch tensor, got {type(item).__name__}")
    if not images:
        raise ValueError("image: got an empty list")
    return images


def map_list(maps, what: str) -> list:
    """Label or instance maps as a list of single maps (PIL images or (H, W) integer arrays): a PIL
    image, an (H, W) integer array or tensor, a (B, H, W) or (B, 1, H, W) batch of them, or a list of
    any of these."""
    items = list(maps) if isinstance(maps, (list, tuple)) else [maps]
    out = []
    for item in items:
        if isinstance(item, torch.Tensor):
            if item.is_floating_point() or item.is_complex():
                raise ValueError(f"{what}: a tensor must hold integer ids, got {item.dtype}")
            item = item.detach().cpu().numpy()
        if isinstance(item, np.ndarray) and item.ndim in (3, 4):
            if item.ndim == 4 and item.shape[1] != 1:
                raise ValueError(f"{what}: a 4-d batch must be (B, 1, H, W), got {item.shape}")
            out += list(item.reshape(-1, *item.shape[-2:]))
        else:
            out.append(item)
    if not out:
        raise ValueError(f"{what}: got an empty list")
    return out


def output_image(image: torch.Tensor, size: tuple[int, int] | None, output_type: str):
    """(C, H, W) in [0, 1] -> a PIL image, an (H, W, C) float32 array or a (C, H, W) float32 CPU tensor,
    resized (bicubic) to `size` (W, H) if given. PIL images are resized in 8 bits (as PIL does),
    arrays and tensors in float32, so the three agree to within rounding."""
    if output_type == "pil":
        out = to_pil(image.float().cpu())
        return out if size is None or out.size == tuple(size) else out.resize(size, Image.BICUBIC)
    image = image.float().cpu().clamp(0, 1)
    if size is not None and tuple(image.shape[:0:-1]) != tuple(size):
        channels = [np.asarray(Image.fromarray(c.numpy(), "F").resize(size, Image.BICUBIC)) for c in image]
        image = torch.from_numpy(np.stack(channels)).clamp(0, 1)
    return image.permute(1, 2, 0).numpy() if output_type == "np" else image


def batch_outputs(outputs: list, output_type: str):
    """A call's outputs: a list of PIL images, or the arrays (tensors) stacked to (B, H, W, C)
    ((B, C, H, W)) when they have one size, else a list of them."""
    if output_type == "pil" or len({tuple(o.shape) for o in outputs}) > 1:
        return outputs
    return np.stack(outputs) if output_type == "np" else torch.stack(outputs)
