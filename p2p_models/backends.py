"""How a generator runs at inference: plain PyTorch, the fast CPU path (oneDNN-packed copies) in float32
or bf16, ONNX Runtime, or `auto`, the fastest of those measured on the CPU at hand. A layer below the
pipelines, which hold one `GeneratorBackend` each; it imports models' helpers (`cpu`, `modes`,
`optimize`, `onnx_export`), never the pipelines."""

import contextlib
import importlib.util
import json
import logging
import os
import re
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from .cpu import native_bf16, thread_niceness
from .modes import eval_mode, samples_with_batch_statistics, sampling_mode
from .onnx_export import OnnxGenerator, export_onnx
from .optimize import fast_cpu_copy

BACKENDS = ("torch", "fast", "bf16", "onnxruntime", "auto")
ONNX_PACKAGES = ("onnxruntime", "onnx", "onnxscript")  # what exporting and running an ONNX copy needs
TIMED_CALLS = 3  # `auto` times each candidate this many times, round-robin after a warm-up call, keeping the fastest,
MAX_TIMED_CALLS = 9  # and up to this many while the two fastest are within a factor `CLOSE` of each other
CLOSE = 1.1

logger = logging.getLogger(__name__)

# `auto`'s choices in this process: (model class, its config, input shape, deterministic) -> backend name
auto_choices: dict[tuple, str] = {}
_choosing = threading.Lock()


def weights_state(module: nn.Module) -> tuple:
    """What changes when `module`'s weights do (replaced or updated in place)."""
    return tuple((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers()))


def exported(module: nn.Module, deterministic: bool, folder: str) -> OnnxGenerator:
    """`module` exported to an ONNX file in `folder` (`export_onnx`: eval mode, or the sampling mode) and
    loaded in ONNX Runtime."""
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".onnx", delete=False) as file:
        path = Path(file.name)
    export_onnx(module, path, sampled=not deterministic)
    return OnnxGenerator(path)


def call_ms(net, x: torch.Tensor, kwargs: dict) -> float:
    """Milliseconds one call `net(x, **kwargs)` takes."""
    start = time.perf_counter()
    net(x, **kwargs)
    return 1000 * (time.perf_counter() - start)


class GeneratorBackend:
    """One way of running a generator (or pix2pixHD's encoder: any module taking (B, C_in, H, W)):

    - `torch`: plain PyTorch (the default).
    - `fast`: on a CPU in float32, a copy of the module with its convolution weights packed for
      oneDNN once per input shape, and BatchNorm folded into the convolutions for deterministic calls
      (`optimize.fast_cpu_copy`, rebuilt when the weights change). Same outputs as `torch` within 1e-4
      ([-1, 1] scale), same seeds; on CUDA or in half precision it is `torch`.
    - `bf16`: `fast` with the copy's convolutions in bfloat16 (norms in float32), float32 in and out:
      for CPUs that compute bf16 natively (`cpu.native_bf16`; elsewhere oneDNN emulates it, 40-100x
      slower, and a warning says so). Output PSNR against float32 >= 40 dB on the shipped models
      (`tests/test_backends.py`); same seeds (the same dropout masks). On CUDA or in half precision
      it is `torch`.
    - `onnxruntime`: the module in ONNX Runtime. Deterministic calls run the eval-mode graph, sampled
      calls the sampling-mode graph, given dropout masks drawn as the module's own `Dropout`s draw them
      (`export_onnx(sampled=True)`), so the same seeds give the `torch` backend's images within float
      error. `onnx_model` (a file from `p2p export-onnx`, with `--sampled` or without) serves the
      generator's calls of its mode; other graphs are exported on first use (the generator's, in
      eval mode, now, so that a failure shows here).
    - `auto`: on a CPU in float32, the fastest of `fast`, `bf16` (only where the CPU computes bf16
      natively) and `onnxruntime` (where `ONNX_PACKAGES` are installed), timed
      on the call's own input (`TIMED_CALLS` calls each, round-robin, more while the two fastest are
      within 10%: up to `MAX_TIMED_CALLS`) once per process per model class
      and config, input shape and mode (`auto_choices`); the choice and the timings are logged (one
      INFO line). Timing draws nothing from the caller's generator or torch's global RNG, so a seed
      gives what the chosen backend gives. On CUDA or in half precision it is `torch`.
    """

    def __init__(self, name: str = "torch", generator: nn.Module | None = None,
                 onnx_model: str | os.PathLike | None = None):
        if name not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
        if onnx_model is not None and name != "onnxruntime":
            raise ValueError("onnx_model is only used by the onnxruntime backend")
        if name == "bf16" and not native_bf16()[0]:
            warnings.warn(f"backend bf16: {native_bf16()[1]}; use fast or auto", UserWarning, stacklevel=3)
        self.name = name
        self._lock = threading.Lock()
        self._copies: dict[int, tuple[tuple, dict]] = {}  # id(module) -> (weights_state, {(kind, deterministic, nice): copy})
        self._onnx_files: dict[tuple[int, bool], OnnxGenerator] = {}  # (id(module), deterministic) -> `onnx_model`
        self._graphs: tempfile.TemporaryDirectory | None = None  # the ONNX files exported, kept for new sessions
        self.onnx_model_sampled: bool | None = None  # the mode `onnx_model` serves: sampled (True) or deterministic
        if name == "onnxruntime":
            if onnx_model is None:
                self._copy(generator, "onnxruntime", True)
                return
            session = OnnxGenerator(onnx_model)
            self.onnx_model_sampled = session.sampled
            self._onnx_files[id(generator), not session.sampled] = session
            channels = session.session.get_inputs()[0].shape[1]
            if channels != generator.config.in_channels:
                raise ValueError(f"{onnx_model}: the ONNX model takes {channels} channels, this pipeline's generator "
                                 f"{generator.config.in_channels}")

    def _copy(self, module: nn.Module, kind: str, deterministic: bool):
        """`module` made ready for backend `kind` (`fast`, `bf16`, `onnxruntime`), built once per module
        and mode and again when its weights change. An ONNX Runtime session's pool threads keep the
        niceness of the thread that created it, so sessions are kept per niceness of the calling thread:
        a call from a low-priority thread runs at low priority throughout."""
        nice = thread_niceness() if kind == "onnxruntime" else 0
        onnx_file = self._onnx_files.get((id(module), deterministic)) if kind == "onnxruntime" else None
        if onnx_file is not None and nice == onnx_file.niceness:
            return onnx_file
        state = weights_state(module)
        with self._lock:
            saved = self._copies.get(id(module))
            if saved is None or saved[0] != state:  # new or changed weights: new copies
                for copy in (saved or (None, {}))[1].values():  # (a session keeps its graph in memory)
                    if isinstance(copy, OnnxGenerator) and self._graphs and Path(copy.path).parent == Path(self._graphs.name):
                        Path(copy.path).unlink(missing_ok=True)  # sessions of two nicenesses share one
                saved = self._copies[id(module)] = (state, {})
            key = (kind, deterministic, nice)
            if key in saved[1]:
                return saved[1][key]
            if kind != "onnxruntime":
                saved[1][key] = fast_cpu_copy(module, deterministic, torch.bfloat16 if kind == "bf16" else torch.float32)
                return saved[1][key]
            graph = onnx_file or next((c for k, c in saved[1].items() if k[:2] == key[:2]), None)  # another niceness's
            if graph is None:
                self._graphs = self._graphs or tempfile.TemporaryDirectory(prefix="p2p-onnx-")
                saved[1][key] = exported(module, deterministic, self._graphs.name)
            else:
                saved[1][key] = OnnxGenerator(graph.path)
            return saved[1][key]

    @contextlib.contextmanager
    def _run(self, module: nn.Module, kind: str, deterministic: bool):
        """`module` as a callable for backend `kind` (not `auto`), in its mode."""
        if kind == "onnxruntime":  # its mode is in the graph
            yield self._copy(module, kind, deterministic)
            return
        batch_statistics = samples_with_batch_statistics(module)  # (a copy holds no config)
        if kind != "torch":
            module = self._copy(module, kind, deterministic)
        with eval_mode(module) if deterministic else sampling_mode(module, batch_statistics):
            yield module

    @contextlib.contextmanager
    def runner(self, module: nn.Module, deterministic: bool = True):
        """`module` as a callable for this backend: (B, C_in, H, W) -> (B, C_out, H, W), in eval mode if
        `deterministic`, else in `sampling_mode`."""
        kind = self.name
        if kind in ("fast", "bf16", "auto") and (module.device.type != "cpu" or module.dtype != torch.float32):
            kind = "torch"
        if kind != "auto":
            with self._run(module, kind, deterministic) as net:
                yield net
            return

        def run(x: torch.Tensor, **kwargs) -> torch.Tensor:
            with self._run(module, self.choice(module, x, deterministic, kwargs), deterministic) as net:
                return net(x, **kwargs)

        yield run

    def choice(self, module: nn.Module, x: torch.Tensor, deterministic: bool, kwargs: dict | None = None) -> str:
        """The backend `auto` runs `module` with on `x`: from `auto_choices`, else timed now (see the class)."""
        config = {k: v for k, v in dict(getattr(module, "config", {})).items() if not k.startswith("_")}  # not its path
        config = json.dumps(config, sort_keys=True, default=str)
        key = (type(module).__name__, config, tuple(x.shape), deterministic)
        if key not in auto_choices:
            with _choosing:
                if key not in auto_choices:
                    auto_choices[key] = self._measure(module, x, deterministic, kwargs or {})
        return auto_choices[key]

    def _measure(self, module: nn.Module, x: torch.Tensor, deterministic: bool, kwargs: dict) -> str:
        """Time each candidate backend on `x` (`call_ms`; torch's global RNG restored afterwards) and log
        the fastest, with the timings and why others weren't tried."""
        candidates, notes = ["fast"], []
        native, why = native_bf16()
        if native:
            candidates.append("bf16")
        else:
            notes.append(f"bf16 not tried: {why}")
        missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            notes.append(f"onnxruntime not tried: {', '.join(missing)} not installed")
        else:
            candidates.append("onnxruntime")
        if "generator" in kwargs:  # dropout masks from a generator of the measurement's own
            kwargs = {**kwargs, "generator": torch.Generator(x.device).manual_seed(0)}
        nets, ms = {}, {}
        with contextlib.ExitStack() as stack, torch.random.fork_rng(devices=[]):
            for kind in candidates:
                try:
                    nets[kind] = stack.enter_context(self._run(module, kind, deterministic))
                    nets[kind](x, **kwargs)  # warm-up: builds the copy, packs its weights at this shape
                except Exception as e:  # e.g. a module ONNX can't export: the others still compete
                    if kind == "fast":
                        raise
                    nets.pop(kind, None)
                    message = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().split("\n")[0][:200]  # no colour codes
                    notes.append(f"{kind} failed: {type(e).__name__}: {message}")
            for calls in range(1, MAX_TIMED_CALLS + 1):  # round-robin, so that other load on the CPU slows them alike
                for kind, net in nets.items():
                    ms[kind] = min(ms.get(kind, float("inf")), call_ms(net, x, kwargs))
                fastest = sorted(ms.values())
                if calls >= TIMED_CALLS and (len(fastest) == 1 or fastest[1] > CLOSE * fastest[0]):
                    break
        best = min(ms, key=ms.get)
        timings = ", ".join(f"{kind} {t:.1f} ms" for kind, t in ms.items())
        mode = "deterministic" if deterministic else "sampled"
        logger.info(f"backend auto: {best} for {type(module).__name__} at {tuple(x.shape)}, {mode} ({timings}; "
                    f"fastest of {calls} calls each after a warm-up){''.join('; ' + n for n in notes)}")
        return best
