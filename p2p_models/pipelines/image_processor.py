"""`P2PImageProcessor`: diffusers' `VaeImageProcessor` for the p2p generators' images (PIL, numpy or
torch in and out), and the input checks the pipelines and the app share (label maps:
label_processor.py)."""

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from ..color import model_lab_to_rgb, rgb_to_model_lab

RESAMPLE = ("nearest", "bilinear", "bicubic", "lanczos")  # PIL filters a config may name for its inputs
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_PIXELS = 4096 * 4096  # default input guard (`pipe.max_pixels`) and the largest working size a config may set
OUTPUT_TYPES = ("pil", "np", "pt")
COLOR_SPACES = ("rgb", "lab")


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


class P2PImageProcessor(VaeImageProcessor):
    """Pre- and post-processing of a p2p generator's images, with `VaeImageProcessor`'s interface
    (`preprocess`, `postprocess`, `resize`, `normalize`, ...). Built by each pipeline from its config
    (`pipe.image_processor`), as diffusers' pipelines build theirs.

    Inputs are PIL images, numpy arrays or torch tensors, taken as 8-bit images (the pipelines resize
    with PIL), checked (`check_image`) and resized to the working size with `resample`.

    Args:
        vae_scale_factor: the generator's `downsampling_factor` (working sizes are multiples of it), the
            counterpart of the VAE's factor in diffusers' pipelines.
        resample: the PIL filter inputs are resized with: `nearest`, `bilinear`, `bicubic` or `lanczos`.
        do_convert_grayscale: the generator takes 1 channel (L); otherwise 3 (RGB).
        color_space: `rgb`: pixels in [0, 1] <-> the generator's [-1, 1]. `lab` (colorization): the
            generator takes L (L/50 - 1) and gives ab (ab/110), recombined with the input's L.
    """

    @register_to_config
    def __init__(self, vae_scale_factor: int = 1, resample: str = "bicubic", do_convert_grayscale: bool = False,
                 color_space: str = "rgb"):
        if resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
        if color_space not in COLOR_SPACES:
            raise ValueError(f"color_space must be 'rgb' or 'lab', got {color_space!r}")
        super().__init__(vae_scale_factor=vae_scale_factor, resample=resample, do_normalize=color_space == "rgb",
                         do_convert_rgb=not do_convert_grayscale, do_convert_grayscale=do_convert_grayscale)

    @staticmethod
    def check_output_type(output_type: str) -> None:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")

    @staticmethod
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

    @classmethod
    def pil_images(cls, image, max_pixels: int | None = MAX_PIXELS) -> list[Image.Image]:
        """Pipeline input as a list of checked PIL images (`check_image`): a PIL image; a numpy array
        (H, W, C) or (B, H, W, C), uint8 or float in [0, 1]; a torch tensor (C, H, W) or (B, C, H, W),
        float in [0, 1]; or a list of any of these (C = 1 or 3)."""
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
                images += [cls.array_to_pil(a, f"image {len(images) + i}") for i, a in enumerate(batch)]
            elif isinstance(item, Image.Image):
                images.append(item)
            else:
                raise TypeError(f"{what}: expected a PIL image, a numpy array or a torch tensor, got "
                                f"{type(item).__name__}")
        if not images:
            raise ValueError("image: got an empty list")
        return [check_image(im, i, max_pixels) for i, im in enumerate(images)]

    @staticmethod
    def numpy_to_pil(images: np.ndarray) -> list[Image.Image]:
        """(B, H, W, C) or (H, W, C) floats in [0, 1], C = 1 or 3 -> PIL L or RGB images (Pillow 12's
        `fromarray`, without the `mode` argument diffusers' version passes)."""
        images = (images[None] if images.ndim == 3 else images) * 255
        return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in images.round().astype(np.uint8)]

    def preprocess(self, image, height: int | None = None, width: int | None = None,
                   max_pixels: int | None = MAX_PIXELS) -> torch.Tensor:
        """Pipeline input (see `pil_images`) -> (B, C, H, W) float32 generator input on the CPU: L or
        RGB, resized to (`height`, `width`) if given, else at the images' own size (which must then
        agree); [-1, 1], or L/50 - 1 in `lab`."""
        convert = self.convert_to_grayscale if self.config.do_convert_grayscale else self.convert_to_rgb
        images = [convert(im) for im in self.pil_images(image, max_pixels)]
        if height is not None:
            images = [self.resize(im, height, width) for im in images]
        x = self.numpy_to_pt(self.pil_to_numpy(images)).contiguous()
        return rgb_to_model_lab(x)[0] if self.config.color_space == "lab" else self.normalize(x)

    def postprocess(self, image: torch.Tensor, output_type: str = "pil",
                    sizes: list[tuple[int, int] | None] | None = None, inputs: list[Image.Image] | None = None):
        """(B, C, H, W) generator output -> `output_type` images, as `VaeImageProcessor.postprocess`
        gives them: a list of PIL images, a float32 (B, H, W, C) array or a float32 (B, C, H, W) CPU
        tensor, in [0, 1]. Image i is resized (bicubic) to `sizes[i]` (width, height) where given;
        PIL images are resized in 8 bits (as PIL does), arrays and tensors in float32, so the three
        agree to within rounding. Arrays and tensors of different sizes come as a list. In `lab`, the
        output is ab, recombined with the L channel of `inputs` (PIL images) at `sizes[i]`, or the
        output's size."""
        self.check_output_type(output_type)
        image = image.float().cpu()
        sizes = sizes or [None] * len(image)
        if self.config.color_space == "lab":
            image = [self.lab_to_rgb(ab, rgb, size) for ab, rgb, size in zip(image, inputs, sizes)]
            sizes = [None] * len(image)
        else:
            image = self.denormalize(image)
        return self.stack([self.output_image(x, size, output_type) for x, size in zip(image, sizes)], output_type)

    def lab_to_rgb(self, ab: torch.Tensor, image: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Predicted ab (2, h, w) and the L channel of `image` at `size` (width, height; default (w, h))
        -> (3, H, W) RGB in [0, 1]; ab is upsampled (bicubic) to L's size if needed."""
        rgb = self.convert_to_rgb(image)
        width, height = size or (ab.shape[-1], ab.shape[-2])
        if rgb.size != (width, height):
            rgb = self.resize(rgb, height, width)
        L = rgb_to_model_lab(self.numpy_to_pt(self.pil_to_numpy(rgb))[0])[0]  # (1, H, W)
        if ab.shape[-2:] != L.shape[-2:]:
            ab = torch.nn.functional.interpolate(ab[None], size=L.shape[-2:], mode="bicubic")[0]
        return model_lab_to_rgb(L, ab.clamp(-1, 1))

    def output_image(self, image: torch.Tensor, size: tuple[int, int] | None, output_type: str):
        """(C, H, W) in [0, 1] -> a PIL image, an (H, W, C) float32 array or a (C, H, W) float32 CPU
        tensor, resized (bicubic) to `size` (width, height) if given."""
        image = image.float().cpu().clamp(0, 1)
        if output_type == "pil":
            out = self.numpy_to_pil(self.pt_to_numpy(image[None]))[0]
            return out if size is None or out.size == tuple(size) else out.resize(size, Image.BICUBIC)
        if size is not None and tuple(image.shape[:0:-1]) != tuple(size):
            channels = [np.asarray(Image.fromarray(c.numpy(), "F").resize(size, Image.BICUBIC)) for c in image]
            image = torch.from_numpy(np.stack(channels)).clamp(0, 1)
        return image.permute(1, 2, 0).numpy() if output_type == "np" else image

    @staticmethod
    def stack(outputs: list, output_type: str):
        """Per-image outputs as a call returns them: a list of PIL images, or the arrays (tensors)
        stacked to (B, H, W, C) ((B, C, H, W)) when they have one size, else a list of them."""
        if output_type == "pil" or len({tuple(o.shape) for o in outputs}) > 1:
            return list(outputs)
        return np.stack(outputs) if output_type == "np" else torch.stack(outputs)
