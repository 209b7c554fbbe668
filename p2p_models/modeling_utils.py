"""`P2PModelMixin`: diffusers' `ModelMixin` for the p2p models: a corrupt weights file, a missing tensor
or a config value of the wrong type named clearly, weights saved with the permissions of the other files,
casts without a warning about float32 modules."""

import inspect
import json
import os
import struct
import types
import typing
from pathlib import Path

import torch
from diffusers import ModelMixin
from diffusers.hooks.group_offloading import _is_group_offload_enabled


def default_file_mode() -> int:
    """The mode `open()` gives a new file under the process's umask (0o644 under the usual 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_safetensors_file(path: str | os.PathLike) -> None:
    """Raise a ValueError naming `path` if it is not a complete safetensors file."""
    path = Path(path)
    size = path.stat().st_size
    problem = None
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            problem = f"only {size} bytes long"
        else:
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                problem = f"its header claims {header_len} bytes but the file has {size}"
            else:
                try:
                    header = json.loads(f.read(header_len))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    problem = f"its header is not valid JSON ({e})"
                else:
                    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
                    if 8 + header_len + end != size:
                        problem = f"it should be {8 + header_len + end} bytes long but is {size} (truncated?)"
    if problem:
        raise ValueError(
            f"{path} is not a valid safetensors file: {problem}. Re-download it, or save the model again."
        )


def matches(value, hint) -> bool:
    """Whether a config value (as JSON gives it: lists for tuples) has the annotated type `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(matches, value, args))
        return not args or all(matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and (not args or all(matches(k, args[0]) and matches(v, args[1])
                                                            for k, v in value.items()))
    if hint is type(None):
        return value is None
    return not isinstance(hint, type) or isinstance(value, hint)


def check_config_types(cls: type, config: dict) -> None:
    """A ValueError naming the first of `config`'s values whose type is not the one `cls.__init__`
    annotates for it (e.g. `ngf: "64"`, or `use_dropout: "no"`, which would be taken as true)."""
    hints = typing.get_type_hints(cls.__init__)
    for key in inspect.signature(cls.__init__).parameters:
        if key in config and key in hints and not matches(config[key], hints[key]):
            expected = getattr(hints[key], "__name__", str(hints[key]))
            raise ConfigTypeError(f"{cls.__name__} config: {key} must be {expected}, got {config[key]!r} "
                                  f"({type(config[key]).__name__})")


class ConfigTypeError(ValueError):
    """A config value of the wrong type."""


class P2PModelMixin(ModelMixin):
    """`ModelMixin` whose `from_pretrained` names a corrupt or truncated weights file, a tensor the file
    lacks and a config value of the wrong type (`from_config` checks them), whose `save_pretrained`
    leaves the weights readable like the config (safetensors writes them 0600), and whose `to` skips
    diffusers' warning that modules "should be kept in float32: []" (none are)."""

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        check_config_types(cls, {**(config or {}), **kwargs})
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        for weights in Path(save_directory).glob("*.safetensors"):
            weights.chmod(default_file_mode())

    def to(self, *args, **kwargs):
        if self._keep_in_fp32_modules or getattr(self, "is_quantized", False) or _is_group_offload_enabled(self):
            return super().to(*args, **kwargs)
        return torch.nn.Module.to(self, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        folder = Path(pretrained_model_name_or_path)
        if kwargs.get("subfolder"):
            folder = folder / kwargs["subfolder"]
        wants_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, output_loading_info=True, **kwargs)
        except ConfigTypeError as e:
            raise ConfigTypeError(f"{folder / 'config.json'}: {e}") from None
        except (OSError, ValueError, RuntimeError) as e:
            weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
            for file in weights:
                try:
                    check_safetensors_file(file)
                except ValueError as bad:
                    raise bad from e
            if (folder / "config.json").is_file() and not weights and not any(folder.glob("*.bin")):
                raise OSError(f"{folder}: no weights file (diffusion_pytorch_model.safetensors) beside its "
                              "config.json; save the model again") from e
            raise
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            weights = next(iter(sorted(folder.glob("*.safetensors"))), folder)
            raise ValueError(f"{weights}: lacks {len(missing)} of {cls.__name__}'s {len(model.state_dict())} "
                             f"tensors, e.g. {', '.join(missing[:3])}; the file is incomplete or belongs to another "
                             "config. Save the model again.")
        return (model, info) if wants_info else model
