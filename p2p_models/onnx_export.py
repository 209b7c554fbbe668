"""ONNX export of the generators (eval mode, or pix2pix's sampling mode with the dropout masks as inputs)
and an ONNX Runtime stand-in for them."""

import copy
import importlib.util
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import Dropout, dropout_mask
from .cpu import thread_niceness
from .modes import eval_mode, samples_with_batch_statistics, sampling_mode

MASKS_KEY = "p2p_dropout_masks"  # a sampling-mode graph's metadata: [[channels, downsampling, p], ...] per mask


def require(*packages: str) -> None:
    """Stop with the install command if an ONNX package (not in the runtime requirements) is missing."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(f"ONNX export and the onnxruntime backend need {', '.join(missing)} (not installed): "
                                  "pip install -r requirements-dev.txt -c constraints.txt")


class BatchStatisticsNorm(nn.Module):
    """A BatchNorm2d normalising with the batch's own statistics (pix2pix's sampling mode) for a batch of
    one image, which is an instance norm and exports to ONNX's InstanceNormalization: (1, C, H, W) -> (1, C, H, W)."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.eps, self.weight, self.bias = norm.eps, norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


class MaskedDropout(nn.Module):
    """Dropout (of probability `p`) by the next of the masks the graph is given, already scaled by
    1 / (1 - p): (B, C, H, W) -> (B, C, H, W). Called with a `ShapeProbe`, it records its input's shape."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, masks) -> torch.Tensor:
        if isinstance(masks, ShapeProbe):
            masks.append((x.shape, self.p))
            return x
        return x * masks.pop(0)


class ShapeProbe(list):
    """The input shapes and probabilities of the `MaskedDropout`s of one forward, in call order."""


class SampledGraph(nn.Module):
    """A pix2pix generator in its sampling mode (dropout on; BatchNorm with batch statistics, or the running
    statistics: `modes.samples_with_batch_statistics`) as an exportable graph: forward(x, *masks) with one
    dropout mask per `Dropout`, in call order."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.model = copy.deepcopy(generator).eval()
        batch_statistics = samples_with_batch_statistics(generator)
        for parent in list(self.model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.modules.batchnorm._BatchNorm) and batch_statistics:
                    setattr(parent, name, BatchStatisticsNorm(child))
                elif isinstance(child, Dropout):
                    setattr(parent, name, MaskedDropout(child.p))

    def forward(self, x: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
        return self.model(x, list(masks))

    def mask_shapes(self, x: torch.Tensor) -> list[tuple[int, int, float]]:
        """(channels, downsampling factor against `x`, dropout probability) of each mask, in call order."""
        probe = ShapeProbe()
        with torch.no_grad():
            self.model(x, probe)
        return [(shape[1], x.shape[-1] // shape[-1], p) for shape, p in probe]


def export_onnx(generator: nn.Module, path: str | os.PathLike, opset: int = 18, sampled: bool = False) -> None:
    """Write the generator in eval mode (dropout off, BatchNorm running statistics) to `path` with
    `torch.onnx.export` (dynamo): input `x` (batch, C_in, H, W), output `y` (batch, C_out, H, W),
    with dynamic batch, H and W (any multiples of the generator's `downsampling_factor` from its
    `min_size`, up to 4096). It is traced at two factors per side, so that no size is specialised.
    With `sampled`, a pix2pix generator's sampling mode instead (`SampledGraph`), for one image at a time
    (as the pipelines sample, and pix2pix's test runs; BatchNorms with batch statistics are instance norms
    then, with no transposes around them): inputs `x` (1, C_in, H, W) and `mask0`, `mask1`, ... (1, C_k, H / d_k,
    W / d_k), the dropout masks scaled by 1 / keep, which the caller draws (`OnnxGenerator`); their
    (C_k, d_k, p_k) are in the model's metadata (`MASKS_KEY`)."""
    require("onnx", "onnxscript")
    factor, minimum = generator.downsampling_factor, generator.min_size
    h, w = (torch.export.Dim(name, min=minimum // factor, max=4096 // factor) for name in ("h", "w"))
    batch = torch.export.Dim("batch", min=1, max=1024)
    x = torch.zeros(1, generator.config.in_channels, 2 * factor, 2 * factor, device=generator.device,
                    dtype=generator.dtype)
    model, args, masks = generator, (x,), []
    if sampled:
        model = SampledGraph(generator).eval()
        masks = model.mask_shapes(x)
        args += tuple(torch.ones(1, c, x.shape[2] // d, x.shape[3] // d, dtype=x.dtype, device=x.device)
                      for c, d, _ in masks)
    first = torch.export.Dim.STATIC if sampled else batch  # the sampling mode: one image
    shapes = [{0: first, 2: (factor // d) * h, 3: (factor // d) * w} for d in [1] + [d for _, d, _ in masks]]
    shapes = (shapes[0], tuple(shapes[1:])) if masks else (shapes[0],)  # as forward's (x, *masks)
    with eval_mode(generator), torch.no_grad():
        names = ["x"] + [f"mask{k}" for k in range(len(masks))]
        program = torch.onnx.export(model, args, dynamo=True, input_names=names, output_names=["y"],
                                    dynamic_shapes=shapes, opset_version=opset, verbose=False)
    if sampled:
        program.model.metadata_props[MASKS_KEY] = json.dumps(masks)
    program.save(str(path))


class OnnxGenerator:
    """An exported generator run by ONNX Runtime, called like the module:
    (B, C_in, H, W) float tensor -> (B, C_out, H, W) float32 tensor on the input's device. `sampled`:
    whether the file holds the sampling-mode graph (`export_onnx(sampled=True)`: batches of one image)
    or the eval-mode one."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        require("onnxruntime")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting between calls
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ValueError(f"{path}: could not be loaded by ONNX Runtime ({e}); expected a file from "
                             "`p2p export-onnx`") from e
        self.path = str(path)
        self.niceness = thread_niceness()  # its pool threads': the creating thread's
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.sampled = MASKS_KEY in metadata
        self.masks = json.loads(metadata.get(MASKS_KEY, "[]"))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A sampling-mode graph draws its dropout masks here, in the order of the generator's own
        `Dropout`s and as they draw them (`dropout_mask`), so a `generator` (or torch's global RNG)
        gives their masks."""
        if self.sampled and x.shape[0] != 1 and self.session.get_inputs()[0].shape[0] == 1:
            raise ValueError(f"{self.path} is the sampling-mode graph, which takes one image at a time (it "
                             f"normalises with that image's statistics), got a batch of {x.shape[0]}")
        feed = {"x": x.detach().float().cpu().numpy()}
        for k, (channels, factor, p) in enumerate(self.masks):
            shape = (x.shape[0], channels, x.shape[2] // factor, x.shape[3] // factor)
            feed[f"mask{k}"] = dropout_mask(shape, p, generator).numpy()
        y = self.session.run(["y"], feed)[0]
        return torch.from_numpy(y).to(x.device)


def parity(generator: nn.Module, onnx_generator: OnnxGenerator, height: int, width: int, seed: int = 0) -> float:
    """Max abs difference between the PyTorch generator and its ONNX Runtime export, in the export's
    mode, on random input of (1, C_in, height, width); a sampling-mode export draws its dropout
    masks from the same seed as the generator."""
    x = torch.randn(1, generator.config.in_channels, height, width, generator=torch.Generator().manual_seed(seed))
    if onnx_generator.sampled:
        with sampling_mode(generator), torch.no_grad():
            expected = generator(x.to(generator.device, generator.dtype),
                                 generator=torch.Generator(generator.device).manual_seed(seed)).float().cpu()
        actual = onnx_generator(x, torch.Generator().manual_seed(seed))
    else:
        with eval_mode(generator), torch.no_grad():
            expected = generator(x.to(generator.device, generator.dtype)).float().cpu()
        actual = onnx_generator(x)
    return float(np.abs(actual.numpy() - expected.numpy()).max())
