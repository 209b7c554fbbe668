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
from .pix2pix import UNetGenerator

RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
HUB_FILES = ["model_index.json", "README.md", "*/config.json", "*/*.safetensors", "*/*.safetensors.index.json"]
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")

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
CVPR 2017) in the [p2p](https://github.com/) format: `model_index.json` plus a `generator/` folder
(`UNetGenerator`, safetensors).

```python
from PIL import Image
from p2p_models import Pix2PixPipeline

pipe = Pix2PixPipeline.from_pretrained("{repo}")
out = pipe(Image.open("input.png"), seed=0)
```

Working size {size}, direction {direction}, generator: {generator}.
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


def check_image(image, index: int) -> Image.Image:
    """Validate one input: an 8-bit PIL image with no transparent pixels."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"image {index}: expected a PIL.Image.Image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image {index}: is empty ({image.width}x{image.height})")
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


class Pix2PixPipeline(DiffusionPipeline):
    """pix2pix image-to-image translation.

    Components: `generator` (`UNetGenerator`).
    Config (`model_index.json`): `image_size` (int or [height, width], the working size, divisible by
    2**num_downs), `direction` (`AtoB` | `BtoA`, which side of a paired dataset is the input; for
    reference only), `resample` (filter used to resize inputs to the working size) and
    `color_space`: `rgb` (1 or 3 channels in and out, pixel values mapped to [-1, 1] as in training)
    or `lab` (colorization: the generator maps L (1 channel, L/50 - 1) to ab (2 channels, ab/110)).

    Images of any size and aspect ratio are resized to the working size, translated, and the result
    resized back to the input's size (`keep_size=False` returns the working size). In `lab` mode the
    predicted ab is upsampled and recombined with the input's full-resolution L channel.
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
        factor = 2 ** generator.config.num_downs
        if len(size) != 2 or any(s < 1 or s % factor for s in size):
            raise ValueError(
                f"image_size {image_size} must be one or two positive sizes divisible by 2**num_downs = {factor}"
            )
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

    @property
    def working_size(self) -> tuple[int, int]:
        """(height, width) the generator runs at."""
        size = self.config.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images -> (B, C, H, W) generator input at the working size: [-1, 1] pixels, or L/50 - 1."""
        lab = self.config.color_space == "lab"
        mode = "L" if self.generator.config.in_channels == 1 and not lab else "RGB"
        h, w = self.working_size
        arrays = []
        for i, image in enumerate(images):
            image = check_image(image, i).convert(mode).resize((w, h), RESAMPLE[self.config.resample])
            arrays.append(to_array(image))
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
                working size.

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
        x = self.preprocess(images)
        if deterministic:
            with eval_mode(self.generator):
                y = self.generator(x)
        else:
            outputs = []
            with paper_test_mode(self.generator):
                for xi, si in zip(x, seeds):
                    with self._seeded(si):
                        outputs.append(self.generator(xi[None]))
            y = torch.cat(outputs)
        out = self.postprocess(y, images, keep_size)
        return out[0] if single else out

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
                commit_message=commit_message or "Upload Pix2PixPipeline",
                create_pr=create_pr,
            )
