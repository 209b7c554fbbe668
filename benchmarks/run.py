"""Speed table for the pix2pix generator and pipeline on this machine.

    python benchmarks/run.py [--device cpu] [--repeats 10] [--threads N]

Prints milliseconds per 256x256 image (median of `--repeats` after a warm-up) for unet_256
(ngf 64, BatchNorm, dropout): the raw forward in eval mode, and the full pipeline (PIL resize in
and out, pre/post-processing) in both of its modes. All rows are measured in the same run.
"""

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image

from p2p_models import Pix2PixPipeline, UNetGenerator


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    return parser.parse_args(argv)


def median_ms(fn, repeats, sync):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    pipe = Pix2PixPipeline(generator=UNetGenerator(num_downs=8, ngf=64).eval(), image_size=256).to(device)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    x = torch.randn(1, 3, 256, 256, device=device)
    x4 = torch.randn(4, 3, 256, 256, device=device)

    def forward(batch):
        with torch.no_grad():
            pipe.generator(batch)

    rows = [
        ("generator forward, eval, batch 1", median_ms(lambda: forward(x), args.repeats, sync)),
        ("generator forward, eval, batch 4 (per image)", median_ms(lambda: forward(x4), args.repeats, sync) / 4),
        ("pipeline, 512x512 PIL, sampled (default)", median_ms(lambda: pipe(image, seed=0), args.repeats, sync)),
        ("pipeline, 512x512 PIL, deterministic", median_ms(lambda: pipe(image, deterministic=True), args.repeats, sync)),
    ]
    print(f"unet_256 (ngf 64, 54.4M params), device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"| {'what':<46} | ms / image |")
    print(f"|{'-' * 48}|-----------:|")
    for name, ms in rows:
        print(f"| {name:<46} | {ms:10.1f} |")


if __name__ == "__main__":
    main()
