"""train/train_pix2pixhd.py and train/encode_features.py on a few real Cityscapes samples
(downscaled fixtures with real instance maps), through real `accelerate launch`."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ACCELERATE, ROOT, environment, seeded
from PIL import Image
from safetensors.torch import load_file, save_file

from p2p_models import GlobalGenerator, Pix2PixHDPipeline
from p2p_models.vgg import VGG19Features
from train.common import score
from train.data import LabelImageDataset, load_label_splits, train_val_split
from train.train_pix2pixhd import hd_linear_decay

FIXTURE = ROOT / "tests" / "fixtures" / "cityscapes"
STEMS = sorted(p.stem for p in (FIXTURE / "train_label").iterdir())
TINY = ["--dataset", str(FIXTURE), "--label_nc", "35", "--load_size", "128", "--ngf", "8",
        "--n_downsample_global", "2", "--n_blocks_global", "1", "--ndf", "8", "--num_D", "2", "--nef", "4",
        "--n_downsample_E", "2", "--validation_fraction", "0.25", "--checkpointing_steps", "1000",
        "--validation_steps", "1000", "--num_epochs", "1", "--num_epochs_decay", "1", "--n_clusters", "3"]


def launch(tmp_path, args, check=True, **env):
    command = [str(ACCELERATE), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", str(ROOT / "train" / "train_pix2pixhd.py"), *args]
    done = subprocess.run(command, env=environment(tmp_path, **env), cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    if check:
        assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    return done


def copy_examples(root, split, stems, names=None):
    """Fixture examples `stems` as a Cityscapes-style `split` of `root` (renamed to `names`)."""
    for kind, suffix in (("label", ".png"), ("img", ".jpg"), ("inst", ".png")):
        (root / f"{split}_{kind}").mkdir(parents=True, exist_ok=True)
        for stem, name in zip(stems, names or stems):
            shutil.copy(FIXTURE / f"train_{kind}" / f"{stem}{suffix}", root / f"{split}_{kind}" / f"{name}{suffix}")


@pytest.fixture(scope="module")
def global_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hd")
    torch.manual_seed(0)
    save_file(VGG19Features().state_dict(), tmp / "vgg19.safetensors")  # torchvision layout, random values
    info = {"names": [f"class{i}" for i in range(35)], "colors": [[i * 7, 255 - i * 7, (i * 50) % 256]
                                                                   for i in range(35)]}
    (tmp / "info.json").write_text(json.dumps(info))
    out = tmp / "global"
    launch(tmp, [*TINY, "--instance_feat", "--vgg_weights", str(tmp / "vgg19.safetensors"), "--label_info",
                 str(tmp / "info.json"), "--output_dir", str(out)])
    return tmp, out


def test_global_run_gives_an_editable_pipeline(global_run):
    tmp, out = global_run
    card = (out / "README.md").read_text()
    assert "ran 6 steps = 2.00 epochs" in card and "10 * VGG19" in card and "10 * feature matching" in card
    assert len(list((out / "samples").glob("*.png"))) == 1
    pipe = Pix2PixHDPipeline.from_pretrained(out)
    assert type(pipe.generator).__name__ == "GlobalGenerator" and pipe.encoder is not None
    assert pipe.label_processor.class_names[3] == "class3" and pipe.working_size == (64, 128)
    assert int(pipe.style_bank.counts.sum()) > 0
    # validation reconstructed the held-out example through the pipeline: called as a user would, with
    # its photo as the style image, the saved pipeline gives the recorded score
    held_out = train_val_split(load_label_splits(str(FIXTURE)), "train", None, 0.25, 0)[1]
    item = LabelImageDataset(held_out, load_size=128, train=False, size_factor=4)[0]
    real = (item["image"][None] + 1) / 2
    fake = pipe(item["label"], item["instance"], style_image=real[0], size_mode="native",
                output_type="pt").images
    scores = {}
    score(fake, real, scores)
    assert scores["l1"][0] == pytest.approx(json.loads((out / "validation_metrics.json").read_text())["l1"], rel=1e-5)
    name = sorted((FIXTURE / "train_label").iterdir())[0].name
    labels, instances = Image.open(FIXTURE / "train_label" / name), Image.open(FIXTURE / "train_inst" / name)
    a = np.asarray(pipe(labels, instances, generator=seeded(0)).images[0])
    assert a.shape == (128, 256, 3)
    assert np.array_equal(a, np.asarray(pipe(labels, instances, generator=seeded(0)).images[0]))
    cls = int(pipe.style_bank.counts.argmax())
    styled = [np.asarray(pipe(labels, instances, styles={cls: k}, generator=seeded(0)).images[0])
              for k in range(int(pipe.style_bank.counts[cls]))]
    if (np.asarray(labels) == cls).any():
        assert any(not np.array_equal(styled[0], s) for s in styled[1:])


def test_encode_features_rebuilds_the_same_bank(global_run):
    tmp, out = global_run
    rebuilt = tmp / "rebuilt"
    done = subprocess.run([sys.executable, str(ROOT / "train" / "encode_features.py"), "--model", str(out),
                           "--dataset", str(FIXTURE), "--n_clusters", "3", "--output_dir", str(rebuilt)],
                          env=environment(tmp), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    original = load_file(out / "style_bank" / "diffusion_pytorch_model.safetensors")
    new = load_file(rebuilt / "style_bank" / "diffusion_pytorch_model.safetensors")
    # training held one example out for validation; the rebuild encodes the whole train split
    assert (new["counts"] >= original["counts"]).all() and new["counts"].sum() > 0


def test_local_enhancer_starts_from_the_global_run_with_g1_fixed(global_run):
    tmp, out = global_run
    local = tmp / "local"
    done = launch(tmp, [*TINY, "--netG", "local", "--ngf", "4", "--load_size", "256", "--n_blocks_local", "1",
                        "--instance_feat", "--no_vgg_loss", "--load_pretrain", str(out), "--niter_fix_global", "2",
                        "--max_train_steps", "2", "--output_dir", str(local)])
    assert f"MultiscaleDiscriminator weights loaded from {out / 'discriminator'}" in done.stderr  # stage 2's D: stage 1's
    g1 = GlobalGenerator.from_pretrained(out / "generator")
    pipe = Pix2PixHDPipeline.from_pretrained(local)
    assert type(pipe.generator).__name__ == "LocalEnhancer" and pipe.working_size == (128, 256)
    for name, p in pipe.generator.global_layers.state_dict().items():
        assert torch.equal(p, g1.layers.state_dict()[name]), f"G1 weight {name} moved while fixed"

    # G2 is built with G1's upsampling: another one stops the run at set-up, naming both
    other = launch(tmp, [*TINY, "--netG", "local", "--ngf", "4", "--load_size", "256", "--n_blocks_local", "1",
                         "--instance_feat", "--no_vgg_loss", "--load_pretrain", str(out), "--upsampling", "nearest",
                         "--max_train_steps", "1", "--output_dir", str(tmp / "other")], check=False)
    assert other.returncode != 0 and "G1 upsamples with 'transposed'" in other.stderr

    # a local run given to --load_pretrain is fine-tuned whole: G1, G2, the encoder and D (lr 0: kept as loaded)
    tuned = tmp / "tuned"
    launch(tmp, [*TINY, "--netG", "local", "--ngf", "4", "--load_size", "256", "--n_blocks_local", "1",
                 "--instance_feat", "--no_vgg_loss", "--load_pretrain", str(local), "--learning_rate", "0",
                 "--max_train_steps", "1", "--output_dir", str(tuned)])
    for part in ("generator", "encoder", "discriminator"):
        loaded = load_file(local / part / "diffusion_pytorch_model.safetensors")
        saved = load_file(tuned / part / "diffusion_pytorch_model.safetensors")
        assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in loaded), part


def test_vgg_loss_without_weights_fails_clearly(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "train" / "train_pix2pixhd.py"), *TINY, "--output_dir",
                           str(tmp_path / "x")], env=environment(tmp_path), capture_output=True, text=True)
    assert done.returncode != 0
    assert "needs ImageNet VGG19 weights" in done.stderr and "--no_vgg_loss" in done.stderr
    assert not (tmp_path / "x" / "model_index.json").exists()


def test_hd_schedule():
    f = hd_linear_decay(100, 100)
    assert f(99) == 1.0 and f(100) == 1.0 and f(101) == pytest.approx(0.99) and f(199) == pytest.approx(0.01)
    assert hd_linear_decay(2, 0)(5) == 1.0


def test_resume_and_two_processes(tmp_path):
    base = [*TINY, "--no_vgg_loss", "--instance_feat", "--checkpointing_steps", "2", "--num_epochs", "2"]
    launch(tmp_path, [*base, "--output_dir", str(tmp_path / "full")])
    launch(tmp_path, [*base, "--output_dir", str(tmp_path / "parts"), "--max_train_steps", "5"])
    launch(tmp_path, [*base, "--output_dir", str(tmp_path / "parts"), "--resume_from_checkpoint", "latest"])
    for part in ("generator", "encoder"):
        full = load_file(tmp_path / "full" / part / "diffusion_pytorch_model.safetensors")
        resumed = load_file(tmp_path / "parts" / part / "diffusion_pytorch_model.safetensors")
        assert all(torch.equal(full[k], resumed[k]) for k in full), part
    assert "this run resumed at step 4" in (tmp_path / "parts" / "README.md").read_text()
    assert "resumed" not in (tmp_path / "full" / "README.md").read_text()

    ddp = tmp_path / "ddp"
    command = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "train" / "train_pix2pixhd.py"),
               *TINY, "--no_vgg_loss", "--instance_feat", "--rank_report", "--output_dir", str(ddp)]
    done = subprocess.run(command, env=environment(tmp_path), cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    reports = [json.loads((ddp / "rank_report" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["generator_parameters_sha256"] == reports[1]["generator_parameters_sha256"]
    seen = [r["samples_seen"] for r in reports]
    assert len(seen[0]) == len(seen[1]) == 4  # 3 examples, 2 per process per epoch (padded), 2 epochs
    assert set(seen[0][:2]) | set(seen[1][:2]) == {0, 1, 2}  # epoch 0: the processes split the data
    Pix2PixHDPipeline.from_pretrained(ddp)


def test_unreadable_validation_photos_do_not_cost_the_model(tmp_path):
    data = tmp_path / "city"
    copy_examples(data, "train", STEMS[:3])
    copy_examples(data, "val", STEMS[3:])
    photo = data / "val_img" / f"{STEMS[3]}.jpg"
    photo.write_bytes(photo.read_bytes()[:300])
    out = tmp_path / "run"
    done = launch(tmp_path, ["--dataset", str(data), *TINY[2:], "--no_vgg_loss", "--max_train_steps", "2",
                             "--output_dir", str(out)])
    assert f"{photo.name}: cannot be read as an image" in done.stderr
    assert "none of the 1 validation example(s) could be read: the model is saved" in done.stderr
    metrics = json.loads((out / "validation_metrics.json").read_text())
    assert metrics["num_samples"] == 0 and metrics["num_skipped"] == 1 and "l1" not in metrics
    assert "Not measured: none of the 1 validation example(s) could be read." in (out / "README.md").read_text()
    assert not (out / "samples").exists()
    pipe = Pix2PixHDPipeline.from_pretrained(out)
    assert pipe.working_size == (64, 128)  # read off a training example


def test_bad_label_ids_are_named_or_skipped(tmp_path):
    data = tmp_path / "city"
    copy_examples(data, "train", STEMS)
    copy_examples(data, "val", STEMS[:1])
    copy_examples(data, "train", STEMS[:2], ["zz_badlabel", "zz_broken"])
    labels = np.array(Image.open(data / "train_label" / "zz_badlabel.png"))
    labels[:8, :8] = 40
    Image.fromarray(labels).save(data / "train_label" / "zz_badlabel.png")
    args = ["--dataset", str(data), *TINY[2:], "--no_vgg_loss", "--max_train_steps", "5"]
    done = launch(tmp_path, [*args, "--output_dir", str(tmp_path / "strict")], check=False)
    assert done.returncode != 0
    assert "zz_badlabel.png: label ids must lie in [0, 35) for --label_nc 35, found 40" in done.stderr
    photo = data / "train_img" / "zz_broken.jpg"
    photo.write_bytes(photo.read_bytes()[:300])
    out = tmp_path / "run"
    done = launch(tmp_path, [*args, "--skip_bad_images", "--output_dir", str(out)])
    assert "skipped 2 bad training example(s), e.g." in done.stderr
    assert "(4 training examples" in (out / "README.md").read_text()
