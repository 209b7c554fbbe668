"""Inference pipelines: PIL images in, PIL images out."""

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from huggingface_hub import HfApi, snapshot_download
from PIL import Image
from torch import nn

from .color import model_lab_to_rgb, rgb_to_model_lab
from .labels import boundary_fraction, connected_instances, instance_boundaries, nearest_palette, one_hot
from .optimize import fast_cpu_copy
from .pix2pix import UNetGenerator
from .pix2pixhd import FeatureEncoder, GlobalGenerator, LocalEnhancer
from .style_bank import StyleBank
from .tiling import check_size_mode, run_at_size, run_padded, tile_pair

RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
HUB_FILES = ["model_index.json", "README.md", "*/config.json", "*/*.safetensors", "*/*.safetensors.index.json"]
BACKENDS = ("torch", "fast", "onnxruntime")
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
MAX_PIXELS = 4096 * 4096  # default input guard (`pipe.max_pixels`) and the largest working size a config may set
MAX_SEED = 2**64  # seeds lie in [0, MAX_SEED): what both torch and numpy accept
OFF_PALETTE_DISTANCE = 20  # RGB distance beyond which a colour label map's pixel matches no palette colour

MODEL_CARD = """---
library_name: p2p
pipeline_tag: image-to-image
tags:
- pix2pix
- image-to-image
- p2p
---

# {name}

A pix2pix pipeline (Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks",
CVPR 2017) in the p2p format: `model_index.json` plus a `generator/` folder
(`UNetGenerator`, safetensors).

```python
from PIL import Image
from p2p_models import Pix2PixPipeline

pipe = Pix2PixPipeline.from_pretrained("{repo}")
out = pipe(Image.open("input.png"), seed=0)
```

Working size {size}, direction {direction}, generator: {generator}.
"""


HD_MODEL_CARD = """---
library_name: p2p
pipeline_tag: image-to-image
tags:
- pix2pixhd
- image-to-image
- p2p
---

# {name}

A pix2pixHD pipeline (Wang et al., "High-Resolution Image Synthesis and Semantic Manipulation with
Conditional GANs", CVPR 2018) in the p2p format: {generator}, {classes} label classes.

```python
from p2p_models import Pix2PixHDPipeline

pipe = Pix2PixHDPipeline.from_pretrained("{repo}")
image = pipe(label_map, instance_map, seed=0)
```
"""


@contextlib.contextmanager
def paper_test_mode(model: nn.Module):
    """Run `model` as pix2pix's reference test script does (no `--eval`): dropout on, BatchNorm
    normalising with the batch's own statistics. Running statistics are neither used nor updated."""
    saved = [(m, m.training, getattr(m, "track_running_stats", None)) for m in model.modules()]
    try:
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.train()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
                m.track_running_stats = False
            else:
                m.eval()
        yield
    finally:
        for m, training, track in saved:
            m.train(training)
            if track is not None:
                m.track_running_stats = track


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Plain eval mode (dropout off, BatchNorm running statistics), restored afterwards."""
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, training in saved:
            m.train(training)


def check_size(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """A clear error for an empty input or one over `max_pixels` (checked before any decoding)."""
    if width < 1 or height < 1:
        raise ValueError(f"{what}: is empty ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(
            f"{what}: {width}x{height} is {width * height:,} pixels, over this pipeline's limit of {max_pixels:,} "
            "(`max_pixels`); downscale it, or raise `pipe.max_pixels` if you have the memory"
        )


def check_seed(seed) -> int | None:
    """`seed` as an int in [0, 2**64), or None; a clear error otherwise."""
    if seed is None:
        return None
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def check_finite(output: torch.Tensor) -> torch.Tensor:
    """The generator's output, or an error if it holds NaN or infinite values (black images otherwise)."""
    if not torch.isfinite(output).all():
        raise ValueError(
            "the generator produced NaN or infinite values: its weights are corrupt, or the dtype overflowed "
            "(try float32)"
        )
    return output


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


def size_rule(generator: nn.Module) -> tuple[int, int]:
    """(factor, minimum): the generator's input height and width must be multiples of `factor` and
    at least `minimum` (pix2pixHD's innermost reflection pads need 2 pixels, so 2 factors)."""
    c = generator.config
    if isinstance(generator, UNetGenerator):
        return 2**c.num_downs, 2**c.num_downs
    factor = 2 ** (c.n_downsample_global + c.n_local_enhancers) if isinstance(generator, LocalEnhancer) \
        else 2**c.n_downsampling
    return factor, 2 * factor


def check_working_size(size: list[int], factor: int, factor_name: str) -> list[int]:
    """A config's working size: [height, width], positive, divisible by `factor`, at most MAX_PIXELS."""
    if len(size) != 2 or any(not isinstance(s, int) or s < 1 or s % factor for s in size):
        raise ValueError(f"image_size {size} must be one or two positive sizes divisible by {factor_name} = {factor}")
    if size[0] * size[1] > MAX_PIXELS:
        raise ValueError(f"image_size {size} is over the largest supported working size of "
                         f"{MAX_PIXELS / 1e6:.1f} megapixels")
    return size


class P2PPipeline(DiffusionPipeline):
    """Hub plumbing shared by the p2p pipelines: loading from a folder or a Hub id, a model card on
    save, and `push_to_hub` as `save_pretrained` + one upload. Subclasses define `model_card`.

    `max_pixels` (default 4096 * 4096) refuses larger inputs before they are decoded or processed,
    whatever the `size_mode`; set it on an instance (`pipe.max_pixels = None` lifts it).
    `set_backend` picks how the generator runs (plain PyTorch, the fast CPU path, ONNX Runtime)."""

    max_pixels: int | None = MAX_PIXELS
    backend = "torch"
    _onnx = None
    _fast = None

    def set_backend(self, backend: str = "torch", onnx_model: str | os.PathLike | None = None) -> None:
        """How the generator runs:

        - `torch`: plain PyTorch (the default).
        - `fast`: on a CPU in float32, the generator with its convolution weights packed for oneDNN
          once per input shape, and BatchNorm folded into the convolutions for deterministic calls
          (`optimize.fast_cpu_copy`, rebuilt when the weights change). Same outputs as `torch`
          within 1e-4 ([-1, 1] scale), same seeds; on CUDA or in half precision it is `torch`.
        - `onnxruntime`: the eval-mode generator in ONNX Runtime: `onnx_model` (a file written by
          `p2p export-onnx`), or exported now. Deterministic calls only (pix2pix: `deterministic=True`).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if onnx_model is not None and backend != "onnxruntime":
            raise ValueError("onnx_model is only used by the onnxruntime backend")
        self._onnx = self._fast = None
        if backend == "onnxruntime":
            from .onnx_export import OnnxGenerator, export_onnx

            if onnx_model is None:
                folder = tempfile.mkdtemp(prefix="p2p-onnx-")
                onnx_model = Path(folder) / "generator.onnx"
                export_onnx(self.generator, onnx_model)
            self._onnx = OnnxGenerator(onnx_model)
            channels = self._onnx.session.get_inputs()[0].shape[1]
            if channels != self.generator.config.in_channels:
                raise ValueError(f"{onnx_model}: the ONNX model takes {channels} channels, this pipeline's generator "
                                 f"{self.generator.config.in_channels}")
        self.backend = backend

    def optimize_for_inference(self, device: str | torch.device | None = None):
        """Move to the fastest place that keeps quality and return the pipeline: CUDA (or `device`)
        in float16 when there is one, else the CPU in float32 with the `fast` backend."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda":
            return self.to(device, torch.float16)
        self.to(device, torch.float32).set_backend("fast")
        return self

    @contextlib.contextmanager
    def generator_runner(self, deterministic: bool = True):
        """The generator as a callable for the current backend: (B, C_in, H, W) -> (B, C_out, H, W),
        in eval mode if `deterministic`, else in `paper_test_mode`."""
        if self.backend == "onnxruntime":
            if not deterministic:
                raise ValueError("the onnxruntime backend runs the exported eval-mode generator (no dropout, running "
                                 "BatchNorm statistics): use deterministic=True, or the torch or fast backend")
            yield self._onnx
            return
        module = self.generator
        if self.backend == "fast" and self.device.type == "cpu" and module.dtype == torch.float32:
            state = (id(module), *((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers())))
            if self._fast is None or self._fast[0] != state:  # new or changed weights: new copies
                self._fast = (state, {})
            copies = self._fast[1]
            if deterministic not in copies:
                copies[deterministic] = fast_cpu_copy(module, deterministic)
            module = copies[deterministic]
        with (eval_mode if deterministic else paper_test_mode)(module):
            yield module

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a local folder or a Hub repo id (downloaded with `snapshot_download`:
        `revision`, `cache_dir`, `token`, `local_files_only` and `force_download` are passed on)."""
        if os.path.isdir(pretrained_model_name_or_path):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        # diffusers' own download step rejects components from libraries it doesn't know.
        names = ("revision", "cache_dir", "token", "local_files_only", "force_download")
        download = {k: kwargs.pop(k) for k in names if k in kwargs}
        folder = snapshot_download(str(pretrained_model_name_or_path), allow_patterns=HUB_FILES, **download)
        pipe = super().from_pretrained(folder, **kwargs)
        pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipe

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`DiffusionPipeline.save_pretrained`, plus a model card (README.md) if the folder has none."""
        super().save_pretrained(save_directory, *args, **kwargs)
        card = Path(save_directory) / "README.md"
        if not card.exists():
            card.write_text(self.model_card())

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        max_shard_size: str | int | None = None,
        model_card: str | None = None,
    ):
        """Save the pipeline to a temporary folder with `save_pretrained` and upload that folder as
        one commit to the Hub repo `repo_id` (created if missing), with `model_card` as README.md
        (default: `self.model_card(repo_id)`). Returns the commit info."""
        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            (Path(folder) / "README.md").write_text(model_card or self.model_card(repo_id))
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=commit_message or f"Upload {type(self).__name__}",
                create_pr=create_pr,
            )


class Pix2PixPipeline(P2PPipeline):
    """pix2pix image-to-image translation.

    Components: `generator` (`UNetGenerator`).
    Config (`model_index.json`): `image_size` (int or [height, width], the working size, divisible by
    2**num_downs), `direction` (`AtoB` | `BtoA`, which side of a paired dataset is the input; for
    reference only), `resample` (filter used to resize inputs to the working size) and
    `color_space`: `rgb` (1 or 3 channels in and out, pixel values mapped to [-1, 1] as in training)
    or `lab` (colorization: the generator maps L (1 channel, L/50 - 1) to ab (2 channels, ab/110)).

    Images of any size and aspect ratio are, by default (`size_mode="resize"`), resized to the working
    size, translated, and the result resized back to the input's size (`keep_size=False` returns the
    working size). `size_mode="native"` translates at the input's own resolution and `"tiled"` tile
    by tile (see `__call__`). In `lab` mode the predicted ab is upsampled if needed and recombined
    with the input's full-resolution L channel.
    """

    model_cpu_offload_seq = "generator"

    def __init__(
        self,
        generator: UNetGenerator,
        image_size: int | list[int] = 256,
        direction: str = "AtoB",
        resample: str = "bicubic",
        color_space: str = "rgb",
    ):
        super().__init__()
        size = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
        check_working_size(size, 2**generator.config.num_downs, "2**num_downs")
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be 'AtoB' or 'BtoA', got {direction!r}")
        if resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
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
        self.register_modules(generator=generator)
        self.register_to_config(image_size=image_size, direction=direction, resample=resample, color_space=color_space)

    @property
    def working_size(self) -> tuple[int, int]:
        """(height, width) the generator runs at."""
        size = self.config.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def preprocess(self, images: list[Image.Image], resize: bool = True) -> torch.Tensor:
        """PIL images -> (B, C, H, W) generator input, at the working size if `resize` (else at the
        images' own size, which must then be the same): [-1, 1] pixels, or L/50 - 1."""
        lab = self.config.color_space == "lab"
        mode = "L" if self.generator.config.in_channels == 1 and not lab else "RGB"
        h, w = self.working_size
        arrays = []
        for i, image in enumerate(images):
            image = check_image(image, i, self.max_pixels).convert(mode)
            arrays.append(to_array(image.resize((w, h), RESAMPLE[self.config.resample]) if resize else image))
        x = torch.from_numpy(np.stack(arrays))
        x = rgb_to_model_lab(x)[0] if lab else x * 2 - 1
        return x.to(self.device, self.generator.dtype)

    def postprocess(
        self, output: torch.Tensor, images: list[Image.Image] | None = None, keep_size: bool = True
    ) -> list[Image.Image]:
        """Generator output (B, C, H, W) -> PIL images, resized to the `images`' sizes if `keep_size`.
        In `lab` mode the `images` give the L channel (at full resolution if `keep_size`)."""
        output = output.float().cpu()
        if self.config.color_space == "lab":
            out = []
            for ab, image in zip(output, images):
                rgb = image.convert("RGB")
                if not keep_size:
                    rgb = rgb.resize(output.shape[-1:-3:-1], RESAMPLE[self.config.resample])
                L = rgb_to_model_lab(torch.from_numpy(to_array(rgb)))[0]
                if ab.shape[-2:] != L.shape[-2:]:
                    ab = torch.nn.functional.interpolate(ab[None], size=L.shape[-2:], mode="bicubic")[0]
                out.append(to_pil(model_lab_to_rgb(L, ab.clamp(-1, 1))))
            return out
        out = [to_pil((y + 1) / 2) for y in output]
        if keep_size and images is not None:
            out = [o if o.size == im.size else o.resize(im.size, Image.BICUBIC) for o, im in zip(out, images)]
        return out

    @torch.no_grad()
    def __call__(
        self,
        image: Image.Image | list[Image.Image],
        seed: int | list[int] | None = None,
        deterministic: bool = False,
        keep_size: bool = True,
        size_mode: str = "resize",
        tile_size: int | tuple[int, int] | None = None,
        tile_overlap: int | None = None,
    ) -> Image.Image | list[Image.Image]:
        """Translate one image or a list of images.

        Args:
            image: a PIL image or a list of them (RGB, L, P or CMYK, or RGBA/LA without transparent
                pixels), any size.
            seed: seeds the dropout noise; one int for every image, or one per image. `None` draws
                from torch's global RNG. An image's output depends only on it and its seed, not on
                the other images in the list.
            deterministic: `False` (default) samples as the paper and the reference test script do:
                dropout on and BatchNorm using the test image's own statistics, so different seeds
                give different plausible outputs. `True` runs in eval mode (dropout off, running
                statistics): one output, the same for every seed.
            keep_size: resize each output back to its input's size (default), else return the
                working size (`size_mode="resize"` only).
            size_mode: `resize` (default): at the working size, resized back. `native`: at the
                input's own resolution, reflection-padded to a multiple of 2**num_downs and cropped
                back (memory grows with the image). `tiled`: at the input's resolution, tile by tile
                (`tile_size`, default the working size; a multiple of 2**num_downs), tiles
                overlapping by `tile_overlap` pixels (default a quarter tile) blended linearly;
                memory of one tile. `native` and `tiled` run one image at a time.

        Returns:
            A PIL image, or a list of them if `image` was a list.
        """
        single = not isinstance(image, (list, tuple))
        images = [image] if single else list(image)
        if not images:
            raise ValueError("image: got an empty list")
        seeds = seed if isinstance(seed, (list, tuple)) else [seed] * len(images)
        if len(seeds) != len(images):
            raise ValueError(f"seed: got {len(seeds)} seeds for {len(images)} images")
        seeds = [check_seed(s) for s in seeds]
        check_size_mode(size_mode)
        if size_mode == "resize":
            output = check_finite(self.generate(self.preprocess(images), seeds, deterministic))
            out = self.postprocess(output, images, keep_size)
        else:
            tile = tile_pair(tile_size, self.working_size)
            overlap = min(tile) // 4 if tile_overlap is None else tile_overlap
            out = []
            for i, (image, seed_i) in enumerate(zip(images, seeds)):
                check_image(image, i, self.max_pixels)
                x = self.preprocess([image], resize=False)
                output = self.generate(x, [seed_i], deterministic, size_mode, tile, overlap)
                out += self.postprocess(check_finite(output), [image])
        return out[0] if single else out

    @torch.no_grad()
    def generate(self, x: torch.Tensor, seeds: list[int | None] | None = None, deterministic: bool = False,
                 size_mode: str = "resize", tile: tuple[int, int] | None = None, overlap: int = 0) -> torch.Tensor:
        """The generator on preprocessed input: (B, C_in, H, W) -> (B, C_out, H, W), in the sampling
        mode `__call__` documents (one image at a time, image i seeded with `seeds[i]`). H and W are
        multiples of 2**num_downs for `size_mode="resize"`, any size for `native` and `tiled` (tiles
        of `tile` (height, width) overlapping by `overlap`)."""
        factor, minimum = size_rule(self.generator)
        tile = tile or self.working_size

        def run(net, t):
            return run_at_size(net, t, size_mode, factor, tile, overlap, minimum)

        with self.generator_runner(deterministic) as net:
            if deterministic:
                return run(net, x)
            outputs = []
            for xi, si in zip(x, seeds if seeds is not None else [None] * len(x)):
                with self._seeded(si):
                    outputs.append(run(net, xi[None]))
        return torch.cat(outputs)

    @contextlib.contextmanager
    def _seeded(self, seed: int | None):
        if seed is None:
            yield
            return
        device = self.device
        devices = [] if device.type == "cpu" else [device.index or 0]
        with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
            torch.manual_seed(seed)
            yield

    def model_card(self, repo_id: str | None = None) -> str:
        """A Hub model card (README.md) describing this pipeline."""
        c = self.generator.config
        generator = f"UNetGenerator(num_downs={c.num_downs}, ngf={c.ngf}, norm={c.norm}, use_dropout={c.use_dropout})"
        name = repo_id or "pix2pix pipeline"
        size = "x".join(map(str, self.working_size))
        return MODEL_CARD.format(
            name=name, repo=repo_id or "path/to/pipeline", size=size, direction=self.config.direction, generator=generator
        )

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


class Pix2PixHDPipeline(P2PPipeline):
    """pix2pixHD: a semantic label map (+ instance map) -> photo, with per-instance styles.

    Components: `generator` (`GlobalGenerator` or `LocalEnhancer`), optional `encoder`
    (`FeatureEncoder`) and `style_bank` (`StyleBank`) for style control.
    Config: `label_nc` (classes), `contain_dontcare_label` (id 255 becomes class `label_nc`),
    `use_instance` (boundary map channel), `image_size` ([height, width]), `palette` (RGB per class,
    for colour-coded label maps), `class_names` and `countable_classes` (see `label_and_instance_ids`).

    The generator's input is one-hot labels, the instance boundary map, and (with a style bank)
    a `feat_num`-channel map holding one style feature per instance.

    Label maps are checked before synthesis (settable on an instance): at most `max_instances`
    instances; at most `max_off_palette` of a colour map's pixels off the palette; at most
    `max_boundary_fraction` of the pixels on a class boundary (real label maps: < 0.2; noise and
    photos: far more).
    """

    _optional_components = ["encoder", "style_bank"]
    model_cpu_offload_seq = "encoder->generator"
    max_instances = 2000
    max_off_palette = 0.4
    max_boundary_fraction = 0.35

    def __init__(
        self,
        generator: GlobalGenerator | LocalEnhancer,
        encoder: FeatureEncoder | None = None,
        style_bank: StyleBank | None = None,
        label_nc: int = 35,
        contain_dontcare_label: bool = False,
        use_instance: bool = True,
        image_size: list[int] = (512, 1024),
        palette: list[list[int]] | None = None,
        class_names: list[str] | None = None,
        countable_classes: list[int] | None = None,
    ):
        super().__init__()
        if label_nc < 1:
            raise ValueError(f"label_nc must be at least 1, got {label_nc}")
        classes = label_nc + int(contain_dontcare_label)
        feat_source = style_bank if style_bank is not None else encoder
        feat_num = feat_source.config.feat_num if feat_source is not None else 0
        expected = classes + int(use_instance) + feat_num
        if generator.config.in_channels != expected:
            raise ValueError(
                f"the generator takes {generator.config.in_channels} channels, but {classes} classes + "
                f"{int(use_instance)} boundary + {feat_num} feature channels make {expected}"
            )
        check_working_size(list(image_size), size_rule(generator)[0], "the generator's downsampling factor")
        if palette is not None:
            if len(palette) < classes:
                raise ValueError(f"palette has {len(palette)} colours for {classes} classes")
            if any(len(c) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette):
                raise ValueError("palette: every colour must be three integers in [0, 255]")
        if class_names is not None and len(class_names) < classes:
            raise ValueError(f"class_names has {len(class_names)} names for {classes} classes")
        if countable_classes and not all(0 <= c < classes for c in countable_classes):
            raise ValueError(f"countable_classes {countable_classes} must be class ids in [0, {classes})")
        self.register_modules(generator=generator, encoder=encoder, style_bank=style_bank)
        self.register_to_config(label_nc=label_nc, contain_dontcare_label=contain_dontcare_label,
                                use_instance=use_instance, image_size=list(image_size), palette=palette,
                                class_names=class_names, countable_classes=countable_classes)

    @property
    def working_size(self) -> tuple[int, int]:
        return tuple(self.config.image_size)

    @property
    def num_classes(self) -> int:
        return self.config.label_nc + int(self.config.contain_dontcare_label)

    def label_and_instance_ids(self, label_map, instance_map=None) -> tuple[np.ndarray, np.ndarray]:
        """(labels, instances): (H, W) int64 ids at the label map's own size. Without an instance map,
        the connected regions of `countable_classes` are the instances (as in training on data
        without instance maps), or each class region is one instance. Maps that don't look like label
        maps, or have more than `max_instances` instances, are refused with a ValueError."""
        labels = label_ids(label_map, self.config.palette, max_pixels=self.max_pixels,
                           max_off_palette=self.max_off_palette)
        if self.config.contain_dontcare_label:
            labels = np.where(labels == 255, self.config.label_nc, labels)
        classes = self.num_classes
        if labels.min() < 0 or labels.max() >= classes:
            raise ValueError(f"label_map: ids must lie in [0, {classes}), found {labels.min()}..{labels.max()}")
        fragmented = boundary_fraction(labels)
        if fragmented > self.max_boundary_fraction:
            raise ValueError(
                f"label_map: {fragmented:.0%} of its pixels lie on a class boundary (label maps are made of regions: "
                f"below {self.max_boundary_fraction:.0%}), so it looks like noise or a photo, not a label map"
            )
        if instance_map is not None:
            instances = label_ids(instance_map, None, "instance_map", max_pixels=self.max_pixels)
            if instances.shape == labels.shape and instances.min() < 0:
                raise ValueError(f"instance_map: ids must be non-negative, found {instances.min()}")
        elif self.config.countable_classes:
            instances = connected_instances(labels, self.config.countable_classes).astype(np.int64)
        else:
            instances = labels
        if instances.shape != labels.shape:
            raise ValueError(f"instance_map is {instances.shape[::-1]} but label_map is {labels.shape[::-1]} (W, H)")
        count = len(np.unique(instances))
        if count > self.max_instances:
            raise ValueError(f"the maps hold {count} instances, more than this pipeline's limit of "
                             f"{self.max_instances} (`max_instances`): a label map has at most a few hundred objects")
        return labels, instances

    def prepare_maps(self, label_map, instance_map=None, resize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, instances): (1, 1, H, W) int64 at the working size (nearest-neighbour resized), or
        at the label map's own size if not `resize`; see `label_and_instance_ids`."""
        h, w = self.working_size

        def resize_ids(ids):  # on compact indices, so any id survives the float interpolation exactly
            if not resize:
                return torch.from_numpy(ids)[None, None].to(self.device)
            values, index = np.unique(ids, return_inverse=True)
            t = torch.from_numpy(index.reshape(ids.shape))[None, None].float()
            resized = torch.nn.functional.interpolate(t, size=(h, w), mode="nearest").long()
            return torch.from_numpy(values)[resized].to(self.device)

        return tuple(resize_ids(ids) for ids in self.label_and_instance_ids(label_map, instance_map))

    def style_features(self, labels, instances, styles=None, instance_styles=None, style_image=None, seed=None):
        """(1, feat_num, H, W): one feature per instance, from `instance_styles[id]`, else
        `style_image` through the encoder, else the style bank's cluster `styles[class]` (an int,
        or "random"/absent for a random cluster drawn from (`seed`, instance id)). An instance's class
        is its majority label. Cost: linear in pixels, plus a constant per instance."""
        bank = self.style_bank
        feat_num = (bank or self.encoder).config.feat_num
        ids, inverse = torch.unique(instances[0, 0], return_inverse=True)
        inverse = inverse.flatten()
        per_class = torch.bincount(inverse * self.num_classes + labels[0, 0].flatten(),
                                   minlength=len(ids) * self.num_classes)
        majority = per_class.view(len(ids), self.num_classes).argmax(1).tolist()
        encoded = None
        if style_image is not None:
            if self.encoder is None:
                raise ValueError("style_image needs the pipeline's encoder, and this pipeline has none")
            h, w = labels.shape[-2:]
            photo = check_image(style_image, 0, self.max_pixels).convert("RGB").resize((w, h), Image.BICUBIC)
            x = torch.from_numpy(to_array(photo))[None].to(self.device, self.encoder.dtype) * 2 - 1
            factor = 2**self.encoder.config.n_downsampling
            features = run_padded(self.encoder.layers, x, factor, 2 * factor).float()[0].flatten(1).T  # (HW, feat)
            sums = torch.zeros(len(ids), feat_num, device=features.device).index_add_(0, inverse, features)
            encoded = sums / torch.bincount(inverse, minlength=len(ids))[:, None]
        seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else check_seed(seed)
        styles, instance_styles = styles or {}, instance_styles or {}
        self.check_style_ids(styles, instance_styles, majority, ids.tolist())
        vectors = torch.zeros(len(ids), feat_num, device=self.device)
        for k, (inst, cls) in enumerate(zip(ids.tolist(), majority)):
            choice = instance_styles.get(inst)
            if isinstance(choice, (list, tuple, np.ndarray, torch.Tensor)):
                vector = torch.as_tensor(choice, dtype=torch.float32, device=self.device)
                if vector.shape != (feat_num,) or not torch.isfinite(vector).all():
                    raise ValueError(f"instance_styles[{inst}]: a feature vector must be {feat_num} finite numbers, "
                                     f"got {choice!r}")
            elif encoded is not None and choice is None:
                vector = encoded[k]
            elif bank is not None:
                rng = np.random.default_rng([seed, inst])  # an instance's draw depends on nothing else
                vector = bank.style(cls, choice if choice is not None else styles.get(cls), rng)
            else:
                raise ValueError("this pipeline has no style bank: give style_image or feature vectors in instance_styles")
            if vector is not None:
                vectors[k] = vector.to(vectors)
        return vectors[inverse].T.reshape(1, feat_num, *labels.shape[-2:])

    def label_image(self, labels: np.ndarray) -> Image.Image:
        """(H, W) class ids -> an RGB image in the pipeline's palette (what the model reads)."""
        if self.config.palette is None:
            raise ValueError("this pipeline has no palette to draw label maps with")
        return Image.fromarray(np.asarray(self.config.palette, dtype=np.uint8)[labels])

    def check_style_ids(self, styles: dict, instance_styles: dict, classes: list[int], instances: list[int]) -> None:
        """A ValueError, listing what the map holds, for a style given to a class with no instance in
        it (`styles`, "random" excepted) or to an instance id it doesn't have (`instance_styles`)."""
        names = self.config.class_names or [str(c) for c in range(self.num_classes)]
        present = sorted(set(classes))
        absent = [c for c, choice in styles.items() if choice != "random" and c not in present]
        if absent:
            listed = ", ".join(f"{c} ({names[c]})" for c in present)
            raise ValueError(f"styles: class id(s) {absent} have no instance in this label map; "
                             f"its classes are {listed}")
        absent = [i for i in instance_styles if i not in set(instances)]
        if absent:
            listed = ", ".join(map(str, instances[:40]))
            listed += f", ... ({len(instances)} in all)" if len(instances) > 40 else ""
            raise ValueError(f"instance_styles: instance id(s) {absent} are not in these maps; "
                             f"their instances are {listed}")

    @torch.no_grad()
    def __call__(self, label_map, instance_map=None, styles: dict | None = None, instance_styles: dict | None = None,
                 style_image: Image.Image | None = None, seed: int | None = None, keep_size: bool = True,
                 size_mode: str = "resize", tile_size: int | tuple[int, int] | None = None,
                 tile_overlap: int | None = None):
        """Synthesise one image.

        Args:
            label_map: class ids (L/P/I image or (H, W) integer array) or an RGB image in the palette.
            instance_map: instance ids (non-negative), same size (optional).
            styles: {class id: cluster index or "random"} from the style bank.
            instance_styles: {instance id: cluster index, or a feature vector} for single instances.
            style_image: a photo whose encoded per-instance features set the styles.
            seed: draws the random clusters (an integer in [0, 2**64)); same seed and choices, same image.
            keep_size: resize the output to the label map's size (default) instead of the working size
                (`size_mode="resize"` only).
            size_mode: `resize` (default): maps resized to the working size, the output resized back.
                `native`: at the label map's own size, reflection-padded to the generator's multiple
                and cropped back. `tiled`: at its own size, tile by tile (`tile_size`, default the
                working size, tiles overlapping by `tile_overlap`, default a quarter tile, blended
                linearly); styles are drawn once for the whole map, so tiles agree.
        """
        seed = check_seed(seed)
        check_size_mode(size_mode)
        tile = tile_pair(tile_size, self.working_size)
        overlap = min(tile) // 4 if tile_overlap is None else tile_overlap
        labels, instances = self.prepare_maps(label_map, instance_map, resize=size_mode == "resize")
        y = check_finite(self.generate(labels, instances, styles, instance_styles, style_image, seed, size_mode,
                                       tile, overlap))
        out = to_pil(((y[0].float().cpu() + 1) / 2))
        size = (label_map.shape[1], label_map.shape[0]) if isinstance(label_map, np.ndarray) else label_map.size
        return out.resize(size, Image.BICUBIC) if keep_size and out.size != size else out

    @torch.no_grad()
    def generate(self, labels, instances, styles=None, instance_styles=None, style_image=None, seed=None,
                 size_mode: str = "resize", tile: tuple[int, int] | None = None, overlap: int = 0):
        """The generator on prepared maps ((1, 1, H, W) ids, see `prepare_maps`; at the working size
        for `size_mode="resize"`, any size for `native` and `tiled`): one-hot labels, boundary map
        and style features in -> (1, 3, H, W) in [-1, 1]."""
        parts = [one_hot(labels, self.num_classes)]
        if self.config.use_instance:
            parts.append(instance_boundaries(instances))
        if self.style_bank is not None or self.encoder is not None:
            parts.append(self.style_features(labels, instances, styles, instance_styles, style_image, seed))
        factor, minimum = size_rule(self.generator)
        with self.generator_runner() as net:
            return run_at_size(net, torch.cat(parts, 1).to(self.generator.dtype), size_mode, factor,
                               tile or self.working_size, overlap, minimum)

    def model_card(self, repo_id: str | None = None) -> str:
        return HD_MODEL_CARD.format(name=repo_id or "pix2pixHD pipeline", repo=repo_id or "path/to/pipeline",
                                    generator=type(self.generator).__name__, classes=self.config.label_nc)
