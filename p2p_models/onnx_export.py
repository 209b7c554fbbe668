"""ONNX export of the generators (eval mode) and an ONNX Runtime stand-in for them."""

import importlib.util
import os

import numpy as np
import torch
from torch import nn

from .modes import eval_mode


def require(*packages: str) -> None:
    """Stop with the install command if an ONNX package (not in the runtime requirements) is missing."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(f"ONNX export and the onnxruntime backend need {', '.join(missing)} (not installed): "
                                  "pip install -r requirements-dev.txt -c constraints.txt")


def export_onnx(generator: nn.Module, path: str | os.PathLike, opset: int = 18) -> None:
    """Write the generator in eval mode (dropout off, BatchNorm running statistics) to `path` with
    `torch.onnx.export` (dynamo): input `x` (batch, C_in, H, W), output `y` (batch, C_out, H, W),
    with dynamic batch, H and W (any multiples of the generator's `downsampling_factor` from its
    `min_size`, up to 4096). It is traced at two factors per side, so that no size is specialised."""
    require("onnx", "onnxscript")
    factor, minimum = generator.downsampling_factor, generator.min_size
    dims = [factor * torch.export.Dim(name, min=minimum // factor, max=4096 // factor) for name in ("h", "w")]
    x = torch.zeros(1, generator.config.in_channels, 2 * factor, 2 * factor, device=generator.device,
                    dtype=generator.dtype)
    shapes = ({0: torch.export.Dim("batch", min=1, max=1024), 2: dims[0], 3: dims[1]},)  # by position: any arg name
    with eval_mode(generator), torch.no_grad():
        torch.onnx.export(generator, (x,), str(path), dynamo=True, input_names=["x"], output_names=["y"],
                          dynamic_shapes=shapes, opset_version=opset, verbose=False)


class OnnxGenerator:
    """An exported generator run by ONNX Runtime, called like the module:
    (B, C_in, H, W) float tensor -> (B, C_out, H, W) float32 tensor on the input's device."""

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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.session.run(["y"], {"x": x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(y).to(x.device)


def parity(generator: nn.Module, onnx_generator: OnnxGenerator, height: int, width: int, seed: int = 0) -> float:
    """Max abs difference between the eval-mode PyTorch generator and its ONNX Runtime export on
    random input of (1, C_in, height, width)."""
    x = torch.randn(1, generator.config.in_channels, height, width, generator=torch.Generator().manual_seed(seed))
    with eval_mode(generator), torch.no_grad():
        expected = generator(x.to(generator.device, generator.dtype)).float().cpu()
    return float(np.abs(onnx_generator(x).numpy() - expected.numpy()).max())
