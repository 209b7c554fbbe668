"""Convert the reference pix2pix checkpoints (junyanz/pytorch-CycleGAN-and-pix2pix
`latest_net_G.pth` / `latest_net_D.pth`) to p2p models and pipelines.

    python -m p2p_models.convert --checkpoint latest_net_G.pth --output_dir facades_label2photo \
        --direction BtoA [--discriminator latest_net_D.pth]

The architecture (channels, ngf, depth, norm) is read off the state dict; dropout leaves no weights,
so `--no_dropout` says the generator was trained without it. Files load with
`torch.load(weights_only=True)`: no pickled code runs.
"""

import argparse
import os

import torch

from .pipelines import Pix2PixPipeline
from .pix2pix import PatchDiscriminator, UNetGenerator

StateDict = dict[str, torch.Tensor]


def load_reference_state_dict(path: str | os.PathLike) -> StateDict:
    """Read a reference `.pth` safely (tensors only) and strip a DataParallel `module.` prefix."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{path}: could not be read as a PyTorch state dict with weights_only=True ({e}). "
            "Expected a reference latest_net_G.pth / latest_net_D.pth."
        ) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _unet_prefix(level: int) -> str:
    """Key prefix of U-Net level `level` (0 = outermost) in the reference's nested blocks."""
    return "model.model." if level == 0 else "model.model.1.model." + "3.model." * (level - 1)


def unet_key_map(num_downs: int) -> dict[str, str]:
    """Our module path -> the reference's, per layer (parameters and buffers go under both)."""
    inner = num_downs - 1
    mapping = {}
    for k in range(num_downs):
        p = _unet_prefix(k)
        if k == 0:
            layers = {"down_blocks.0.conv": "0", "up_blocks.0.conv": "3"}
        elif k == inner:
            layers = {f"down_blocks.{k}.conv": "1", f"up_blocks.{k}.conv": "3", f"up_blocks.{k}.norm": "4"}
        else:
            layers = {
                f"down_blocks.{k}.conv": "1",
                f"down_blocks.{k}.norm": "2",
                f"up_blocks.{k}.conv": "5",
                f"up_blocks.{k}.norm": "6",
            }
        mapping.update({ours: p + idx for ours, idx in layers.items()})
    return mapping


def patch_key_map(model: PatchDiscriminator) -> dict[str, str]:
    """Same Sequential order in both; the reference names it `model` (`net` for the PixelGAN)."""
    ref = "net" if model.config.pixel else "model"
    return {f"layers.{i}": f"{ref}.{i}" for i in range(len(model.layers))}


def _remap(state: StateDict, model: torch.nn.Module, key_map: dict[str, str], source: str) -> StateDict:
    """Build `model`'s state dict from a reference one, failing on anything that doesn't fit.

    Tolerated, as the reference's own loader does: no `num_batches_tracked` (pre-0.4.1 files; set
    to 0) and InstanceNorm running stats (pre-0.4 files; dropped). Also tolerated: no conv biases in
    `norm=none` files (the reference omits them there; zero bias is the same function)."""
    remaining = dict(state)
    out = {}
    for name, ours in model.state_dict().items():
        layer, _, leaf = name.rpartition(".")
        key = f"{key_map[layer]}.{leaf}"
        if key in remaining:
            value = remaining.pop(key)
            if value.shape != ours.shape:
                raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, expected {tuple(ours.shape)}")
            out[name] = value.to(ours.dtype)
        elif leaf == "num_batches_tracked" or (leaf == "bias" and model.config.norm == "none"):
            out[name] = torch.zeros_like(ours)
        else:
            raise ValueError(f"{source}: missing {key} (for {name})")
    leftover = [k for k in remaining if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    if leftover or (remaining and model.config.norm != "instance"):
        raise ValueError(f"{source}: unexpected keys {sorted(remaining)[:8]} for this architecture")
    return out


def _norm_of(state: StateDict, norm_layer: str, conv: str) -> str:
    if f"{norm_layer}.weight" in state:
        return "batch"
    if f"{norm_layer}.running_mean" in state or f"{conv}.bias" in state:
        return "instance"
    return "none"


def unet_config_from_state_dict(state: StateDict, use_dropout: bool = True) -> dict:
    """UNetGenerator config of a reference `UnetGenerator` state dict."""
    if "model.model.0.weight" not in state:
        raise ValueError("not a reference UnetGenerator state dict (no model.model.0.weight)")
    num_downs = 1
    while f"{_unet_prefix(num_downs)}1.weight" in state:
        num_downs += 1
    first = state["model.model.0.weight"]
    return {
        "in_channels": first.shape[1],
        "out_channels": state["model.model.3.weight"].shape[1],
        "num_downs": num_downs,
        "ngf": first.shape[0],
        "norm": _norm_of(state, _unet_prefix(1) + "2", _unet_prefix(1) + "1"),
        "use_dropout": use_dropout,
    }


def patch_config_from_state_dict(state: StateDict) -> dict:
    """PatchDiscriminator config of a reference `NLayerDiscriminator` / `PixelDiscriminator` state dict."""
    if "net.0.weight" in state:
        first = state["net.0.weight"]
        norm = _norm_of(state, "net.3", "net.2")
        return {"in_channels": first.shape[1], "ndf": first.shape[0], "norm": norm, "pixel": True}
    if "model.0.weight" not in state:
        raise ValueError("not a reference NLayerDiscriminator/PixelDiscriminator state dict (no model.0.weight)")
    convs = {int(k.split(".")[1]) for k in state if k.endswith(".weight") and state[k].dim() == 4}
    first = state["model.0.weight"]
    return {
        "in_channels": first.shape[1],
        "ndf": first.shape[0],
        "n_layers": len(convs) - 2,
        "norm": _norm_of(state, "model.3", "model.2"),
    }


def load_reference_generator(checkpoint: str | os.PathLike | StateDict, use_dropout: bool = True) -> UNetGenerator:
    """A reference `latest_net_G.pth` (path or state dict) as a `UNetGenerator`."""
    source = "state dict" if isinstance(checkpoint, dict) else str(checkpoint)
    state = checkpoint if isinstance(checkpoint, dict) else load_reference_state_dict(checkpoint)
    model = UNetGenerator(**unet_config_from_state_dict(state, use_dropout))
    model.load_state_dict(_remap(state, model, unet_key_map(model.config.num_downs), source))
    return model.eval()


def load_reference_discriminator(checkpoint: str | os.PathLike | StateDict) -> PatchDiscriminator:
    """A reference `latest_net_D.pth` (path or state dict) as a `PatchDiscriminator`."""
    source = "state dict" if isinstance(checkpoint, dict) else str(checkpoint)
    state = checkpoint if isinstance(checkpoint, dict) else load_reference_state_dict(checkpoint)
    model = PatchDiscriminator(**patch_config_from_state_dict(state))
    model.load_state_dict(_remap(state, model, patch_key_map(model), source))
    return model.eval()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="reference latest_net_G.pth")
    parser.add_argument("--output_dir", required=True, help="where to write the pipeline folder")
    parser.add_argument("--discriminator", help="reference latest_net_D.pth, saved to <output_dir>/discriminator")
    parser.add_argument("--image_size", type=int, nargs="+", default=[256], help="working size: S or H W")
    parser.add_argument("--direction", choices=["AtoB", "BtoA"], default="AtoB")
    parser.add_argument("--no_dropout", action="store_true", help="the generator was trained with --no_dropout")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    generator = load_reference_generator(args.checkpoint, use_dropout=not args.no_dropout)
    size = args.image_size[0] if len(args.image_size) == 1 else args.image_size
    pipe = Pix2PixPipeline(generator=generator, image_size=size, direction=args.direction)
    pipe.save_pretrained(args.output_dir)
    if args.discriminator:
        load_reference_discriminator(args.discriminator).save_pretrained(os.path.join(args.output_dir, "discriminator"))
    print(f"wrote {args.output_dir}: {dict(generator.config)}")


if __name__ == "__main__":
    main()
