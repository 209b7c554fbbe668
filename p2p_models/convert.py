"""Convert reference checkpoints to p2p models and pipelines:
pix2pix (junyanz/pytorch-CycleGAN-and-pix2pix `latest_net_G.pth` / `latest_net_D.pth`) and
pix2pixHD (NVIDIA/pix2pixHD global or local `latest_net_G.pth`, `latest_net_E.pth`,
`latest_net_D.pth`, `features_clustered_010.npy`). Which one a generator file is, is read off it.

    p2p convert --checkpoint latest_net_G.pth --output_dir facades_label2photo \
        --direction BtoA [--discriminator latest_net_D.pth]
    p2p convert --checkpoint latest_net_G.pth --output_dir label2city_1024p \
        --label_nc 35 --image_size 1024 2048 [--encoder latest_net_E.pth \
        --features features_clustered_010.npy --allow_pickle]

Architectures (channels, widths, depths, norm) are read off the state dicts; dropout leaves no
weights, so `--no_dropout` says a pix2pix generator was trained without it. `.pth` files load with
`torch.load(weights_only=True)`: no pickled code runs. The reference's cluster file is a pickled
dict; it is only read with `--allow_pickle`, since unpickling a file can run code.
`python -m p2p_models.convert` takes the same options.
"""

import argparse
import glob
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .labels import class_count
from .pipelines import Pix2PixHDPipeline, Pix2PixPipeline
from .pix2pix import PatchDiscriminator, UNetGenerator
from .pix2pixhd import FeatureEncoder, GlobalGenerator, LocalEnhancer, MultiscaleDiscriminator
from .style_bank import StyleBank

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


def _conv_indices(state: StateDict, prefix: str) -> list[int]:
    """Sorted indices i with a 4-d `{prefix}{i}.weight` (convs of a Sequential), residual blocks excluded."""
    found = []
    for key, value in state.items():
        rest = key[len(prefix):] if key.startswith(prefix) else None
        if rest is not None and rest.count(".") == 1 and rest.endswith(".weight") and value.dim() == 4:
            found.append(int(rest.split(".")[0]))
    return sorted(found)


def _resblocks(state: StateDict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix) and ".conv_block." in k})


def _hd_norm(state: StateDict) -> str:
    return "batch" if any(k.endswith("running_mean") for k in state) else "instance"


def _encoder_decoder_config(state: StateDict, prefix: str = "model.") -> dict:
    """in/out channels, width, downsamplings and residual blocks of a reference encoder-decoder."""
    convs = _conv_indices(state, prefix)
    first, last = state[f"{prefix}{convs[0]}.weight"], state[f"{prefix}{convs[-1]}.weight"]
    resampling = [i for i in convs if state[f"{prefix}{i}.weight"].shape[-1] == 3]  # as many ups as downs
    return {"in_channels": first.shape[1], "out_channels": last.shape[0], "ngf": first.shape[0],
            "n_downsampling": len(resampling) // 2, "n_blocks": _resblocks(state, prefix)}


def hd_generator_key_map(model: GlobalGenerator | LocalEnhancer) -> dict[str, str]:
    """Our module path -> the reference's, per layer (residual blocks keep their inner indices)."""
    mapping = {}

    def add(ours_prefix, ref_prefix, sequential):
        for name, _ in sequential.named_modules():
            if name and "." not in name or name.count(".") == 2 and ".conv_block." in name:
                mapping[f"{ours_prefix}.{name}"] = f"{ref_prefix}.{name}"

    if isinstance(model, GlobalGenerator):
        add("layers", "model", model.layers)
    else:
        add("global_layers", "model", model.global_layers)
        for n, enhancer in enumerate(model.enhancers, start=1):
            add(f"enhancers.{n - 1}.downsample", f"model{n}_1", enhancer.downsample)
            add(f"enhancers.{n - 1}.upsample", f"model{n}_2", enhancer.upsample)
    return mapping


def load_reference_hd_generator(checkpoint: str | os.PathLike | StateDict) -> GlobalGenerator | LocalEnhancer:
    """A pix2pixHD `latest_net_G.pth` (global or local layout) as a GlobalGenerator / LocalEnhancer."""
    source = "state dict" if isinstance(checkpoint, dict) else str(checkpoint)
    state = checkpoint if isinstance(checkpoint, dict) else load_reference_state_dict(checkpoint)
    if "model.1.weight" not in state:
        raise ValueError(f"{source}: not a pix2pixHD generator state dict (no model.1.weight)")
    norm = _hd_norm(state)
    n_local = len({k.split("_")[0] for k in state if re.match(r"model\d+_1\.", k)})
    g = _encoder_decoder_config(state)
    if not n_local:
        model = GlobalGenerator(g["in_channels"], g["out_channels"], g["ngf"], g["n_downsampling"], g["n_blocks"], norm)
    else:
        last_up = f"model{n_local}_2."
        out_conv = _conv_indices(state, last_up)[-1]
        model = LocalEnhancer(g["in_channels"], state[f"{last_up}{out_conv}.weight"].shape[0],
                              state[f"model{n_local}_1.1.weight"].shape[0], g["n_downsampling"], g["n_blocks"],
                              n_local, _resblocks(state, "model1_2."), norm)
    model.load_state_dict(_remap(state, model, hd_generator_key_map(model), source))
    return model.eval()


def load_reference_encoder(checkpoint: str | os.PathLike | StateDict) -> FeatureEncoder:
    """A pix2pixHD `latest_net_E.pth` as a FeatureEncoder."""
    source = "state dict" if isinstance(checkpoint, dict) else str(checkpoint)
    state = checkpoint if isinstance(checkpoint, dict) else load_reference_state_dict(checkpoint)
    if "model.1.weight" not in state:
        raise ValueError(f"{source}: not a pix2pixHD encoder state dict (no model.1.weight)")
    c = _encoder_decoder_config(state)
    model = FeatureEncoder(c["in_channels"], c["out_channels"], c["ngf"], c["n_downsampling"], _hd_norm(state))
    mapping = {f"layers.{name}": f"model.{name}" for name, _ in model.layers.named_children()}
    model.load_state_dict(_remap(state, model, mapping, source))
    return model.eval()


def load_reference_multiscale_discriminator(checkpoint: str | os.PathLike | StateDict) -> MultiscaleDiscriminator:
    """A pix2pixHD `latest_net_D.pth` (`--no_ganFeat_loss` off: `scale{i}_layer{j}` keys) as a
    MultiscaleDiscriminator. The reference's scale num_D-1 sees the full resolution; ours is scale 0."""
    source = "state dict" if isinstance(checkpoint, dict) else str(checkpoint)
    state = checkpoint if isinstance(checkpoint, dict) else load_reference_state_dict(checkpoint)
    scales = {int(m.group(1)) for k in state if (m := re.match(r"scale(\d+)_layer\d+\.", k))}
    if not scales:
        raise ValueError(f"{source}: not a pix2pixHD multiscale discriminator (no scale<i>_layer<j> keys)")
    num_d = max(scales) + 1
    n_layers = len({k.split(".")[0] for k in state if k.startswith("scale0_layer")}) - 2
    first = state["scale0_layer0.0.weight"]
    model = MultiscaleDiscriminator(first.shape[1], first.shape[0], n_layers, num_d, _hd_norm(state))
    mapping = {f"discriminators.{num_d - 1 - i}.layers.{j}.{k}": f"scale{i}_layer{j}.{k}"
               for i in range(num_d) for j in range(n_layers + 2) for k in range(3)}
    model.load_state_dict(_remap(state, model, mapping, source))
    return model.eval()


def load_reference_clusters(path: str | os.PathLike, num_classes: int, allow_pickle: bool = False) -> StyleBank:
    """The reference's `features_clustered_010.npy` ({label: (n, feat_num) centres}, pickled) as a StyleBank."""
    if not allow_pickle:
        raise ValueError(
            f"{path} is a pickled dict; unpickling can run code. Load it only if you trust it, with "
            "allow_pickle=True (--allow_pickle on the command line)."
        )
    expected = ("pix2pixHD's features_clustered_*.npy: a pickled dict {class id: (k, feat_num) array of "
                "cluster centres}, read with --allow_pickle")
    try:
        clusters = np.load(path, allow_pickle=True)
    except Exception as e:
        raise ValueError(f"{path}: could not be read as a .npy file ({type(e).__name__}: {e}); "
                         f"expected {expected}") from e
    if isinstance(clusters, np.ndarray) and clusters.dtype == object and clusters.ndim == 0:
        clusters = clusters.item()
    if not isinstance(clusters, dict):
        found = (f"a {clusters.dtype} array of shape {clusters.shape}" if isinstance(clusters, np.ndarray)
                 else f"a {type(clusters).__name__}")
        raise ValueError(f"{path}: holds {found}; expected {expected}")
    arrays = {int(k): np.asarray(v, dtype=np.float32).reshape(len(v), -1) for k, v in clusters.items() if len(v)}
    if not arrays:
        raise ValueError(f"{path}: the dict holds no cluster centres; expected {expected}")
    feat_num = next(iter(arrays.values())).shape[1]
    bank = StyleBank(num_classes=num_classes, feat_num=feat_num, k=max(len(v) for v in arrays.values()))
    for label, centres in arrays.items():
        if label >= num_classes:
            raise ValueError(f"{path}: label {label} >= num_classes {num_classes}")
        bank.centers[label, : len(centres)] = torch.from_numpy(centres)
        bank.counts[label] = len(centres)
    return bank


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The converter's options (`p2p convert`, `python -m p2p_models.convert`)."""
    parser.add_argument("--checkpoint", required=True, help="reference latest_net_G.pth")
    parser.add_argument("--output_dir", required=True, help="where to write the pipeline folder")
    parser.add_argument("--discriminator", help="reference latest_net_D.pth, saved to <output_dir>/discriminator")
    parser.add_argument("--image_size", type=int, nargs="+", default=[256], help="working size: S or H W")
    parser.add_argument("--direction", choices=["AtoB", "BtoA"], default="AtoB")
    parser.add_argument("--no_dropout", action="store_true", help="the generator was trained with --no_dropout")
    hd = parser.add_argument_group("pix2pixHD")
    hd.add_argument("--label_nc", type=int, default=35)
    hd.add_argument("--contain_dontcare_label", action="store_true")
    hd.add_argument("--no_instance", action="store_true")
    hd.add_argument("--encoder", help="latest_net_E.pth")
    hd.add_argument("--features", help="features_clustered_010.npy (pickled; needs --allow_pickle)")
    hd.add_argument("--allow_pickle", action="store_true", help="trust and unpickle the --features file")
    return parser


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_arguments(parser).parse_args(argv)


def main(argv=None):
    run(parse_args(argv))


def run(args: argparse.Namespace) -> None:
    """Convert as `args` (see `add_arguments`) say."""
    state = load_reference_state_dict(args.checkpoint)
    if "model.model.0.weight" not in state:
        return convert_hd(args, state)
    generator = load_reference_generator(state, use_dropout=not args.no_dropout)
    discriminator = load_reference_discriminator(args.discriminator) if args.discriminator else None
    size = args.image_size[0] if len(args.image_size) == 1 else args.image_size
    pipe = Pix2PixPipeline(generator=generator, image_size=size, direction=args.direction)
    save_atomically(pipe, discriminator, args.output_dir)
    print(f"wrote {args.output_dir}: {dict(generator.config)}")


def convert_hd(args, state: StateDict) -> None:
    generator = load_reference_hd_generator(state)
    encoder = load_reference_encoder(args.encoder) if args.encoder else None
    classes = class_count(args.label_nc, args.contain_dontcare_label)
    bank = load_reference_clusters(args.features, classes, args.allow_pickle) if args.features else None
    discriminator = load_reference_multiscale_discriminator(args.discriminator) if args.discriminator else None
    size = args.image_size * 2 if len(args.image_size) == 1 else args.image_size
    pipe = Pix2PixHDPipeline(generator=generator, encoder=encoder, style_bank=bank, label_nc=args.label_nc,
                             contain_dontcare_label=args.contain_dontcare_label, use_instance=not args.no_instance,
                             image_size=size)
    save_atomically(pipe, discriminator, args.output_dir)
    print(f"wrote {args.output_dir}: {type(generator).__name__} {dict(generator.config)}")


def _check_output_dir(output_dir: str | os.PathLike) -> None:
    """`output_dir` may be new, empty, or a pipeline folder (which a conversion replaces as a whole)."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--output_dir {path} is a file; expected a new folder or a pipeline folder to replace")
    if path.is_dir() and any(path.iterdir()) and not (path / "model_index.json").exists():
        raise ValueError(f"--output_dir {path} holds files but no model_index.json; converting would replace them. "
                         "Choose a new or empty folder, or an earlier pipeline folder.")


def running(pid: int) -> bool:
    """Whether process `pid` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stale_temporaries(folder: Path, pattern: str) -> list[Path]:
    """The `<name>.partial-<pid>-...` / `<name>.old-<pid>-...` temporaries matching `pattern` in `folder`
    whose process is gone (killed mid-write)."""
    found = []
    for temp in folder.glob(pattern):
        pid = re.search(r"\.(?:partial|old)-(\d+)-", temp.name)
        if pid and not running(int(pid.group(1))):
            found.append(temp)
    return found


def clean_stale(path: Path) -> None:
    """Remove what a conversion to `path` killed mid-write left beside it: its staging folder, and the
    previous pipeline set aside while it was swapped in (put back if `path` itself is missing)."""
    for temp in stale_temporaries(path.parent, f".{glob.escape(path.name)}.*-*"):
        if ".old-" in temp.name and not path.exists():
            temp.rename(path)
        else:
            shutil.rmtree(temp, ignore_errors=True)


def save_atomically(pipe, discriminator, output_dir: str | os.PathLike) -> None:
    """Write the pipeline (and `discriminator/`) to a temporary sibling folder, then rename it into
    place: a failure never leaves a partial `output_dir`, and an existing one stays as it was. What a
    run killed mid-write left (`.<name>.partial-<pid>-*`) is removed by the next one."""
    path = Path(output_dir).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    _check_output_dir(path)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))
    try:
        pipe.save_pretrained(staging)
        if discriminator is not None:
            discriminator.save_pretrained(staging / "discriminator")
        if not path.exists():
            staging.rename(path)
            return
        old = staging.with_name(staging.name.replace(".partial-", ".old-"))
        path.rename(old)
        try:
            staging.rename(path)
        except BaseException:
            old.rename(path)
            raise
        shutil.rmtree(old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

if __name__ == "__main__":
    main()
