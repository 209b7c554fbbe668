"""Speed and memory table for the p2p models on this machine.

    python benchmarks/run.py [--device cpu] [--repeats 5] [--hd] [--quick] [--only REGEX] [--json results.json]
    python benchmarks/run.py --backends [--targets facades_256,camvid_hd_384x512] [--hd] ...

Each row runs in a fresh process, so its peak memory is its own (on CPU the peak resident set:
weights, activations and ~0.3 GB of torch itself; on CUDA the peak allocated). Times are medians
of `--repeats` calls after warm-up (compile time excluded). Rows:
- pix2pix unet_256 (ngf 64, BatchNorm), deterministic forward at 256x256, batch 1 and 8, as fp32
  eager, channels_last, torch.compile (inductor), bf16 autocast, and BatchNorm folded into convs;
  at batch 1 also: the reference's module layout in eager (`reference`, tests/reference_layout.py),
  torch.compile with inductor freezing (`compile_freezing`), ONNX Runtime on the exported graph
  (`onnxruntime`) and our fast CPU path (`fast`: BatchNorm folded, oneDNN-packed convs; the
  pipelines' `set_backend("fast")`); and the paper-default sampling forward (dropout, batch
  statistics) plain (`sampling`) and fast (`sampling_fast`). These are then compared once more in
  one process, calls interleaved round-robin, so that other load on the machine slows them alike
  (`--compare` runs only that);
- the pix2pix pipeline (PIL 512x512 in and out, sampled) and one training step (G + 70x70 D, Adam);
- with --hd, pix2pixHD label2city generators (35 labels + boundary map): G1 (global, ngf 64) at
  512x1024 (fp32 eager, channels_last) and G2 (global + local, ngf 32) at 1024x2048, and one
  G1 training step at 512x1024 (G + 3-scale D, feature matching, Adam); these rows take the median
  of at most 2 calls, seconds each on a CPU.
`--backends` times the inference backends instead (`backend_rows`): on unet_256 (ngf 64, 256x256),
each shipped model at its app size (the shipped weights: facades, colorization and maps at 256x256,
CamVid pix2pixHD at 384x512) and, with --hd, pix2pixHD G2 (ngf 32) at 1024x2048: the reference
eager, compile + freezing, ONNX Runtime, each of our backends and `auto` (the row names its choice),
deterministic and sampled, then a summary (auto against ONNX Runtime and the reference, sampled
against deterministic), once from those rows and once from `INTERLEAVED` rows timed again in one
process per target, round-robin (the fairer comparison: rows in separate processes can differ by
10% on a shared machine); `--targets` picks some targets, `--only` some rows.
`--quick` shrinks every model and size, skips torch.compile and runs all rows in one process (for
CI: checks the script, not the machine).
"""

import argparse
import contextlib
from argparse import Namespace
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from p2p_models import (
    GANLoss,
    GlobalGenerator,
    LocalEnhancer,
    MultiscaleDiscriminator,
    PatchDiscriminator,
    Pix2PixPipeline,
    UNetGenerator,
    discriminator_loss,
    feature_matching_loss,
    multiscale_gan_loss,
    pix2pix_generator_loss,
)
from p2p_models.backends import GeneratorBackend
from p2p_models.cpu import cpu_name, native_bf16
from p2p_models.onnx_export import OnnxGenerator, export_onnx
from p2p_models.optimize import fast_cpu_copy, fold_batch_norms
from p2p_models.pipelines import sampling_mode
from train.common import memory_format, resolve_mixed_precision
from train.data import PairedImageDataset, load_splits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_layout import RefLocal, RefUnet

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = ("eager", "channels_last", "compile", "bf16", "bn_folded")
FAST_PATH = ("reference", "compile_freezing", "onnxruntime", "fast", "sampling", "sampling_fast")


def rows(hd: bool, quick: bool) -> list[tuple[str, str, int]]:
    variants = [v for v in VARIANTS if not (quick and v == "compile")]
    out = [("unet_256", v, b) for v in variants for b in (1, 8)]
    out += [("unet_256", v, 1) for v in FAST_PATH if not (quick and v == "compile_freezing")]
    out += [("pix2pix_pipeline", "eager", 1), ("pix2pix_train_step", "eager", 1)]
    if hd:
        out += [("hd_global_512x1024", v, 1) for v in ("eager", "channels_last")]
        out += [("hd_local_1024x2048", "eager", 1), ("hd_global_train_step", "eager", 1)]
    return out


# --backends: targets (unet_256 at ngf 64, the shipped models at their app sizes, pix2pixHD G2 at 1024x2048
# with --hd) and what runs them
BACKEND_TARGETS = ("unet_256_ngf64", "facades_256", "colorization_256", "maps_aerial2map_256", "maps_map2aerial_256",
                   "camvid_hd_384x512")
HD_BACKEND_TARGET = "label2city_g2_1024x2048"
DETERMINISTIC = ("reference", "compile_freezing", "onnxruntime", "torch", "fast", "bf16", "auto")
SAMPLED = ("sampled_torch", "sampled_fast", "sampled_bf16", "sampled_auto")


def is_hd(target: str) -> bool:
    """Whether a --backends target is a pix2pixHD generator (no dropout, so no sampled rows)."""
    return target == HD_BACKEND_TARGET or "_hd_" in target


def backend_rows(hd: bool, quick: bool, targets: list[str] | None = None) -> list[tuple[str, str, int]]:
    """--backends: per target, batch 1, deterministic: the reference's module layout in eager
    (`reference`), torch.compile with inductor freezing, ONNX Runtime on the exported graph, and each of
    our backends (`torch`, `fast`, `bf16`, `auto`); sampled (dropout, batch statistics; pix2pix only):
    each of ours but ONNX Runtime. bf16 rows only where the CPU computes bf16 natively (elsewhere a
    call takes minutes), or with --quick; no compile with --quick."""
    chosen = targets or [*BACKEND_TARGETS, *([HD_BACKEND_TARGET] if hd else [])]
    skip = {"compile_freezing"} if quick else set()
    if not (quick or native_bf16()[0]):
        skip |= {"bf16", "sampled_bf16"}
    out = []
    for target in chosen:
        sampled = () if is_hd(target) else SAMPLED
        out += [(target, v, 1) for v in (*DETERMINISTIC, *sampled) if v not in skip]
    return out


def backend_target(name: str, quick: bool) -> tuple[torch.nn.Module, torch.nn.Module, tuple[int, ...]]:
    """(our generator, the reference's layout of it with random weights, input shape) for a --backends
    target: the shipped weights at the app's size, or random ones; --quick: tiny random ones."""
    if name in ("unet_256_ngf64", HD_BACKEND_TARGET):
        model = UNetGenerator(num_downs=8, ngf=64) if name.startswith("unet") else LocalEnhancer(36, 3, ngf=32)
        size = (256, 256) if name.startswith("unet") else (1024, 2048)
    else:
        folder = ROOT / "pretrained" / name.rsplit("_", 1)[0]
        model_class = LocalEnhancer if is_hd(name) else UNetGenerator
        model = model_class.from_pretrained(folder, subfolder="generator")
        size = json.loads((folder / "model_index.json").read_text())["image_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
    c = model.config
    if quick:
        model = UNetGenerator(c.in_channels, c.out_channels, num_downs=6, ngf=8) if isinstance(model, UNetGenerator) \
            else LocalEnhancer(c.in_channels, c.out_channels, ngf=4, n_downsample_global=3, n_blocks_global=1,
                               n_blocks_local=1)
        size, c = (64, 64) if isinstance(model, UNetGenerator) else (64, 128), model.config
    if isinstance(model, UNetGenerator):
        reference = RefUnet(c.in_channels, c.out_channels, c.num_downs, c.ngf, c.norm, c.use_dropout)
    else:
        reference = RefLocal(c.in_channels, c.out_channels, c.ngf, c.n_downsample_global, c.n_blocks_global,
                             c.n_local_enhancers, c.n_blocks_local)
    return model.eval(), reference.eval(), (1, c.in_channels, *size)


def backend_call(name: str, variant: str, quick: bool, device):
    """A callable running one forward of a --backends row; an `auto` row's callable also has `.chosen()`,
    the backend auto picked."""
    model, reference, shape = backend_target(name, quick)
    x = torch.randn(shape, device=device)
    if variant in ("reference", "compile_freezing"):
        net = reference.to(device) if variant == "reference" else \
            torch.compile(model.to(device), options={"freezing": True})

        def forward():
            with torch.no_grad():
                return net(x)

        return forward
    kind, deterministic = variant.removeprefix("sampled_"), not variant.startswith("sampled_")
    model = model.to(device)
    backend = GeneratorBackend(kind, model)
    extra = {} if deterministic else {"generator": torch.Generator(device).manual_seed(0)}

    def call():
        with torch.no_grad(), backend.runner(model, deterministic) as net:
            return net(x, **extra)

    if kind == "auto":
        call.chosen = lambda: backend.choice(model, x, deterministic)
    return call


INTERLEAVED = ("reference", "onnxruntime", "fast", "auto", "sampled_auto")  # --backends' one-process pass


def backend_interleaved(target: str, args) -> list[dict]:
    """`INTERLEAVED` rows of one --backends target timed in one process, round-robin (`interleaved`), so
    that auto and ONNX Runtime see the same machine; sampled rows only where the target has dropout."""
    variants = [v for v in INTERLEAVED if not (is_hd(target) and v.startswith("sampled"))]
    if target == HD_BACKEND_TARGET:  # seconds a call
        args = argparse.Namespace(**{**vars(args), "repeats": min(args.repeats, 2)})
    return interleaved([(target, v, 1) for v in variants], args, warmups=1 if target == HD_BACKEND_TARGET else 2)


def backend_summary(results: list[dict], source: str) -> str:
    """What auto gives (from `source`'s rows): against ONNX Runtime and the reference (deterministic),
    sampled against deterministic."""
    ms = {(r["name"], r["variant"]): r["ms"] for r in results}
    chose = {(r["name"], r["variant"]): r["chose"] for r in results if "chose" in r}
    native, why = native_bf16()
    lines = [f"\nFrom {source}. CPU: {cpu_name()}, {torch.get_num_threads()} threads; native bf16: "
             f"{'yes' if native else 'no'} ({why})"]
    for name in dict.fromkeys(r["name"] for r in results):
        auto = ms.get((name, "auto"))
        if auto is None:
            continue
        parts = [f"auto ({chose[name, 'auto']}) {auto:.1f} ms"]
        parts += [f"{ms[name, v] / auto:.2f}x the speed of {label}" for v, label in
                  (("onnxruntime", "ONNX Runtime"), ("reference", "the reference eager"), ("fast", "fast"))
                  if (name, v) in ms]
        if (name, "sampled_auto") in ms:
            parts.append(f"sampled auto ({chose[name, 'sampled_auto']}) {ms[name, 'sampled_auto']:.1f} ms, "
                         f"{ms[name, 'sampled_auto'] / auto:.2f}x the deterministic time")
        lines.append(f"- {name}: " + ", ".join(parts))
    return "\n".join(lines)


def train_rows(hd: bool) -> list[tuple[str, str, int]]:
    """--train: training throughput. Per width, the reference's step (eager fp32, batch 1) and ours
    (the training scripts' choices on this machine) at batch 1, 4 and 8, plus channels_last and bf16
    alone at batch 4; the loader with and without the decoded cache; with --hd, pix2pixHD G1 + 3-scale
    D at CamVid's 512x384."""
    out = []
    for ngf in (32, 64):
        name = f"train_unet_256_ngf{ngf}"
        out += [(name, "reference", 1)] + [(name, "ours", b) for b in (1, 4, 8)]
        out += [(name, v, 4) for v in ("reference", "channels_last", "bf16")]
    out += [("facades_loader", v, 10) for v in ("decode", "cached")]  # 10 pairs a call
    if hd:
        out += [("train_hd_global_384x512", v, 1) for v in ("reference", "ours")]
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--hd", action="store_true", help="add the pix2pixHD rows (slow on a CPU)")
    p.add_argument("--train", action="store_true", help="training throughput rows instead (see train_rows)")
    p.add_argument("--backends", action="store_true", help="inference backend rows instead (see backend_rows)")
    p.add_argument("--targets", default=None, metavar="NAME,...",
                   help=f"--backends: only these targets, of {', '.join((*BACKEND_TARGETS, HD_BACKEND_TARGET))}")
    p.add_argument("--quick", action="store_true", help="tiny models and sizes, no torch.compile")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--only", default=None, metavar="REGEX",
                   help="run the rows whose 'name,variant,batch' matches, e.g. 'unet_256,.*,1$'")
    p.add_argument("--compare", action="store_true", help="only the interleaved fast-path comparison")
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: "name,variant,batch"
    p.add_argument("--interleave", default=None, help=argparse.SUPPRESS)  # internal: a --backends target
    return p.parse_args(argv)


def prepare(model, x, variant, device):
    """A callable running one forward of `model` on `x` in `variant` (deterministic unless
    `sampling*`)."""
    model = model.eval().to(device)
    if variant == "onnxruntime":
        path = Path(tempfile.mkdtemp()) / "model.onnx"
        export_onnx(model, path)
        session = OnnxGenerator(path)
        return lambda: session(x)
    if variant.startswith("sampling"):
        model = fast_cpu_copy(model, deterministic=False) if variant == "sampling_fast" else model

        def sample():
            with torch.no_grad(), sampling_mode(model):
                return model(x)

        return sample
    if variant == "fast":
        model = fast_cpu_copy(model, deterministic=True)
    if variant == "bn_folded":
        model = fold_batch_norms(model)
    if variant == "channels_last":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if variant == "compile":
        model = torch.compile(model)
    if variant == "compile_freezing":
        model = torch.compile(model, options={"freezing": True})
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if variant == "bf16" else contextlib.nullcontext()

    def run():
        with torch.no_grad(), autocast:
            return model(x)

    return run


TRAIN_VARIANTS = ("reference", "channels_last", "bf16", "ours")


def train_setup(variant: str, device) -> tuple[torch.memory_format, bool]:
    """A training row's (memory format, bf16 autocast): `reference` is the reference's eager fp32
    step; `ours` is what the training scripts choose on this machine (`--mixed_precision auto`,
    `--channels_last auto`)."""
    if variant == "ours":
        cpu = device.type == "cpu"
        return memory_format(Namespace(channels_last="auto"), cpu), resolve_mixed_precision("auto", cpu)[0] == "bf16"
    return (torch.channels_last if variant == "channels_last" else torch.contiguous_format), variant == "bf16"


def pix2pix_step(quick, device, ngf=64, batch=1, variant="reference"):
    """One pix2pix training step (D then G, Adam) on random 256x256 pairs, as train_pix2pix runs it."""
    s = 4 if quick else 1
    fmt, bf16 = train_setup(variant, device)
    g = UNetGenerator(num_downs=6 if quick else 8, ngf=8 if quick else ngf).to(device, memory_format=fmt).train()
    d = PatchDiscriminator(ndf=8 if quick else ngf).to(device, memory_format=fmt).train()
    opt_g, opt_d = torch.optim.Adam(g.parameters(), 2e-4), torch.optim.Adam(d.parameters(), 2e-4)
    gan = GANLoss("vanilla")
    a, b = (torch.randn(batch, 3, 256 // s, 256 // s, device=device).contiguous(memory_format=fmt) for _ in range(2))

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            fake = g(a)
            loss_d, _ = discriminator_loss(gan, d(torch.cat([a, b], 1)), d(torch.cat([a, fake.detach()], 1)))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss_g, _ = pix2pix_generator_loss(gan, d(torch.cat([a, fake], 1)), fake, b)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return step


def hd_step(quick, device, size=(512, 1024), variant="reference"):
    """One pix2pixHD G1 training step (G + 3-scale D, feature matching, Adam) on a random label map."""
    s = 8 if quick else 1
    fmt, bf16 = train_setup(variant, device)
    g = GlobalGenerator(36, 3, ngf=8 if quick else 64, n_blocks=1 if quick else 9).to(device, memory_format=fmt)
    d = MultiscaleDiscriminator(39, ndf=8 if quick else 64, num_d=2 if quick else 3).to(device, memory_format=fmt)
    opt_g, opt_d = torch.optim.Adam(g.parameters(), 2e-4), torch.optim.Adam(d.parameters(), 2e-4)
    gan = GANLoss("lsgan")
    label = torch.randn(1, 36, size[0] // s, size[1] // s, device=device).contiguous(memory_format=fmt)
    real = torch.randn(1, 3, size[0] // s, size[1] // s, device=device).contiguous(memory_format=fmt)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            fake = g(label)
            pred_real = d(torch.cat([label, real], 1))
            loss_d = 0.5 * (multiscale_gan_loss(gan, d(torch.cat([label, fake.detach()], 1)), False)
                            + multiscale_gan_loss(gan, pred_real, True))
            pred_fake = d(torch.cat([label, fake], 1))
            loss_g = multiscale_gan_loss(gan, pred_fake, True, False) + feature_matching_loss(pred_fake, pred_real)
        opt_g.zero_grad()
        loss_g.backward(retain_graph=True)
        opt_g.step()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()

    return step


def loader_pass(variant):
    """One epoch of the training loader over the 10 facades fixture pairs: JPEGs decoded per item
    (`decode`) or read from the decoded-image cache (`cached`)."""
    split = load_splits(str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "facades"))["train"]
    dataset = PairedImageDataset(split, direction="BtoA")
    if variant == "cached":
        dataset.use_cache(tempfile.mkdtemp())
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=True)
    return lambda: [batch for batch in loader]


def build(name, variant, batch, quick, device):
    """A callable doing one timed call of the row."""
    torch.manual_seed(0)
    s = 4 if quick else 1
    if name in (*BACKEND_TARGETS, HD_BACKEND_TARGET):
        return backend_call(name, variant, quick, device)
    if name == "unet_256":
        num_downs, ngf = (6, 8) if quick else (8, 64)
        model = RefUnet(3, 3, num_downs, ngf, "batch") if variant == "reference" else UNetGenerator(
            num_downs=num_downs, ngf=ngf)
        return prepare(model, torch.randn(batch, 3, 256 // s, 256 // s, device=device), variant, device)
    if name == "pix2pix_pipeline":
        pipe = Pix2PixPipeline(generator=UNetGenerator(num_downs=6 if quick else 8, ngf=8 if quick else 64),
                               image_size=256 // s).to(device)
        pipe.set_progress_bar_config(disable=True)
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512 // s, 512 // s, 3), dtype=np.uint8))
        return lambda: pipe(image, generator=torch.Generator().manual_seed(0)).images[0]
    if name == "pix2pix_train_step":
        return pix2pix_step(quick, device)
    if name.startswith("train_unet_256"):  # train_unet_256_ngf<N>
        return pix2pix_step(quick, device, int(name.rsplit("ngf", 1)[1]), batch, variant)
    if name == "hd_global_train_step":
        return hd_step(quick, device)
    if name == "train_hd_global_384x512":
        return hd_step(quick, device, (384, 512), variant)
    if name == "facades_loader":
        return loader_pass(variant)
    if name == "hd_global_512x1024":
        model = GlobalGenerator(36, 3, ngf=8 if quick else 64, n_blocks=1 if quick else 9)
        return prepare(model, torch.randn(batch, 36, 512 // s, 1024 // s, device=device), variant, device)
    model = LocalEnhancer(36, 3, ngf=4 if quick else 32, n_blocks_global=1 if quick else 9)
    return prepare(model, torch.randn(batch, 36, 1024 // s, 2048 // s, device=device), variant, device)


def run_row(args, row: str) -> dict:
    name, variant, batch = row.split(",")
    batch = int(batch)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn = build(name, variant, batch, args.quick, device)
    for _ in range(2 if variant.startswith("compile") else 1):
        fn()
    sync()
    times = []
    for _ in range(min(args.repeats, 2) if name.startswith(("hd", "label2city")) else args.repeats):  # seconds a call
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    ms = statistics.median(times)
    row = {"name": name, "variant": variant, "batch": batch, "ms": ms, "per_second": 1000 * batch / ms, "peak_mb": peak}
    return row | ({"chose": fn.chosen()} if hasattr(fn, "chosen") else {})


def main(argv=None):
    args = parse_args(argv)
    if args.row:
        return print(json.dumps(run_row(args, args.row)))
    if args.interleave:
        return print(json.dumps(backend_interleaved(args.interleave, args)))
    if args.compare:
        return print(compare(args))
    memory = "peak CUDA MB" if args.device.startswith("cuda") else "peak RSS MB"
    native, why = native_bf16()
    print(f"device {args.device} ({cpu_name()}; native bf16: {'yes' if native else 'no'}, {why}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads{', QUICK (tiny models)' if args.quick else ''}")
    print(f"| what | variant | batch | ms / call | images (steps) / s | {memory} |")
    print("|---|---|---:|---:|---:|---:|", flush=True)
    if args.backends:
        targets = args.targets.split(",") if args.targets else None
        unknown = set(targets or ()) - {*BACKEND_TARGETS, HD_BACKEND_TARGET}
        if unknown:
            raise SystemExit(f"--targets: unknown {', '.join(sorted(unknown))}")
        selected = backend_rows(args.hd, args.quick, targets)
    else:
        selected = train_rows(args.hd) if args.train else rows(args.hd, args.quick)
    results = []
    for name, variant, batch in selected:
        if args.only and not re.search(args.only, f"{name},{variant},{batch}"):
            continue
        if args.quick:  # one process for all rows: fast, but peak memory is then cumulative
            r = run_row(args, f"{name},{variant},{batch}")
        else:
            command = [sys.executable, __file__, "--row", f"{name},{variant},{batch}", "--device", args.device,
                       "--repeats", str(args.repeats)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{name} {variant} failed:\n{done.stderr[-2000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(r)
        variant = f"{r['variant']} ({r['chose']})" if "chose" in r else r["variant"]
        print(f"| {r['name']} | {variant} | {r['batch']} | {r['ms']:.1f} | {r['per_second']:.2f} | "
              f"{r['peak_mb']:.0f} |", flush=True)
        if args.json:  # rewritten after every row, so a long run keeps what it measured
            with open(args.json, "w") as f:
                json.dump({"device": args.device, "cpu": cpu_name(), "native_bf16": native, "torch": torch.__version__,
                           "threads": torch.get_num_threads(), "quick": args.quick, "rows": results}, f, indent=2)
    if args.backends:
        print(backend_summary(results, "the rows above, each in its own process"))
        together = []
        for target in dict.fromkeys(r["name"] for r in results):
            if args.quick:
                together += backend_interleaved(target, args)
                continue
            command = [sys.executable, __file__, "--interleave", target, "--device", args.device,
                       "--repeats", str(args.repeats)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{target} interleaved failed:\n{done.stderr[-2000:]}")
            together += json.loads(done.stdout.strip().splitlines()[-1])
        print(backend_summary(together, f"{', '.join(INTERLEAVED)} again in one process per target, "
                                        f"{args.repeats} interleaved rounds (median)"))
        if args.json:
            with open(args.json) as f:
                saved = json.load(f)
            with open(args.json, "w") as f:
                json.dump(saved | {"interleaved": together}, f, indent=2)
    elif args.train:
        print(train_summary(results, "rows above"))
        if not args.quick:
            print(train_summary(interleaved([r for r in train_rows(False) if r[0].startswith("train_")], args),
                                f"the unet rows again in one process, {args.repeats} interleaved rounds"))
    elif args.quick or args.only is None:
        print(compare(args) if args.quick else subprocess.run(
            [sys.executable, __file__, "--compare", "--device", args.device, "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=True).stdout)


def interleaved(rows: list[tuple[str, str, int]], args, warmups: int = 1) -> list[dict]:
    """`rows` timed in one process, one call of each per round (`--repeats` rounds after `warmups`
    calls of each), so that other load on the machine slows them alike: the rows' medians."""
    device = torch.device(args.device)
    fns = {row: build(*row, args.quick, device) for row in rows}
    for _ in range(warmups):
        for fn in fns.values():
            fn()
    times = {row: [] for row in rows}
    for _ in range(args.repeats):
        for row, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[row].append((time.perf_counter() - start) * 1000)
    return [{"name": n, "variant": v, "batch": b, "ms": statistics.median(times[(n, v, b)]),
             "per_second": 1000 * b / statistics.median(times[(n, v, b)])}
            | ({"chose": fns[n, v, b].chosen()} if hasattr(fns[n, v, b], "chosen") else {}) for n, v, b in rows]


def train_summary(results: list[dict], source: str) -> str:
    """Ours against the reference's step, in images per second of the same run."""
    rate = {(r["name"], r["variant"], r["batch"]): r["per_second"] for r in results}
    mp, why = resolve_mixed_precision("auto", True)
    lines = [f"\nFrom {source}: ours = {'bf16 autocast' if mp == 'bf16' else 'fp32'} ({why}) + channels_last:"]
    for name in sorted({n for n, _, _ in rate if n.startswith("train_")}):
        ref = rate.get((name, "reference", 1))
        best = max((b for n, v, b in rate if n == name and v == "ours"), key=lambda b: rate[(name, "ours", b)])
        lines.append(f"- {name}: ours {rate[(name, 'ours', best)]:.2f} img/s (batch {best}) = "
                     f"{rate[(name, 'ours', best)] / ref:.2f}x the reference's {ref:.2f} img/s; at batch 1 "
                     f"{rate[(name, 'ours', 1)] / ref:.2f}x")
        if (name, "channels_last", 4) in rate:
            lines.append(f"  - where the CPU has no bf16, ours is fp32 + channels_last: at batch 4 "
                         f"{rate[(name, 'channels_last', 4)] / ref:.2f}x the reference")
    if ("facades_loader", "cached", 10) in rate:
        lines.append(f"- loader: cached {rate[('facades_loader', 'cached', 10)]:.0f} pairs/s vs decoding "
                     f"{rate[('facades_loader', 'decode', 10)]:.0f} pairs/s")
    return "\n".join(lines)


def compare(args) -> str:
    """The fast-path variants of unet_256 at batch 1 in one process, timed round-robin (one call of
    each per round, `--repeats` rounds after warm-up): a table and a summary."""
    variants = ("eager",) + tuple(v for v in FAST_PATH if not (args.quick and v == "compile_freezing"))
    ms = {r["variant"]: r["ms"] for r in interleaved([("unet_256", v, 1) for v in variants], args, warmups=2)}
    lines = [f"\nunet_256, batch 1, {args.repeats} interleaved rounds in one process (median ms):",
             "| variant | ms / call | reference / variant |", "|---|---:|---:|"]
    lines += [f"| {v} | {ms[v]:.1f} | {ms['reference'] / ms[v]:.2f}x |" for v in variants]
    lines.append(f"- deterministic: fast is {ms['reference'] / ms['fast']:.2f}x the reference eager forward and "
                 f"{ms['onnxruntime'] / ms['fast']:.2f}x ONNX Runtime"
                 + (f"; compile+freezing {ms['compile_freezing']:.1f} ms" if "compile_freezing" in ms else ""))
    lines.append(f"- sampling (dropout, batch statistics): fast is {ms['sampling'] / ms['sampling_fast']:.2f}x plain")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
