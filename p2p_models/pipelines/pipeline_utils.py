"""`P2PPipeline`: the Hub plumbing and call checks the p2p pipelines share (how the generator runs is
`backends.GeneratorBackend`)."""

import importlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from huggingface_hub import HfApi, snapshot_download
from torch import nn

from ..backends import GeneratorBackend
from ..modeling_utils import check_config_types
from .hub_utils import (
    HUB_FILES,
    check_local_folder,
    drop_local_paths,
    is_component_entry,
    is_p2p_component,
    write_loader_code,
)
from .image_processor import MAX_PIXELS
from .model_cards import updated_card

MAX_SEED = 2**64  # seeds lie in [0, MAX_SEED): what both torch and numpy accept


def check_seed(seed) -> int | None:
    """`seed` as an int in [0, 2**64), or None; a clear error otherwise."""
    if seed is None:
        return None
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    return int(seed)


def seeded_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` for an integer seed in [0, 2**64), taken exactly. Torch's CPU
    generator keeps only a seed's low 32 bits, so the high 32, mixed (MurmurHash3's finaliser, a
    bijection keeping 0), are XORed into them: every bit changes the noise, and a seed below 2**32
    gives what `manual_seed(seed)` gives."""
    seed = check_seed(seed)
    high = seed >> 32
    for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        high = ((high ^ (high >> shift)) * factor) & 0xFFFFFFFF
    high ^= high >> 16
    return torch.Generator(device).manual_seed((seed & 0xFFFFFFFF) ^ high)


def prepare_generators(generator, seed, count: int, device: str | torch.device = "cpu") -> list:
    """One `torch.Generator` (or None: torch's global RNG) per image: `generator` (one, shared by the
    images in turn, or a list of one per image), or the deprecated `seed` (an int or one per image,
    shorthand for `seeded_generator(seed, device)`)."""
    if generator is not None and seed is not None:
        raise ValueError("pass generator or seed, not both (seed=s is shorthand for a generator seeded with s)")
    if seed is not None:
        warnings.warn("seed= is deprecated: pass generator=torch.Generator().manual_seed(seed) (or a list of one "
                      "generator per image), as in diffusers", FutureWarning, stacklevel=4)
        if isinstance(seed, (list, tuple)):
            if len(seed) != count:
                raise ValueError(f"seed: got {len(seed)} seeds for {count} images")
            generator = [seeded_generator(s, device) for s in seed]
        else:
            generator = seeded_generator(seed, device)
    generators = list(generator) if isinstance(generator, (list, tuple)) else [generator] * count
    if len(generators) != count:
        raise ValueError(f"generator: got a list of {len(generators)} generators for {count} images (one per image)")
    for g in generators:
        if g is not None and not isinstance(g, torch.Generator):
            raise TypeError(f"generator: expected a torch.Generator or a list of them, got {type(g).__name__}")
    return generators


def check_diffusion_arguments(num_inference_steps: int | None, callback_on_step_end) -> None:
    """What a one-step GAN pipeline does with diffusers' step arguments: `num_inference_steps` is
    accepted and ignored with a warning (the generator makes the image in one forward pass), a
    `callback_on_step_end` is refused (there are no steps to call it between)."""
    if num_inference_steps is not None:
        warnings.warn(f"num_inference_steps={num_inference_steps} is ignored: a GAN generator makes the image in one "
                      "forward pass, there are no denoising steps", UserWarning, stacklevel=3)
    if callback_on_step_end is not None:
        raise ValueError("callback_on_step_end: a GAN pipeline has no denoising steps to call back between (its "
                         "generator runs once); work on the returned images instead")


def generator_on(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """`generator` if it is on `device` (or None), else a new generator there seeded with a number
    drawn from it (so reusing `generator` still gives new noise)."""
    if generator is None or (generator.device.type, generator.device.index or 0) == (device.type, device.index or 0):
        return generator
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, device=generator.device))
    return torch.Generator(device).manual_seed(seed)


def check_finite(output: torch.Tensor) -> torch.Tensor:
    """The generator's output, or an error if it holds NaN or infinite values (black images otherwise)."""
    if not torch.isfinite(output).all():
        raise ValueError(
            "the generator produced NaN or infinite values: its weights are corrupt, or the dtype overflowed "
            "(try float32)"
        )
    return output


def size_rule(generator: nn.Module) -> tuple[int, int]:
    """Deprecated: `(generator.downsampling_factor, generator.min_size)`, which each model states."""
    warnings.warn("size_rule(generator) is deprecated: use generator.downsampling_factor and generator.min_size",
                  FutureWarning, stacklevel=2)
    return generator.downsampling_factor, generator.min_size


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
    save (the one it was loaded with, kept), and `push_to_hub` as `save_pretrained` + one upload.
    Subclasses define `card_tags` and `new_model_card`. Each of its overrides of `DiffusionPipeline`
    starts with the one line of what diffusers can't do for a pipeline whose components live in
    another library.

    `generator` names two things, as in any GAN pipeline: the component `pipe.generator` (the
    network; the `generator/` folder and model_index.json key of every saved pipeline) and
    `__call__`'s `generator=` (a `torch.Generator`, diffusers' name). Neither is renamed: saved folders
    are loaded by diffusers itself (`trust_remote_code`), which passes each folder's components to
    `__init__` by their saved names, so an old name could not be aliased there.

    `max_pixels` (default 4096 * 4096) refuses larger inputs before they are decoded or processed,
    whatever the `size_mode`; set it on an instance (`pipe.max_pixels = None` lifts it).
    `set_backend` picks how the generator runs (plain PyTorch, the fast CPU path in float32 or bf16, ONNX
    Runtime, or `auto`: the fastest of those on the CPU at hand)."""

    max_pixels: int | None = MAX_PIXELS
    generator_modes: tuple[bool, ...] = (True,)  # the `deterministic` values its calls run the generator in
    card_tags: list[str] = []
    _loaded_card: str | None = None  # the README.md `from_pretrained` found, which `save_pretrained` keeps
    _backend = GeneratorBackend()  # plain PyTorch, which holds no state; `set_backend` gives an instance its own

    @property
    def backend(self) -> str:
        """How the generator runs: one of `BACKENDS` (see `set_backend`)."""
        return self._backend.name

    def set_backend(self, backend: str = "torch", onnx_model: str | os.PathLike | None = None) -> None:
        """How the generator (and pix2pixHD's encoder) runs: `torch` (plain PyTorch, the default), `fast`
        (CPU float32: packed oneDNN convolutions, BatchNorm folded for deterministic calls; the same outputs
        within 1e-4 and the same seeds), `bf16` (`fast` in bfloat16, for CPUs that compute it natively;
        PSNR >= 40 dB against float32, the same seeds), `onnxruntime` (the eval-mode generator exported, or
        `onnx_model` from `p2p export-onnx`; sampled calls: the sampling-mode graph, the same seeds) or
        `auto` (the fastest of `fast`, `bf16` where native and `onnxruntime` where installed, timed once
        per process per model config and input shape, the choice logged). See `backends.GeneratorBackend`."""
        self._backend = GeneratorBackend(backend, self.generator, onnx_model)

    def optimize_for_inference(self, device: str | torch.device | None = None):
        """Move to the fastest place that keeps quality and return the pipeline: CUDA (or `device`)
        in float16 when there is one, else the CPU in float32 with the `auto` backend."""
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda":
            return self.to(device, torch.float16)
        self.to(device, torch.float32).set_backend("auto")
        return self

    def warm_up(self):
        """Get the backend ready now for calls at the working size (the default `size_mode`) rather than at
        the first call: the generator run once on zeros (1, C_in, H, W) in each of `generator_modes`, so
        that `auto` has timed its candidates and built their copies and exports. Returns the pipeline."""
        x = torch.zeros(1, self.generator.config.in_channels, *self.working_size, device=self.device,
                        dtype=self.generator.dtype)
        for deterministic in self.generator_modes:
            kwargs = {} if deterministic else {"generator": torch.Generator(self.device).manual_seed(0)}
            with self.generator_runner(deterministic) as net, torch.no_grad():
                net(x, **kwargs)
        return self

    def enable_model_cpu_offload(self, *args, **kwargs):
        """Why overridden: offloading frees nothing for a one-pass generator, so it is refused with the reason."""
        raise NotImplementedError(
            "enable_model_cpu_offload: a p2p pipeline's weights are one generator (plus, for pix2pixHD, a small "
            "encoder) needed all at once for its single forward pass, so offloading frees no accelerator memory; "
            "use pipe.to('cuda') (or optimize_for_inference()), or run on the CPU")

    def enable_sequential_cpu_offload(self, *args, **kwargs):
        """Why overridden: as `enable_model_cpu_offload`."""
        self.enable_model_cpu_offload()

    def generator_runner(self, deterministic: bool = True, module: nn.Module | None = None):
        """The generator (or `module`: pix2pixHD's encoder) as a callable for the current backend, a
        context manager: (B, C_in, H, W) -> (B, C_out, H, W), in eval mode if `deterministic`, else in
        `sampling_mode`."""
        return self._backend.runner(self.generator if module is None else module, deterministic)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Why overridden: diffusers would run the folder's loader modules (asking for trust_remote_code).

        Load the pipeline class a folder or Hub repo names in its model_index.json (a Hub repo is
        downloaded with `snapshot_download`: `revision`, `cache_dir`, `token`, `local_files_only` and
        `force_download` are passed on; its .py files are neither downloaded nor run). `torch_dtype`
        (or `dtype`), `variant` and `use_safetensors` apply to every component. A name meant as a
        folder (`hub_utils.looks_local`) that is none fails at once ("no such folder")."""
        folder = str(pretrained_model_name_or_path)
        check_local_folder(folder)
        if not os.path.isdir(folder):
            names = ("revision", "cache_dir", "token", "local_files_only", "force_download")
            download = {k: kwargs.pop(k) for k in names if k in kwargs}
            folder = snapshot_download(folder, allow_patterns=HUB_FILES, **download)
        index = cls.load_config(folder)
        name = index.get("_class_name")
        target = getattr(importlib.import_module("p2p_models.pipelines"), str(name), None)
        if not (isinstance(target, type) and issubclass(target, P2PPipeline)):
            raise ValueError(f"{pretrained_model_name_or_path}: model_index.json names {name!r}, which is not a p2p "
                             "pipeline (Pix2PixPipeline or Pix2PixHDPipeline)")
        if issubclass(cls, target):  # a subclass of the folder's class loads as itself
            target = cls
        try:
            check_config_types(target, {k: v for k, v in index.items() if not is_component_entry(v)})
        except ValueError as e:
            raise ValueError(f"{pretrained_model_name_or_path}/model_index.json: {e}") from None
        # p2p components are loaded here: DiffusionPipeline would run the folder's `<component>/<module>.py`.
        dtype = kwargs.pop("torch_dtype", None) or kwargs.pop("dtype", None)
        shared = {k: kwargs[k] for k in ("variant", "use_safetensors") if k in kwargs}
        for component, entry in index.items():
            if component in kwargs or not is_p2p_component(entry):
                continue
            model_class = getattr(importlib.import_module(entry[0]), entry[1])
            component_dtype = dtype.get(component, dtype.get("default")) if isinstance(dtype, dict) else dtype
            kwargs[component] = model_class.from_pretrained(folder, subfolder=component, dtype=component_dtype,
                                                            **shared)
        pipe = super(P2PPipeline, target).from_pretrained(folder, **kwargs)
        pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        card = Path(folder) / "README.md"
        pipe._loaded_card = card.read_text() if card.is_file() else None
        return pipe

    @classmethod
    def load_config(cls, *args, **kwargs):
        """Why overridden: diffusers reads `_class_name` [module, class] as a pipeline file to run, p2p as a class.

        `ConfigMixin.load_config`, with model_index.json's `_class_name` as the class name alone (the one
        place it is unwrapped; `hub_utils.write_loader_code` writes it)."""
        out = super().load_config(*args, **kwargs)
        config = out[0] if isinstance(out, tuple) else out
        name = config.get("_class_name")
        if isinstance(name, (list, tuple)) and len(name) == 2:
            config["_class_name"] = name[1]
        return out

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Why overridden: diffusers writes neither our model card nor the loader files trust_remote_code needs.

        `DiffusionPipeline.save_pretrained`, plus a model card (README.md: `model_card()`; a new
        pipeline saved into a folder with a card leaves that card alone), and the files
        `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` needs (see
        `hub_utils.write_loader_code`), without local paths (`hub_utils.drop_local_paths`)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        write_loader_code(save_directory)
        drop_local_paths(save_directory)
        card = Path(save_directory) / "README.md"
        if self._loaded_card is not None or not card.exists():
            card.write_text(self.model_card())

    def model_card(self, repo_id: str | None = None) -> str:
        """The model card (README.md) `save_pretrained` and `push_to_hub` write: the one this pipeline
        was loaded with, kept with its metadata brought up to date and its usage code naming `repo_id`
        (`model_cards.updated_card`); for a new pipeline, one describing its config (`new_model_card`)."""
        if self._loaded_card is not None:
            return updated_card(self._loaded_card, self.card_tags, repo_id)
        return self.new_model_card(repo_id or "path/to/pipeline")

    def new_model_card(self, repo_id: str) -> str:
        """A card for a pipeline that has none, loaded from `repo_id`; defined by each pipeline."""
        raise NotImplementedError

    def config_for_card(self) -> tuple[dict, dict[str, tuple[str, dict]]]:
        """The settings in model_index.json, and each component's class and config, without the private
        (`_`) keys: what a new card records."""
        public = lambda config: {k: v for k, v in dict(config).items() if not k.startswith("_")}  # noqa: E731
        components = {name: (type(module).__name__, public(module.config))
                      for name, module in self.components.items() if module is not None}
        return {k: v for k, v in public(self.config).items() if k not in self.components}, components

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
        """Why overridden: diffusers' push writes its generic card (or the Hub repo's) as README.md, not ours.

        Save the pipeline to a temporary folder with `save_pretrained` and upload that folder as
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

