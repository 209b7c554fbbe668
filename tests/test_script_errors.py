"""Mistakes in a training or evaluation command (missing files, bad flags or values) end the script at
once with one line naming what was wrong, exit status 2, no traceback, no Hub retries and no empty
output folder left behind."""

import subprocess
import sys

import pytest
from conftest import ROOT, environment

FACADES = ROOT / "tests" / "fixtures" / "facades"
CITYSCAPES = ROOT / "tests" / "fixtures" / "cityscapes"
TINY = ["--num_downs", "5", "--ngf", "4", "--ndf", "4", "--load_size", "36", "--crop_size", "32"]

CASES = {
    "missing dataset": (["train/train_pix2pix.py", "--dataset", "datasets/nope", "--output_dir", "runs/x"],
                        "--dataset datasets/nope: no such file or folder"),
    "bad crop size": (["train/train_pix2pix.py", "--dataset", FACADES, "--output_dir", "runs/x", *TINY[:6],
                       "--crop_size", "40"], "--crop_size 40 must be divisible by 2**num_downs = 32"),
    "missing checkpoint": (["train/train_pix2pix.py", "--dataset", FACADES, "--output_dir", "runs/x",
                            "--resume_from_checkpoint", "runs/x/checkpoint-9"],
                           "--resume_from_checkpoint runs/x/checkpoint-9: no such file or folder"),
    "missing VGG weights file": (["train/train_pix2pixhd.py", "--dataset", CITYSCAPES, "--label_nc", "35",
                                  "--vgg_weights", "vgg19.safetensors", "--output_dir", "runs/hd_global"],
                                 "--vgg_weights vgg19.safetensors: no such file or folder"),
    "no VGG weights": (["train/train_pix2pixhd.py", "--dataset", CITYSCAPES, "--label_nc", "35", "--output_dir",
                        "runs/hd_global"], "the VGG perceptual loss needs ImageNet VGG19 weights"),
    "missing G1": (["train/train_pix2pixhd.py", "--dataset", CITYSCAPES, "--label_nc", "35", "--no_vgg_loss",
                    "--netG", "local", "--load_pretrain", "runs/hd_global", "--output_dir", "runs/hd_local"],
                   "--load_pretrain runs/hd_global: no such file or folder"),
    "missing segmenter": (["train/evaluate.py", "--model", ROOT / "pretrained" / "facades", "--dataset", FACADES,
                           "--segmenter", "runs/facades_segmenter", "--no_fid"],
                          "--segmenter runs/facades_segmenter: no segmenter.json there"),
    "missing model": (["train/evaluate.py", "--model", "runs/facades", "--dataset", FACADES, "--no_fid"],
                      "--model runs/facades: no such folder"),
    "missing pipeline": (["train/encode_features.py", "--model", "runs/hd_global", "--dataset", CITYSCAPES],
                         "runs/hd_global: no such folder"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_command_ends_with_one_line(case, tmp_path):
    args, message = CASES[case]
    for folder in ("runs", "datasets"):  # as in a clone with its runs/ and datasets/
        (tmp_path / folder).mkdir()
    # online, with a Hub that never answers: only an immediate error ends within the timeout
    env = {**environment(tmp_path), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://10.255.255.1"}
    done = subprocess.run([sys.executable, str(ROOT / args[0]), *map(str, args[1:])], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    script = args[0].split("/")[-1]
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: ") and message in last, last
    assert list((tmp_path / "runs").iterdir()) == []  # no empty output folder
