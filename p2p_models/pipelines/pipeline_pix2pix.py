"""`Pix2PixPipeline`: pix2pix image-to-image translation."""

import functools
import warnings

import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

from ..pix2pix import UNetGenerator
from ..tiling import check_size_mode, run_at_size, tile_pair
from .image_processor import P2PImageProcessor
from .label_processor import LabelMapProcessor, class_names_of
from .model_cards import PIX2PIX_TAGS, config_section, pix2pix_card
from .pipeline_utils import (
    P2PPipeline,
    check_diffusion_arguments,
    check_finite,
    check_working_size,
    generator_on,
    prepare_generators,
)


class Pix2PixPipeline(P2PPipeline):
    """pix2pix image-to-image translation.

    Components: `generator` (`UNetGenerator`).
    Config (`model_index.json`): `image_size` (int or [height, width], the working size, divisible by
    2**num_downs), `direction` (`AtoB` | `BtoA`, which side of a paired dataset is the input; for
    reference only), `resample` (filter used to resize inputs to the working size) and
    `color_space`: `rgb` (1 or 3 channels in and out, pixel values mapped to [-1, 1] as in training)
    or `lab` (colorization: the generator maps L (1 channel, L/50 - 1) to ab (2 channels, ab/110));
    images go in and out through `image_processor` (a `P2PImageProcessor` built from them).
    For label-map inputs (facades), `palette` (an RGB colour per class) and `id2label` ({class id:
    name}, as in transformers' configs): inputs
    are then colour-coded label maps, snapped to the palette by `label_processor` (a
    `LabelMapProcessor`; more than 30% of pixels over 80 RGB levels from every class colour is a
    photo, refused) before translation. None (default) for photo inputs.

    Images of any size and aspect ratio are, by default (`size_mode="resize"`), resized to the working
    size, translated, and the result resized back to the input's size (`keep_size=False` returns the
    working size). `size_mode="native"` translates at the input's own resolution and `"tiled"` tile
    by tile (see `__call__`). In `lab` mode the predicted ab is upsampled if needed and recombined
    with the input's full-resolution L channel.
    """

    model_cpu_offload_seq = "generator"
    card_tags = PIX2PIX_TAGS
    generator_modes = (True, False)  # deterministic, and sampled (dropout on: `modes.sampling_mode`)

    def __init__(
        self,
        generator: UNetGenerator,
        image_size: int | list[int] = 256,
        direction: str = "AtoB",
        resample: str = "bicubic",
        color_space: str = "rgb",
        palette: list[list[int]] | None = None,
        id2label: dict[str, str] | None = None,
    ):
        super().__init__()
        size = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
        check_working_size(size, generator.downsampling_factor, "2**num_downs")
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be 'AtoB' or 'BtoA', got {direction!r}")
        channels = (generator.config.in_channels, generator.config.out_channels)
        if color_space == "lab":
            if channels != (1, 2):
                raise ValueError(f"color_space 'lab' needs a generator with 1 input and 2 output channels, got {channels}")
        elif color_space == "rgb":
            for name, n in zip(("in_channels", "out_channels"), channels):
                if n not in (1, 3):
                    raise ValueError(f"Pix2PixPipeline needs a generator with 1 or 3 {name}, got {n}")
        else:
            raise ValueError(f"color_space must be 'rgb' or 'lab', got {color_space!r}")
        if palette is None and id2label is not None:
            raise ValueError("id2label names the classes of a palette, and this pipeline has none")
        if palette is not None and color_space != "rgb":
            raise ValueError(f"a palette (colour-coded label-map inputs) needs color_space 'rgb', got {color_space!r}")
        self.image_processor = P2PImageProcessor(generator.downsampling_factor, resample,
                                                 channels[0] == 1 and color_space == "rgb", color_space)
        self.label_processor = None if palette is None else LabelMapProcessor(
            len(palette), palette, class_names_of(id2label, len(palette)), off_palette_distance=80, max_off_palette=0.3,
            max_boundary_fraction=None)
        self.register_modules(generator=generator)
        self.register_to_config(image_size=image_size, direction=direction, resample=resample, color_space=color_space,
                                palette=palette,
                                id2label=None if id2label is None else {str(k): v for k, v in id2label.items()})

    @property
    def working_size(self) -> tuple[int, int]:
        """(height, width) the generator runs at."""
        size = self.config.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def preprocess(self, images: list[Image.Image], resize: bool = True) -> torch.Tensor:
        """Deprecated: `pipe.image_processor.preprocess` (at `working_size` if `resize`), on the pipeline's
        device and dtype."""
        warnings.warn("pipe.preprocess is deprecated: use pipe.image_processor.preprocess", FutureWarning, stacklevel=2)
        size = self.working_size if resize else (None, None)
        return self.image_processor.preprocess(images, *size, self.max_pixels).to(self.device, self.generator.dtype)

    def postprocess(self, output: torch.Tensor, images: list[Image.Image] | None = None, keep_size: bool = True,
                    output_type: str = "pil") -> list:
        """Deprecated: `pipe.image_processor.postprocess`, to the `images`' sizes if `keep_size`, as a list."""
        warnings.warn("pipe.postprocess is deprecated: use pipe.image_processor.postprocess", FutureWarning,
                      stacklevel=2)
        sizes = [im.size for im in images] if keep_size and images is not None else None
        return list(self.image_processor.postprocess(output, output_type, sizes, images))

    @torch.no_grad()
    def __call__(
        self,
        image,
        generator: torch.Generator | list[torch.Generator] | None = None,
        deterministic: bool = False,
        keep_size: bool = True,
        size_mode: str = "resize",
        tile_size: int | tuple[int, int] | None = None,
        tile_overlap: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        seed: int | list[int] | None = None,
        num_inference_steps: int | None = None,
        callback_on_step_end=None,
    ) -> ImagePipelineOutput | tuple:
        """Translate one image or a batch.

        Args:
            image: a PIL image (RGB, L, P or CMYK, or RGBA/LA without transparent pixels), a numpy
                array (H, W, C) or (B, H, W, C) (uint8, or float in [0, 1]), a torch tensor (C, H, W)
                or (B, C, H, W) (float in [0, 1]), or a list of these; C = 1 or 3; any size. Arrays and
                tensors are taken as 8-bit images.
            generator: draws the dropout noise: a `torch.Generator` (shared by the images in turn) or
                a list of one per image; the same generator state gives the same output, in any
                thread. An image's output depends only on it and its generator. A generator on the
                pipeline's device draws the masks directly; one on another device seeds a generator
                there with a number drawn from it. `None` draws from torch's global RNG.
            deterministic: `False` (default) samples with dropout on, so different generators give
                different plausible outputs, and BatchNorm using the test image's own statistics, as
                the paper and the reference test script do, or the running statistics for a
                generator with `sample_with_batch_statistics=False` (trained on larger batches).
                `True` runs in eval mode (dropout off, running statistics): one output, whatever the
                generator.
            keep_size: resize each output back to its input's size (default), else return the
                working size (`size_mode="resize"` only).
            size_mode: `resize` (default): at the working size, resized back. `native`: at the
                input's own resolution, reflection-padded to a multiple of 2**num_downs and cropped
                back (memory grows with the image). `tiled`: at the input's resolution, tile by tile
                (`tile_size`, default the working size; a multiple of 2**num_downs), tiles
                overlapping by `tile_overlap` pixels (default a quarter tile) blended linearly;
                memory of one tile. Sampling runs one image at a time, `deterministic` resizing as
                one batch.
            output_type: `pil` (a list of PIL images), `np` (float32 (B, H, W, C) in [0, 1]) or `pt`
                (float32 (B, C, H, W) in [0, 1], on the CPU); arrays and tensors of different sizes
                (`keep_size` with inputs of different sizes) come as a list.
            return_dict: return an `ImagePipelineOutput` (default), else the tuple `(images,)`.
            num_inference_steps, callback_on_step_end: diffusers' step arguments. There is one step:
                `num_inference_steps` is ignored with a warning, a callback is refused.
            seed: deprecated (a FutureWarning): shorthand for
                `generator=seeded_generator(seed, pipe.device)` (an int, or a list of
                one per image), an integer in [0, 2**64).

        Returns:
            `ImagePipelineOutput` with `.images`, or `(images,)`.
        """
        check_diffusion_arguments(num_inference_steps, callback_on_step_end)
        images = self.image_processor.pil_images(image, self.max_pixels)
        self.image_processor.check_output_type(output_type)
        check_size_mode(size_mode)
        generators = prepare_generators(generator, seed, len(images), self.device)
        if self.label_processor is not None:  # colour-coded label maps: snapped to the palette
            images = [self.label_processor.snap(im.convert("RGB"), f"image {i}") for i, im in enumerate(images)]
        resize = size_mode == "resize"
        tile = overlap = None
        if not resize:
            tile = tile_pair(tile_size, self.working_size)
            overlap = min(tile) // 4 if tile_overlap is None else tile_overlap
        batches = [list(range(len(images)))] if resize and deterministic else [[i] for i in range(len(images))]
        height, width = self.working_size if resize else (None, None)
        out = []
        with self.progress_bar(total=len(batches)) as progress:
            for batch in batches:
                chunk = [images[i] for i in batch]
                x = self.image_processor.preprocess(chunk, height, width, self.max_pixels)
                x = x.to(self.device, self.generator.dtype)
                y = self._generate(x, [generators[i] for i in batch], deterministic, size_mode, tile, overlap)
                sizes = [im.size for im in chunk] if keep_size or not resize else None
                out += list(self.image_processor.postprocess(check_finite(y), output_type, sizes, chunk))
                progress.update()
        out = self.image_processor.stack(out, output_type)
        return ImagePipelineOutput(images=out) if return_dict else (out,)

    def _generate(self, x: torch.Tensor, generators: list[torch.Generator | None], deterministic: bool,
                  size_mode: str, tile: tuple[int, int] | None, overlap: int | None) -> torch.Tensor:
        """The generator on preprocessed input: (B, C_in, H, W) -> (B, C_out, H, W), in the sampling
        mode `__call__` documents (one image at a time, image i drawing from `generators[i]`). H and W
        are multiples of 2**num_downs for `size_mode="resize"`, any size for `native` and `tiled`
        (`tiled`: tiles of `tile` (height, width) overlapping by `overlap`)."""
        factor, minimum = self.generator.downsampling_factor, self.generator.min_size

        def run(net, t):
            return run_at_size(net, t, size_mode, factor, tile, overlap, minimum)

        with self.generator_runner(deterministic) as net:
            if deterministic:
                return run(net, x)
            outputs = [run(functools.partial(net, generator=generator_on(g, self.device)), xi[None])
                       for xi, g in zip(x, generators)]
        return torch.cat(outputs)

    def new_model_card(self, repo_id: str) -> str:
        """A Hub model card (README.md) describing this pipeline and its config."""
        c = self.generator.config
        generator = f"UNetGenerator(num_downs={c.num_downs}, ngf={c.ngf}, norm={c.norm}, use_dropout={c.use_dropout})"
        h, w = self.working_size
        return str(pix2pix_card(repo_id, f"{w}x{h}", self.config.direction, self.config.color_space, generator,
                                config_section(*self.config_for_card())))
