"""Speed and memory table for the p2p models on this machine.

    python benchmarks/run.py [--device cpu] [--repeats 5] [--hd] [--quick] [--json results.json]

Each row runs in a fresh process, so its peak resident memory (weights, activations and the
interpreter, ~0.3 GB of it torch itself) is its own. Times are medians of `--repeats` runs after a
warm-up, in ms per image. Rows:
- unet_256 (ngf 64, BatchNorm, dropout): eval forward at batch 1 and 4; the full pipeline (PIL
  512x512 in and out) sampled (default) and deterministic;
- with --hd, pix2pixHD label2city generators (35 labels + boundary map): the global generator G1
  (ngf 64) at 512x1024 and the local enhancer G2 (ngf 32, G1 inside) at 1024x2048.
`--quick` shrinks every model and size (for CI: checks the script, not the machine).
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

from p2p_models import GlobalGenerator, LocalEnhancer, Pix2PixPipeline, UNetGenerator

CASES = {
    # name: (description, builder of (callable, images per call))
    "unet_b1": "unet_256 forward, eval, batch 1, 256x256",
    "unet_b4": "unet_256 forward, eval, batch 4, 256x256",
    "pipe_sampled": "pix2pix pipeline, 512x512 PIL, sampled",
    "pipe_det": "pix2pix pipeline, 512x512 PIL, deterministic",
    "hd_global": "pix2pixHD G1 (global), 512x1024",
    "hd_local": "pix2pixHD G2 (global+local), 1024x2048",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--hd", action="store_true", help="add the pix2pixHD rows (slow on a CPU)")
    p.add_argument("--quick", action="store_true", help="tiny models and sizes")
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: run one row in this process
    return p.parse_args(argv)


def build(case: str, quick: bool, device):
    """(function running one call, images per call)."""
    torch.manual_seed(0)
    s = 4 if quick else 1  # size divisor
    if case.startswith("unet") or case.startswith("pipe"):
        g = UNetGenerator(num_downs=6 if quick else 8, ngf=8 if quick else 64).eval().to(device)
        size = 64 if quick else 256
        if case.startswith("unet"):
            batch = 4 if case == "unet_b4" else 1
            x = torch.randn(batch, 3, size, size, device=device)
            return (lambda: g(x)), batch
        pipe = Pix2PixPipeline(generator=g, image_size=size).to(device)
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512 // s, 512 // s, 3), dtype=np.uint8))
        deterministic = case == "pipe_det"
        return (lambda: pipe(image, seed=0, deterministic=deterministic)), 1
    if case == "hd_global":
        g = GlobalGenerator(36, 3, ngf=8 if quick else 64, n_blocks=1 if quick else 9).eval().to(device)
        x = torch.randn(1, 36, 512 // s, 1024 // s, device=device)
    else:
        g = LocalEnhancer(36, 3, ngf=4 if quick else 32, n_blocks_global=1 if quick else 9).eval().to(device)
        x = torch.randn(1, 36, 1024 // s, 2048 // s, device=device)
    return (lambda: g(x)), 1


def run_case(args):
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn, per_call = build(args.case, args.quick, device)
    times = []
    with torch.no_grad():
        for i in range(args.repeats + 1):
            start = time.perf_counter()
            fn()
            sync()
            if i:
                times.append((time.perf_counter() - start) * 1000 / per_call)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps({"case": args.case, "ms_per_image": statistics.median(times), "peak_mb": peak}))


def main(argv=None):
    args = parse_args(argv)
    if args.case:
        return run_case(args)
    cases = [c for c in CASES if args.hd or not c.startswith("hd")]
    rows = []
    for case in cases:
        command = [sys.executable, __file__, "--case", case, "--device", args.device, "--repeats", str(args.repeats)]
        done = subprocess.run(command + (["--quick"] if args.quick else []), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{case} failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    memory = "peak CUDA memory" if args.device.startswith("cuda") else "peak RSS"
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
          f"{', QUICK (tiny models)' if args.quick else ''}")
    print(f"| {'what':<46} | ms / image | {memory} (MB) |")
    print(f"|{'-' * 48}|-----------:|{'-' * (len(memory) + 6)}:|")
    for row in rows:
        print(f"| {CASES[row['case']]:<46} | {row['ms_per_image']:10.1f} | {row['peak_mb']:{len(memory) + 6}.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "torch": torch.__version__, "quick": args.quick, "rows": rows}, f,
                      indent=2)


if __name__ == "__main__":
    main()
