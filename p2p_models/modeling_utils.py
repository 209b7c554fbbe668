"""`P2PModelMixin`: diffusers' `ModelMixin` for the p2p models: a corrupt weights file named clearly,
weights saved with the permissions of the other files, casts without a warning about float32 modules."""

import json
import os
import struct
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


class P2PModelMixin(ModelMixin):
    """`ModelMixin` whose `from_pretrained` names a corrupt or truncated weights file clearly, whose
    `save_pretrained` leaves the weights readable like the config (safetensors writes them 0600), and
    whose `to` skips diffusers' warning that modules "should be kept in float32: []" (none are)."""

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
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (OSError, ValueError, RuntimeError) as e:
            folder = Path(pretrained_model_name_or_path)
            if kwargs.get("subfolder"):
                folder = folder / kwargs["subfolder"]
            for file in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
                try:
                    check_safetensors_file(file)
                except ValueError as bad:
                    raise bad from e
            raise
