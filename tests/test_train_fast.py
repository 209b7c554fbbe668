"""Training that gets the most out of a CPU: precision chosen from the CPU at hand, the decoded-image
cache, EMA weights, batch size and learning-rate scaling, and runs cut by --max_train_minutes that
resume exactly. Real `accelerate launch` runs on the fixtures."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image
from safetensors.torch import load_file
from test_train_pix2pix import SMALL, generator_weights, launch
from test_train_pix2pixhd import FIXTURE as CITYSCAPES
from test_train_pix2pixhd import TINY as HD_TINY
from test_train_pix2pixhd import launch as launch_hd

from p2p_models import GANLoss, GlobalGenerator, Pix2PixPipeline, UNetGenerator, pix2pix_generator_loss
from p2p_models.cpu import native_bf16
from train.common import resolve_mixed_precision, scaled_learning_rate
from train.data import BadImageError, LabelImageDataset, PairedImageDataset, load_label_splits, load_splits

FACADES = ROOT / "tests" / "fixtures" / "facades"


def test_native_bf16_is_read_from_the_cpu_flags_or_forced(monkeypatch):
    monkeypatch.delenv("P2P_NATIVE_BF16", raising=False)
    assert native_bf16({"avx2", "avx512f", "avx512_bf16"})[0]
    assert native_bf16({"amx_bf16", "amx_tile"})[0]
    native, why = native_bf16({"avx2", "avx512f", "avx512bw"})  # oneDNN would emulate bf16 here
    assert not native and "none of avx512_bf16, amx_bf16" in why
    assert resolve_mixed_precision("auto", cpu=True)[0] == ("bf16" if native_bf16()[0] else "no")
    monkeypatch.setenv("P2P_NATIVE_BF16", "0")
    assert resolve_mixed_precision("auto", cpu=True) == ("no", "--mixed_precision auto: P2P_NATIVE_BF16=0")
    monkeypatch.setenv("P2P_NATIVE_BF16", "1")
    assert resolve_mixed_precision("auto", cpu=True)[0] == "bf16"
    assert resolve_mixed_precision("no", cpu=True)[0] == "no"  # an explicit choice is kept


def test_under_bf16_autocast_the_output_and_losses_stay_fp32():
    torch.manual_seed(0)
    g = UNetGenerator(num_downs=5, ngf=8)
    x, target = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake = g(x)
        loss, parts = pix2pix_generator_loss(GANLoss(), torch.randn(2, 1, 4, 4, dtype=torch.bfloat16), fake, target)
    assert fake.dtype == torch.float32 and loss.dtype == torch.float32 and parts["g_gan"].dtype == torch.float32
    assert g(x).dtype == torch.float32 and g.half()(x.half()).dtype == torch.float16  # no autocast: dtype kept
    hd = GlobalGenerator(4, 3, ngf=8, n_downsampling=2, n_blocks=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert hd(torch.randn(1, 4, 32, 32)).dtype == torch.float32


def batches(dataset, epochs=2):
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(1))
    out = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        out += list(loader)
    return out


def assert_same_batches(cached, plain):
    assert len(cached) == len(plain)
    for c, p in zip(cached, plain):
        assert c.keys() == p.keys()
        for k in c:
            assert c[k].dtype == p[k].dtype and torch.equal(c[k], p[k]), k


@pytest.mark.parametrize("options", [{}, {"max_load_size": 90}, {"layout": "colorization"}, {"train": False}])
def test_the_decoded_cache_gives_the_same_batches_as_decoding(tmp_path, options):
    split = load_splits(str(FACADES))["train"]
    common = dict(load_size=72, crop_size=64, seed=5) | options
    cached = PairedImageDataset(split, **common)
    cached.use_cache(tmp_path)
    assert_same_batches(batches(cached), batches(PairedImageDataset(split, **common)))
    built = list(tmp_path.iterdir())
    assert len(built) == 1 and (built[0] / "arrays.bin").stat().st_size > 0
    # a second run on the same data and sizes reuses the cache; other data gets its own
    again = PairedImageDataset(split, **common)
    again.use_cache(tmp_path)
    assert list(tmp_path.iterdir()) == built and again.cache.folder == built[0]
    PairedImageDataset(split, **(common | {"direction": "BtoA"})).use_cache(tmp_path)
    assert len(list(tmp_path.iterdir())) == 2


def test_an_image_edited_in_place_is_decoded_again(tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(FACADES, photos)
    split = load_splits(str(photos))["train"]
    first = PairedImageDataset(split, load_size=72, crop_size=64, train=False)
    first.use_cache(tmp_path / "cache")
    i = [n for n in range(len(split)) if first.dataset[n]["image"]["path"].endswith("/4.jpg")][0]
    Image.open(photos / "train" / "4.jpg").transpose(Image.FLIP_TOP_BOTTOM).save(photos / "train" / "4.jpg")
    again = PairedImageDataset(load_splits(str(photos))["train"], load_size=72, crop_size=64, train=False)
    again.use_cache(tmp_path / "cache")
    assert again.cache.folder != first.cache.folder
    assert torch.equal(again[i]["A"], PairedImageDataset(split, load_size=72, crop_size=64, train=False)[i]["A"])
    assert not torch.equal(again[i]["A"], first[i]["A"])


def test_the_decoded_cache_for_label_maps_and_its_errors(tmp_path):
    split = load_label_splits(str(CITYSCAPES))["train"]
    for train in (True, False):
        common = dict(load_size=128, crop_size=64 if train else None, size_factor=32, train=train)
        cached = LabelImageDataset(split, **common)
        cached.use_cache(tmp_path / str(train))
        assert_same_batches(batches(cached), batches(LabelImageDataset(split, **common)))

    photos = tmp_path / "photos"
    shutil.copytree(FACADES, photos)
    (photos / "train" / "3.jpg").write_bytes(b"not a jpeg")
    split = load_splits(str(photos))["train"]
    plain = PairedImageDataset(split, load_size=72, crop_size=64)
    cached = PairedImageDataset(split, load_size=72, crop_size=64)
    cached.use_cache(tmp_path / "bad")  # an unreadable example is stored as its error...
    bad = [i for i in range(len(plain)) if plain.dataset[i]["image"]["path"].endswith("/3.jpg")]
    for i in bad:
        with pytest.raises(BadImageError) as from_files:
            plain[i]
        with pytest.raises(BadImageError) as from_cache:
            cached[i]
        assert str(from_cache.value) == str(from_files.value) and "3.jpg" in str(from_cache.value)
    assert len(bad) == 1 and len(cached.check_all()) == 1 and len(cached) == len(split) - 1  # ...and dropped


def test_learning_rate_scaling_rules():
    class Args:
        learning_rate, train_batch_size = 2e-4, 4

    for rule, factor in (("none", 1), ("sqrt", 8**0.5), ("linear", 8)):
        Args.lr_scaling = rule
        assert scaled_learning_rate(Args, num_processes=2) == pytest.approx(2e-4 * factor)


def test_max_train_minutes_stops_with_a_checkpoint_and_resumes_exactly_with_ema(tmp_path):
    args = [*SMALL, "--num_epochs", "2", "--num_epochs_decay", "2", "--checkpointing_steps", "20", "--seed", "4",
            "--ema_decay", "0.9", "--train_batch_size", "2"]
    full = launch(tmp_path, [*args, "--output_dir", str(tmp_path / "full")], P2P_NATIVE_BF16="1")
    assert "precision: bf16 autocast (--mixed_precision auto: P2P_NATIVE_BF16=1)" in full.stderr
    parts = tmp_path / "parts"
    cut = launch(tmp_path, [*args, "--output_dir", str(parts), "--max_train_minutes", "0.0001"], P2P_NATIVE_BF16="1")
    assert "--max_train_minutes 0.0001 reached at step 1 of 20" in cut.stderr
    assert [p.name for p in parts.glob("checkpoint-*")] == ["checkpoint-1"]
    assert "Stopped by --max_train_minutes at step 1 of 20" in (parts / "README.md").read_text()
    assert json.loads((parts / "validation_metrics.json").read_text())["steps"] == 1

    Pix2PixPipeline.from_pretrained(parts)  # a usable pipeline meanwhile

    # the saved pipeline holds the EMA weights of the last checkpoint's EMA state, not the trained ones
    full = tmp_path / "full"
    saved = generator_weights(full)
    pipe = Pix2PixPipeline.from_pretrained(full)
    assert not pipe.generator.config.sample_with_batch_statistics  # trained at batch 2: samples with running statistics
    names = [name for name, _ in pipe.generator.named_parameters()]
    shadow = torch.load(full / "checkpoint-20" / "custom_checkpoint_0.pkl", weights_only=True)["shadow_params"]
    trained = load_file(full / "checkpoint-20" / "model.safetensors")
    assert len(shadow) == len(names)
    assert all(torch.equal(saved[n], s) for n, s in zip(names, shadow))
    assert all(torch.equal(p.detach(), saved[n]) for n, p in pipe.generator.named_parameters())
    assert not any(torch.equal(saved[n], trained[n]) for n in names if "norm" not in n)

    launch(tmp_path, [*args, "--output_dir", str(parts), "--resume_from_checkpoint", "latest"], P2P_NATIVE_BF16="1")
    a, b = generator_weights(tmp_path / "full"), generator_weights(parts)
    assert all(torch.equal(a[k], b[k]) for k in a), "a cut and resumed run differs from the uninterrupted one"
    card = (parts / "README.md").read_text()
    assert "Stopped" not in card and "this run resumed at step 1" in card
    assert "EMA of the generator weights (decay 0.9), saved and validated" in card and "bf16 autocast" in card


def test_fp32_where_the_cpu_has_no_bf16_and_an_hd_run_with_the_fast_options(tmp_path):
    done = launch_hd(tmp_path, [*HD_TINY, "--no_vgg_loss", "--instance_feat", "--ema_decay", "0.8",
                                "--train_batch_size", "2", "--output_dir", str(tmp_path / "hd")], P2P_NATIVE_BF16="0")
    assert "precision: no (--mixed_precision auto: P2P_NATIVE_BF16=0); memory format: channels_last" in done.stderr
    assert "decoded 3 examples once" in done.stderr
    card = (tmp_path / "hd" / "README.md").read_text()
    assert "- Compute: fp32, channels_last" in card and "EMA of the generator weights (decay 0.8)" in card
    weights = load_file(tmp_path / "hd" / "generator" / "diffusion_pytorch_model.safetensors")
    assert all(w.is_contiguous() for w in weights.values())
