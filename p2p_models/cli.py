"""`p2p`: translate image files, convert reference checkpoints, export generators to ONNX.

    p2p translate --model pretrained/facades labels/ extra.png --output out/ [--deterministic]
    p2p translate --model pretrained/camvid_hd labels/ --instances instances/ --output out/
    p2p convert --checkpoint latest_net_G.pth --output_dir facades_label2photo --direction BtoA
    p2p export-onnx --model pretrained/facades --output facades.onnx [--sampled]

`--model` is a pipeline folder or a Hub repo id. `p2p COMMAND --help` lists each command's options.
"""

import argparse
import os
import sys
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging
from PIL import ExifTags, Image, ImageOps
from tqdm.auto import tqdm

from . import convert
from .backends import BACKENDS
from .pipelines import P2PPipeline, Pix2PixHDPipeline, Pix2PixPipeline
from .pipelines.hub_utils import check_local_folder
from .pipelines.pipeline_utils import seeded_generator
from .tiling import SIZE_MODES

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CommandError(Exception):
    """A problem with the command line as a whole (exit status 2)."""


def load_pipeline(model: str, device: str = "cpu", dtype: str = "float32") -> P2PPipeline:
    """The pipeline in folder or Hub repo `model` (the class its model_index.json names)."""
    try:
        check_local_folder(model)
    except FileNotFoundError as e:
        raise CommandError(f"--model {e}") from e
    try:
        pipe = P2PPipeline.from_pretrained(model, dtype=DTYPES[dtype]).to(device)
    except Exception as e:  # a Hub repo out of reach, a folder of another pipeline, corrupt weights, ...
        raise CommandError(f"--model {model}: could not be loaded on {device} as {dtype} "
                           f"({type(e).__name__}: {e})") from e
    pipe.set_progress_bar_config(disable=True)  # `translate` shows its own, over all files
    return pipe


def image_files(paths: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """(files, failures): `paths` expanded (a folder gives its image files, sorted; a file is taken
    as it is) and [(path, reason)] for paths that don't exist."""
    files, failed = [], []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            files.append(path)
        else:
            failed.append((str(path), "no such file or folder"))
    return files, failed


def check_output_folder(output: Path, inputs: list[str]) -> None:
    """An error if `output` is, or is inside, an input folder: its images would be overwritten, or
    read back as inputs by a later run."""
    resolved = output.resolve()
    for folder in (Path(path) for path in inputs):
        if folder.is_dir() and (resolved == folder.resolve() or folder.resolve() in resolved.parents):
            raise CommandError(f"--output {output} is {'the' if resolved == folder.resolve() else 'inside the'} input "
                               f"folder {folder}; choose a folder outside the inputs")


def output_paths(files: list[Path], output: Path) -> dict[Path, Path]:
    """Each input's output, `output/<its name>.png`; an error if two inputs would share one or one would
    overwrite an input."""
    outputs, inputs = {}, {file.resolve() for file in files}
    for file in files:
        target = output / f"{file.stem}.png"
        if target.resolve() in inputs:
            raise CommandError(f"{file}'s output {target} would overwrite an input; choose another --output")
        clash = next((f for f, t in outputs.items() if t == target), None)
        if clash is not None:
            raise CommandError(f"{clash} and {file} would both be written to {target}: translate them in separate runs "
                               "or rename one")
        outputs[file] = target
    return outputs


def instance_for(label_file: Path, instances: dict[str, Path]) -> Path:
    """The instance map named like `label_file` (X): X, X_instances, or X with `labelIds` replaced by
    `instanceIds` (Cityscapes' naming), any image extension."""
    stem = label_file.stem
    names = (stem, f"{stem}_instances", stem.replace("labelIds", "instanceIds"))
    for name in names:
        if name in instances:
            return instances[name]
    raise ValueError(f"no instance map named {' or '.join(dict.fromkeys(names))} among --instances")


def open_image(path: Path, max_pixels: int | None) -> Image.Image:
    """`path` opened lazily and turned upright as its EXIF orientation says (as browsers and the app
    show it); one over `max_pixels` is left as it is, for the pipeline to refuse undecoded."""
    image = Image.open(path)
    upright = image.getexif().get(ExifTags.Base.Orientation, 1) in (None, 1)
    if upright or (max_pixels is not None and image.width * image.height > max_pixels):
        return image
    return ImageOps.exif_transpose(image)


def write_png(image: Image.Image, path: Path) -> None:
    """Save `image` as `path` atomically: to `.<name>.partial-<pid>-` beside it, renamed over `path` when
    complete, so an interrupted run never leaves a truncated image under an output's name."""
    temp = path.with_name(f".{path.name}.partial-{os.getpid()}-")
    try:
        image.save(temp, "PNG")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class Translator:
    """Runs the pipeline over files, one batch at a time; a failing batch is retried image by image
    so that only the bad files fail."""

    def __init__(self, pipe: P2PPipeline, args: argparse.Namespace, instances: dict[str, Path] | None):
        self.pipe, self.args, self.instances = pipe, args, instances
        self.options = {"size_mode": args.size_mode, "tile_size": args.tile_size, "tile_overlap": args.tile_overlap}

    def translate(self, files: list[Path]) -> list[Image.Image]:
        """Outputs for `files` (one batch), or an exception."""
        if isinstance(self.pipe, Pix2PixHDPipeline):
            (file,) = files
            instance_map = Image.open(instance_for(file, self.instances)) if self.instances is not None else None
            label_map = open_image(file, self.pipe.max_pixels)
            return self.pipe(label_map, instance_map, generator=self.generators(1), **self.options).images
        images = [open_image(file, self.pipe.max_pixels) for file in files]
        return self.pipe(images, generator=self.generators(len(images)), deterministic=self.args.deterministic,
                         **self.options).images

    def generators(self, count: int) -> list[torch.Generator]:
        """One generator seeded with `--seed` per image: each file as if alone."""
        return [seeded_generator(self.args.seed, self.pipe.device) for _ in range(count)]

    def run(self, files: list[Path], outputs: dict[Path, Path], progress) -> list[tuple[str, str]]:
        failed = []
        batch = 1 if isinstance(self.pipe, Pix2PixHDPipeline) else self.args.batch_size
        for start in range(0, len(files), batch):
            chunk = files[start:start + batch]
            try:
                results = list(zip(chunk, self.translate(chunk)))
            except Exception as e:
                if len(chunk) == 1:
                    failed.append((str(chunk[0]), message(e)))
                    progress.update(1)
                    continue
                results = []
                for file in chunk:  # find the bad file(s)
                    try:
                        results.append((file, self.translate([file])[0]))
                    except Exception as e:
                        failed.append((str(file), message(e)))
                        progress.update(1)
            for file, image in results:
                try:
                    write_png(image, outputs[file])
                except OSError as e:
                    failed.append((str(file), f"could not write {outputs[file]} ({e.strerror or e})"))
                progress.update(1)
        return failed


def message(error: Exception) -> str:
    text = str(error).replace("image 0: ", "")
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


def translate(args: argparse.Namespace) -> int:
    """`p2p translate`; returns the exit status (1 if some inputs failed)."""
    if args.batch_size < 1:
        raise CommandError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.tile_size is not None and len(args.tile_size) > 2:
        raise CommandError(f"--tile_size takes S or H W, got {len(args.tile_size)} numbers")
    if args.tile_size is not None:
        args.tile_size = args.tile_size[0] if len(args.tile_size) == 1 else tuple(args.tile_size)
    files, failed = image_files(args.inputs)
    instances = None
    if args.instances is not None:
        instance_files, missing = image_files(args.instances)
        if missing:
            raise CommandError(f"--instances {missing[0][0]}: {missing[0][1]}")
        instances = {}
        for file in instance_files:
            if file.stem in instances:
                raise CommandError(f"--instances: {instances[file.stem]} and {file} have the same name; "
                                   "instance maps are matched to label maps by name")
            instances[file.stem] = file
    if not files and not failed:
        raise CommandError(f"no image files in {' '.join(args.inputs)} (looked for {' '.join(sorted(IMAGE_EXTENSIONS))})")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise CommandError(f"--output {output} is a file; expected a folder (created if missing)")
    check_output_folder(output, args.inputs)
    outputs = output_paths(files, output)
    if args.skip_existing:
        done = [file for file in files if outputs[file].exists()]
        files = [file for file in files if file not in done]
        if done:
            print(f"p2p translate: skipping {len(done)} input(s) whose output exists (--skip_existing)",
                  file=sys.stderr)
    total = len(files) + len(failed)
    pipe = load_pipeline(args.model, args.device, args.dtype)
    if instances is not None and not isinstance(pipe, Pix2PixHDPipeline):
        raise CommandError(f"--instances is for pix2pixHD models; {args.model} is a {type(pipe).__name__}")
    if args.backend == "onnxruntime" and args.device != "cpu":
        raise CommandError("--backend onnxruntime runs on the CPU: use --device cpu")
    try:
        pipe.set_backend(args.backend, args.onnx)
    except (ValueError, OSError) as e:
        raise CommandError(str(e)) from e
    if args.onnx and isinstance(pipe, Pix2PixPipeline):
        check_onnx_mode(args.onnx, pipe._backend.onnx_model_sampled, args.deterministic)
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".p2p-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise CommandError(f"--output {output}: can't write there ({e.strerror or e})") from e
    for temp in convert.stale_temporaries(output, ".*.partial-*-"):
        temp.unlink(missing_ok=True)
    with tqdm(total=len(files), unit="image", desc="translate", file=sys.stderr) as progress:
        failed += Translator(pipe, args, instances).run(files, outputs, progress)
    for path, reason in failed:
        print(f"p2p translate: {path}: {reason}", file=sys.stderr)
    print(f"translated {total - len(failed)} of {total} images into {output}" +
          (f"; {len(failed)} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def check_onnx_mode(path: str, sampled: bool, deterministic: bool) -> None:
    """Refuse a pix2pix `--onnx` graph whose mode (`sampled`: `p2p export-onnx` with `--sampled` or without) is
    not the mode asked for, which would otherwise be exported anew at the first image."""
    if sampled and deterministic:
        raise CommandError(f"--onnx {path} is the sampling-mode graph (`p2p export-onnx --sampled`): leave out "
                           "--deterministic, or export the eval-mode graph (without --sampled) for it")
    if not sampled and not deterministic:
        raise CommandError(f"--onnx {path} is the eval-mode graph (`p2p export-onnx`): add --deterministic, or "
                           "export the sampling-mode graph with `p2p export-onnx --sampled`")


def export_onnx(args: argparse.Namespace) -> int:
    """`p2p export-onnx`: export, then print the parity check; 1 if it is over `--tolerance`."""
    from .onnx_export import OnnxGenerator, parity
    from .onnx_export import export_onnx as export

    pipe = load_pipeline(args.model)
    if args.sampled and not isinstance(pipe, Pix2PixPipeline):
        raise CommandError(f"--sampled: {args.model} is a {type(pipe).__name__}, which has no sampling mode "
                           "(pix2pix's dropout and batch statistics)")
    factor, minimum = pipe.generator.downsampling_factor, pipe.generator.min_size
    h, w = args.size or [max(s, minimum) for s in pipe.working_size]
    if h % factor or w % factor or min(h, w) < minimum:
        raise CommandError(f"--size {h} {w}: must be multiples of {factor}, at least {minimum}")
    export(pipe.generator, args.output, opset=args.opset, sampled=args.sampled)
    session = OnnxGenerator(args.output)
    worst = 0.0
    mode = " (sampling mode, masks and PyTorch's dropout from seed 0)" if args.sampled else ""
    for size in ((h, w), (h + factor, w + 2 * factor)):  # the export size and another: dynamic sizes work
        diff = parity(pipe.generator, session, *size)
        worst = max(worst, diff)
        print(f"parity at {size[0]}x{size[1]}{mode}: max abs difference ONNX Runtime vs PyTorch = {diff:.3g}")
    batch = "1" if args.sampled else "batch"  # the sampling mode: one image, normalised by its own statistics
    masks = "".join(f", mask{k} (1, {c}, H/{d}, W/{d}) of 0 and 1/(1-{p:g})"
                    for k, (c, d, p) in enumerate(session.masks))
    print(f"wrote {args.output}: input x ({batch}, {pipe.generator.config.in_channels}, H, W), H and W multiples of "
          f"{factor}{masks}; output y in [-1, 1]")
    if worst > args.tolerance:
        print(f"p2p export-onnx: the difference {worst:.3g} is over --tolerance {args.tolerance}", file=sys.stderr)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="p2p", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = commands.add_parser("translate", help="translate image files or folders (outputs: DIR/<input name>.png)")
    t.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of them (label maps for HD)")
    t.add_argument("--model", required=True, help="pipeline folder or Hub repo id")
    t.add_argument("--output", required=True, metavar="DIR", help="output folder (created if missing)")
    t.add_argument("--instances", nargs="+", metavar="DIR_OR_FILE",
                   help="pix2pixHD instance maps, matched to label maps by name: X, X_instances, or X with labelIds -> "
                   "instanceIds")
    t.add_argument("--seed", type=int, default=0, help="seed for every image (pix2pix dropout, HD styles); default 0")
    t.add_argument("--deterministic", action="store_true", help="pix2pix in eval mode: dropout off, running statistics")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    t.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    t.add_argument("--batch_size", type=int, default=1, help="images per pipeline call (pix2pix)")
    t.add_argument("--size_mode", choices=SIZE_MODES, default="resize",
                   help="resize to the working size and back (default), native resolution, or tiled")
    t.add_argument("--tile_size", type=int, nargs="+", metavar="N", help="tiled: S or H W (default: the working size)")
    t.add_argument("--tile_overlap", type=int, help="tiled: overlap in pixels (default: a quarter tile)")
    t.add_argument("--backend", choices=BACKENDS, default="fast",
                   help="fast (default; plain torch off-CPU), bf16 (CPUs with native bf16), auto (the fastest, "
                        "timed), torch, or onnxruntime")
    t.add_argument("--onnx", metavar="FILE", help="onnxruntime: a file from `p2p export-onnx` (default: export now)")
    t.add_argument("--skip_existing", action="store_true",
                   help="leave out inputs whose output exists (outputs are written whole, so an existing one is done)")
    t.set_defaults(run=translate)

    c = commands.add_parser("convert", help="convert reference pix2pix / pix2pixHD checkpoints to a pipeline folder",
                            description=convert.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_arguments(c)
    c.set_defaults(run=lambda args: convert.run(args) or 0)

    e = commands.add_parser("export-onnx", help="export a pipeline's generator to ONNX and check it against PyTorch")
    e.add_argument("--model", required=True, help="pipeline folder or Hub repo id")
    e.add_argument("--output", required=True, metavar="FILE", help="the .onnx file to write")
    e.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="size of the parity check (default: the working size); a second check adds a factor")
    e.add_argument("--sampled", action="store_true",
                   help="pix2pix's sampling mode (dropout masks as inputs, batch statistics) for --onnx without "
                        "--deterministic; default: eval mode")
    e.add_argument("--opset", type=int, default=18)
    e.add_argument("--tolerance", type=float, default=1e-3, help="largest max abs difference that passes")
    e.set_defaults(run=export_onnx)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    diffusers_logging.disable_progress_bar()  # one progress bar: the command's own
    try:
        return args.run(args)
    except (CommandError, ValueError, ModuleNotFoundError) as e:
        print(f"p2p {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a full disk, or a folder that can't be written
        where = f"{e.filename}: " if e.filename else ""
        print(f"p2p {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = "; the outputs written are complete: rerun with --skip_existing to go on" if args.command == "translate" else ""
        print(f"p2p {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
