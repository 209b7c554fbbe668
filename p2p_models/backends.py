"""How a generator runs at inference: plain PyTorch, the fast CPU path (oneDNN-packed copies) or ONNX
Runtime. A layer below the pipelines, which hold one `GeneratorBackend` each; it imports models'
helpers (`modes`, `optimize`, `onnx_export`), never the pipelines."""

import contextlib
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .modes import eval_mode, paper_test_mode
from .onnx_export import OnnxGenerator, export_onnx
from .optimize import fast_cpu_copy

BACKENDS = ("torch", "fast", "onnxruntime")


class GeneratorBackend:
    """One way of running a generator:

    - `torch`: plain PyTorch (the default).
    - `fast`: on a CPU in float32, a copy of the generator with its convolution weights packed for
      oneDNN once per input shape, and BatchNorm folded into the convolutions for deterministic calls
      (`optimize.fast_cpu_copy`, rebuilt when the weights change). Same outputs as `torch` within 1e-4
      ([-1, 1] scale), same seeds; on CUDA or in half precision it is `torch`.
    - `onnxruntime`: `generator` in eval mode in ONNX Runtime: `onnx_model` (a file written by
      `p2p export-onnx`), or exported now. Deterministic calls only.
    """

    def __init__(self, name: str = "torch", generator: nn.Module | None = None,
                 onnx_model: str | os.PathLike | None = None):
        if name not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
        if onnx_model is not None and name != "onnxruntime":
            raise ValueError("onnx_model is only used by the onnxruntime backend")
        self.name = name
        self.onnx = None
        self._fast = None  # (the weights' state, {deterministic: packed copy})
        if name == "onnxruntime":
            if onnx_model is None:
                onnx_model = Path(tempfile.mkdtemp(prefix="p2p-onnx-")) / "generator.onnx"
                export_onnx(generator, onnx_model)
            self.onnx = OnnxGenerator(onnx_model)
            channels = self.onnx.session.get_inputs()[0].shape[1]
            if channels != generator.config.in_channels:
                raise ValueError(f"{onnx_model}: the ONNX model takes {channels} channels, this pipeline's generator "
                                 f"{generator.config.in_channels}")

    @contextlib.contextmanager
    def runner(self, module: nn.Module, deterministic: bool = True):
        """`module` as a callable for this backend: (B, C_in, H, W) -> (B, C_out, H, W), in eval mode if
        `deterministic`, else in `paper_test_mode`."""
        if self.onnx is not None:
            if not deterministic:
                raise ValueError("the onnxruntime backend runs the exported eval-mode generator (no dropout, running "
                                 "BatchNorm statistics): use deterministic=True, or the torch or fast backend")
            yield self.onnx
            return
        if self.name == "fast" and module.device.type == "cpu" and module.dtype == torch.float32:
            state = (id(module), *((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers())))
            if self._fast is None or self._fast[0] != state:  # new or changed weights: new copies
                self._fast = (state, {})
            copies = self._fast[1]
            if deterministic not in copies:
                copies[deterministic] = fast_cpu_copy(module, deterministic)
            module = copies[deterministic]
        with (eval_mode if deterministic else paper_test_mode)(module):
            yield module
