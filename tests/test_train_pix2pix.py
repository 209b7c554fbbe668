"""train/train_pix2pix.py through real `accelerate launch`, on a few real facades pairs."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import ACCELERATE, ROOT, environment, git_commit_folder, seeded
from PIL import Image
from safetensors.torch import load_file

from p2p_models import Pix2PixPipeline
from train.common import linear_decay
from train.evaluate import main as evaluate
from train.train_pix2pix import label_palette, parse_args

FACADES = ROOT / "tests" / "fixtures" / "facades"
SMALL = ["--dataset", str(FACADES), "--direction", "BtoA", "--load_size", "72",
         "--crop_size", "64", "--num_downs", "6", "--ngf", "8", "--ndf", "8", "--validation_steps", "1000"]


def launch_command(args, processes=1):
    multi = ["--multi_gpu"] if processes > 1 else []
    return [str(ACCELERATE), "launch", *multi, "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "train" / "train_pix2pix.py"), *args]


def launch(tmp_path, args, processes=1, **env):
    done = subprocess.run(launch_command(args, processes), env=environment(tmp_path, **env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    return done


def generator_weights(output_dir: Path) -> dict:
    return load_file(output_dir / "generator" / "diffusion_pytorch_model.safetensors")


def test_train_end_to_end(tmp_path, upload_hub):
    endpoint, uploaded = upload_hub
    out = tmp_path / "run"
    launch(tmp_path, [*SMALL, "--output_dir", str(out), "--num_epochs", "1", "--num_epochs_decay", "1",
                      "--validation_steps", "6", "--checkpointing_steps", "6", "--report_to", "tensorboard",
                      "--push_to_hub", "--hub_model_id", "someone/facades-tiny"],
           HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="0", HF_TOKEN="hf_test")
    # 10 pairs, 1 held out for validation: 9 steps per epoch, 2 epochs
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-18", "checkpoint-6"]
    grids = sorted((out / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["step-0000006.png", "step-0000012.png", "step-0000018.png"]
    assert Image.open(grids[-1]).size == (3 * 64, 64)  # input | output | target, one validation row
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    metrics = json.loads((out / "validation_metrics.json").read_text())
    assert metrics["steps"] == 18 and 0 < metrics["l1"] < 1 and metrics["psnr"] > 0
    card = (out / "README.md").read_text()
    assert "ran 18 steps = 2.00 epochs" in card and f"| {metrics['l1']:.4f} |" in card
    assert "accelerate launch train/train_pix2pix.py --dataset" in card

    pipe = Pix2PixPipeline.from_pretrained(out)
    assert pipe.config.direction == "BtoA" and pipe.working_size == (64, 64)
    assert pipe.generator.config.sample_with_batch_statistics  # trained at batch 1: samples as the paper tests
    label = Image.open(ROOT / "tests" / "fixtures" / "facades" / "train" / "1.jpg").crop((80, 0, 160, 80))
    assert pipe(label, generator=seeded(0)).images[0].size == (80, 80)

    pushed = uploaded / "someone" / "facades-tiny"
    assert (pushed / "README.md").read_text() == card and 'from_pretrained("someone/facades-tiny")' in card
    assert (pushed / "generator" / "diffusion_pytorch_model.safetensors").read_bytes() == \
        (out / "generator" / "diffusion_pytorch_model.safetensors").read_bytes()


def test_same_seed_same_weights_and_resume_after_sigkill(tmp_path):
    args = [*SMALL, "--num_epochs", "20", "--num_epochs_decay", "20", "--max_train_steps", "240",
            "--checkpointing_steps", "20", "--checkpoints_total_limit", "2", "--seed", "7"]
    launch(tmp_path, [*args, "--output_dir", str(tmp_path / "a")])
    launch(tmp_path, [*args, "--output_dir", str(tmp_path / "b")])
    a, b = generator_weights(tmp_path / "a"), generator_weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(launch_command([*args, "--output_dir", str(killed)]), env=environment(tmp_path),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (killed / "checkpoint-60").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before checkpoint-60"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model_index.json").exists()  # really stopped mid-way
    launch(tmp_path, [*args, "--output_dir", str(killed), "--resume_from_checkpoint", "latest"])
    resumed = generator_weights(killed)
    assert all(torch.equal(resumed[k], a[k]) for k in a), "resumed run differs from the uninterrupted one"
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-220", "checkpoint-240"]
    assert "resumed at step" in (killed / "README.md").read_text()  # the card's wall time is this run's
    assert "resumed at step" not in (tmp_path / "a" / "README.md").read_text()


def test_latest_falls_back_past_a_damaged_checkpoint_and_resumes_exactly(tmp_path):
    args = [*SMALL, "--num_epochs", "1", "--num_epochs_decay", "1", "--max_train_steps", "8", "--checkpointing_steps",
            "2", "--seed", "3"]
    launch(tmp_path, [*args, "--output_dir", str(tmp_path / "full")])
    parts = tmp_path / "parts"
    launch(tmp_path, [*args, "--output_dir", str(parts), "--max_train_steps", "6"])
    damaged = parts / "checkpoint-6" / "model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # cut short, as by a full disk
    done = launch(tmp_path, [*args, "--output_dir", str(parts), "--resume_from_checkpoint", "latest"])
    assert "checkpoint-6 is damaged, model.safetensors cannot be read" in done.stderr
    assert "checkpoint-4 at step 4" in done.stderr
    assert json.loads((parts / "validation_metrics.json").read_text())["steps_this_run"] == 4
    full, resumed = generator_weights(tmp_path / "full"), generator_weights(parts)
    assert all(torch.equal(full[k], resumed[k]) for k in full), "resumed run differs from the uninterrupted one"


def test_damaged_checkpoints_are_named_and_never_half_loaded(tmp_path):
    from types import SimpleNamespace

    from accelerate import Accelerator

    from train.common import resume

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    model, opt = accelerator.prepare(model, torch.optim.Adam(model.parameters()))
    weights = {}
    for step in (10, 20):
        torch.nn.init.normal_(model.weight)
        weights[step] = model.weight.detach().clone()
        accelerator.save_state(str(tmp_path / f"checkpoint-{step}"))
    torch.nn.init.normal_(model.weight)
    current = model.weight.detach().clone()
    optimizer_state = tmp_path / "checkpoint-20" / "optimizer.bin"  # read after the model
    optimizer_state.write_bytes(optimizer_state.read_bytes()[:100])

    def resume_from(which):
        return resume(accelerator, SimpleNamespace(resume_from_checkpoint=which, output_dir=str(tmp_path)), [])

    with pytest.raises(RuntimeError, match=r"checkpoint-20: the checkpoint is damaged, optimizer.bin cannot be read "
                                           r"\(.*\)\. Name an older checkpoint-N, or pass `latest`"):
        resume_from(str(tmp_path / "checkpoint-20"))
    assert torch.equal(model.weight, current)  # untouched: checkpoint-20's model file was not loaded
    assert resume_from("latest") == 10 and torch.equal(model.weight, weights[10])
    rng = tmp_path / "checkpoint-10" / "random_states_0.pkl"  # accelerate itself skips an unreadable one silently
    rng.write_bytes(rng.read_bytes()[:50])
    with pytest.raises(RuntimeError, match=r"latest: none of the 2 checkpoint\(s\) in .* can be read:\n"
                                           r"  checkpoint-20: optimizer.bin cannot be read .*\n"
                                           r"  checkpoint-10: random_states_0.pkl cannot be read"):
        resume_from("latest")


def test_two_processes_split_the_data_and_agree(tmp_path):
    out = tmp_path / "ddp"
    launch(tmp_path, [*SMALL, "--output_dir", str(out), "--num_epochs", "1", "--num_epochs_decay", "0",
                      "--checkpointing_steps", "1000", "--rank_report"], processes=2)
    reports = [json.loads((out / "rank_report" / f"rank{r}.json").read_text()) for r in (0, 1)]
    seen = [set(r["samples_seen"]) for r in reports]
    assert len(reports[0]["samples_seen"]) == len(reports[1]["samples_seen"]) == 5  # 9 pairs over 2 ranks
    assert seen[0] != seen[1] and len(seen[0] | seen[1]) == 9
    assert reports[0]["generator_parameters_sha256"] == reports[1]["generator_parameters_sha256"]
    assert "batch size 1 x 2 process(es)" in (out / "README.md").read_text()
    Pix2PixPipeline.from_pretrained(out)(Image.new("RGB", (64, 64)), generator=seeded(0))


def test_a_run_with_unreadable_validation_images_still_saves_and_scores_the_rest(tmp_path):
    photos = sorted((FACADES / "train").glob("*.jpg"))
    data = tmp_path / "facades"
    for split, files in (("train", photos[:3]), ("val", photos[3:4])):
        (data / split).mkdir(parents=True)
        for f in files:
            (data / split / f.name).write_bytes(f.read_bytes())
    (data / "val" / "broken.jpg").write_bytes(photos[4].read_bytes()[:300])
    out = tmp_path / "run"
    done = launch(tmp_path, ["--dataset", str(data), *SMALL[2:], "--output_dir", str(out), "--max_train_steps", "2",
                             "--validation_steps", "1", "--num_validation_images", "2", "--checkpointing_steps", "100"])
    assert "skipped 1 unreadable example(s)" in done.stderr and "broken.jpg: cannot be read" in done.stderr
    assert [Image.open(g).size for g in sorted((out / "samples").glob("*.png"))] == [(3 * 64, 64)] * 2  # one row
    metrics = json.loads((out / "validation_metrics.json").read_text())
    assert metrics["num_samples"] == 1 and metrics["num_skipped"] == 1 and 0 < metrics["l1"] < 1
    assert "on 1 validation examples (1 unreadable example(s) skipped)" in (out / "README.md").read_text()
    Pix2PixPipeline.from_pretrained(out)


def test_load_pretrain_fine_tunes_a_saved_pipeline(tmp_path):
    first = tmp_path / "first"
    launch(tmp_path, [*SMALL, "--output_dir", str(first), "--max_train_steps", "2", "--seed", "1"])
    # lr 0: the fine-tuning run's generator keeps the loaded weights (its BatchNorm statistics still move)
    tuned = tmp_path / "tuned"
    done = launch(tmp_path, [*SMALL, "--output_dir", str(tuned), "--load_pretrain", str(first), "--learning_rate", "0",
                             "--max_train_steps", "1"])
    assert f"UNetGenerator weights loaded from {first}" in done.stderr
    # the run's folder keeps its D, which the fine-tuning run starts from (as pix2pixHD's --load_pretrain)
    assert f"PatchDiscriminator weights loaded from {first / 'discriminator'}" in done.stderr
    for part in ("generator", "discriminator"):
        loaded, saved = (load_file(run / part / "diffusion_pytorch_model.safetensors") for run in (first, tuned))
        params = [k for k in loaded if "running_" not in k and "num_batches" not in k]
        assert params and all(torch.equal(loaded[k], saved[k]) for k in params), part
    assert "--output_dir tuned --load_pretrain first" in (tuned / "README.md").read_text()  # its command, paths public

    # a shipped pipeline keeps no D: the generator is loaded, D starts anew
    shipped = tmp_path / "shipped"
    shutil.copytree(first, shipped, ignore=shutil.ignore_patterns("discriminator", "checkpoint-*"))
    done = launch(tmp_path, [*SMALL, "--output_dir", str(tmp_path / "from_shipped"), "--load_pretrain", str(shipped),
                             "--max_train_steps", "1"])
    assert f"UNetGenerator weights loaded from {shipped}" in done.stderr
    assert f"--load_pretrain {shipped}: no discriminator/ there, PatchDiscriminator starts anew" in done.stderr
    # a D of other flags doesn't fit: it starts anew, the generator is still fine-tuned
    done = launch(tmp_path, [*SMALL, "--ndf", "16", "--output_dir", str(tmp_path / "wider_d"), "--load_pretrain",
                             str(first), "--max_train_steps", "1"])
    assert f"UNetGenerator weights loaded from {first}" in done.stderr
    assert f"--load_pretrain {first / 'discriminator'}: PatchDiscriminator weight" in done.stderr
    assert "PatchDiscriminator starts anew instead" in done.stderr

    wider = subprocess.run([sys.executable, str(ROOT / "train" / "train_pix2pix.py"), *SMALL, "--ngf", "16",
                            "--output_dir", str(tmp_path / "wider"), "--load_pretrain", str(first)],
                           env=environment(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert wider.returncode != 0
    assert f"--load_pretrain {first}: UNetGenerator weight" in wider.stderr and "(8, 3, 4, 4) there" in wider.stderr
    assert "Traceback" not in wider.stderr


def test_bad_arguments_fail_clearly(tmp_path):
    for extra, message in ((["--push_to_hub"], "--push_to_hub needs --hub_model_id"),
                           (["--image_size", "32"], "--image_size 32 is smaller than --crop_size 64"),
                           (["--color_classification", "1"], "--color_classification predicts colorization's ab")):
        done = subprocess.run([sys.executable, str(ROOT / "train" / "train_pix2pix.py"), *SMALL, "--output_dir",
                               str(tmp_path / "x"), *extra], env=environment(tmp_path), capture_output=True, text=True)
        assert done.returncode != 0 and message in done.stderr, done.stderr


def test_linear_decay_matches_the_reference_policy():
    f = linear_decay(100, 100)
    assert [f(e) for e in (0, 99)] == [1.0, 1.0]
    assert f(100) == pytest.approx(1 - 1 / 101) and f(199) == pytest.approx(1 - 100 / 101)
    assert np.all(np.diff([f(e) for e in range(200)]) <= 0)


def test_colorization_run_gives_a_lab_pipeline(tmp_path):
    """A colorization run trained on 32x32 patches of 64x64 photos (--image_size 64): a Lab pipeline
    working at 64, validated there as evaluate.py scores it."""
    out = tmp_path / "color"
    launch(tmp_path, ["--dataset", str(ROOT / "tests" / "fixtures" / "facades"), "--colorization", "--load_size",
                      "64", "--crop_size", "32", "--image_size", "64", "--num_downs", "5", "--ngf", "8", "--ndf", "8",
                      "--num_epochs", "1",
                      "--num_epochs_decay", "0", "--checkpointing_steps", "1000", "--validation_steps", "1000",
                      "--color_rebalance", "0.5", "--output_dir", str(out)])
    pipe = Pix2PixPipeline.from_pretrained(out)
    assert pipe.config.color_space == "lab" and pipe.config.image_size == 64
    card = (out / "README.md").read_text()
    assert "the L1 class-rebalanced (Zhang et al. 2016, lambda 0.5)" in card
    assert "random crop 32 (patches; the pipeline works at 64)" in card
    assert (pipe.generator.config.in_channels, pipe.generator.config.out_channels) == (1, 2)
    photo = Image.open(ROOT / "tests" / "fixtures" / "facades" / "train" / "2.jpg")
    result = pipe(photo, generator=seeded(0)).images[0]
    assert result.mode == "RGB" and result.size == photo.size
    assert Image.open(sorted((out / "samples").glob("*.png"))[-1]).size == (3 * 64, 64)  # L | colourised | real
    # the run's validation called the pipeline as evaluate.py does: the same scores on the same held-out pair
    evaluate(["--model", str(out), "--dataset", str(ROOT / "tests" / "fixtures" / "facades"), "--split", "validation",
              "--no_fid", "--diversity_seeds", "0", "--input_baseline", "--out", str(tmp_path / "eval.json")])
    measured = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    recorded = json.loads((out / "validation_metrics.json").read_text())
    assert measured["num_samples"] == recorded["num_samples"] == 1
    for name in ("l1", "psnr", "ssim"):
        assert measured[name] == pytest.approx(recorded[name], rel=1e-6), name
    grey = measured["input_baseline"]  # what leaving the photo grey scores
    assert grey["colourfulness"] < 0.01 * measured["colourfulness"]["real"]
    assert grey["l1"] > 0 and grey["psnr"] != measured["psnr"]


def test_colorization_as_classification_trains_a_pipeline_that_decodes_ab(tmp_path):
    """--color_classification: the generator predicts ab bins (Zhang et al. 2016), trained with their
    cross-entropy beside the GAN (no L1 here); the pipeline decodes them, as every backend runs it."""
    out = tmp_path / "color_classes"
    done = launch(tmp_path, ["--dataset", str(FACADES), "--colorization", "--load_size", "72", "--crop_size", "64",
                             "--num_downs", "6", "--ngf", "8", "--ndf", "8", "--num_epochs", "1", "--num_epochs_decay",
                             "0", "--validation_steps", "1000", "--color_classification", "1", "--lambda_l1", "0",
                             "--color_rebalance", "0.5", "--output_dir", str(out)])
    assert "g_ce=" in done.stderr  # the cross-entropy is logged with the other terms
    pipe = Pix2PixPipeline.from_pretrained(out)
    assert pipe.generator.config.output_activation == "ab_classes"
    assert all(torch.isfinite(w).all() for w in generator_weights(out).values())
    card = (out / "README.md").read_text()
    assert "+ 1 * the cross-entropy over ab bins (colorization as classification, Zhang et al. 2016)" in card
    assert "the L1 and the cross-entropy class-rebalanced" in card
    photo = Image.open(FACADES / "train" / "2.jpg")
    assert pipe(photo, generator=seeded(0)).images[0].size == photo.size


def test_rendered_targets_as_classification_train_a_pipeline_that_decodes_their_palette(tmp_path):
    """--palette_classes: facade photo -> label map (the targets are drawn in 12 flat colours); the
    generator predicts a distribution over colours clustered from the training label maps, trained
    with their (rebalanced) cross-entropy beside the GAN and L1; the pipeline decodes the palette."""
    out = tmp_path / "palette"
    done = launch(tmp_path, [*SMALL, "--direction", "AtoB", "--num_epochs", "1", "--num_epochs_decay", "0",
                             "--palette_classes", "12", "--palette_rebalance", "0.5", "--lambda_l1", "10",
                             "--output_dir", str(out)])
    assert "g_ce=" in done.stderr
    pipe = Pix2PixPipeline.from_pretrained(out)
    config = pipe.generator.config
    assert config.output_activation == "palette" and len(config.output_palette) == 12
    pairs = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((FACADES / "train").glob("*.jpg"))]
    labels = np.concatenate([pair[:, pair.shape[1] // 2:].reshape(-1, 3) for pair in pairs]) / 127.5 - 1
    distance = np.linalg.norm(labels[:, None] - np.asarray(config.output_palette)[None], axis=2).min(1)
    spread = np.linalg.norm(labels - labels.mean(0), axis=1)
    assert np.median(distance) < 0.25 * np.median(spread)  # the colours are the label maps'
    assert all(torch.isfinite(w).all() for w in generator_weights(out).values())
    card = (out / "README.md").read_text()
    assert "+ 1 * the cross-entropy over the targets' 12 colours (rendered targets as classification), " \
           "class-rebalanced (lambda 0.5)" in card
    photo = Image.open(FACADES / "train" / "2.jpg").crop((0, 0, 80, 80))
    assert pipe(photo, generator=seeded(0)).images[0].size == photo.size
    with pytest.raises(SystemExit):
        parse_args(["--dataset", str(FACADES), "--palette_classes", "1"])
    # fine-tuning on other data keeps the loaded palette (a new one would not fit the trained logits)
    tuned = tmp_path / "tuned"
    launch(tmp_path, [*SMALL, "--direction", "AtoB", "--max_train_steps", "1", "--max_train_samples", "2",
                      "--palette_classes", "12", "--load_pretrain", str(out), "--output_dir", str(tuned)])
    assert Pix2PixPipeline.from_pretrained(tuned).generator.config.output_palette == config.output_palette


def test_resume_follows_a_changed_schedule(tmp_path):
    """A run resumed with other --num_epochs/--num_epochs_decay uses the new schedule's rate at once."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from train.common import linear_decay, resume

    def setup(num_epochs, num_epochs_decay):
        accelerator = Accelerator(cpu=True)
        model = torch.nn.Linear(2, 2)
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_decay(num_epochs, num_epochs_decay))
        return accelerator, *accelerator.prepare(model, opt, sched)

    accelerator, _, opt, sched = setup(2, 2)
    for _ in range(3):
        sched.step()  # epoch 3 of 2 + 2: decaying
    accelerator.save_state(str(tmp_path / "checkpoint-30"))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * linear_decay(2, 2)(3))
    accelerator, _, opt, sched = setup(5, 5)
    args = SimpleNamespace(resume_from_checkpoint="latest", output_dir=str(tmp_path))
    assert resume(accelerator, args, [sched]) == 30
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # epoch 3 of 5 + 5: constant again


def test_diffusers_flag_names_beside_ours(tmp_path, capsys):
    out = ["--output_dir", str(tmp_path / "x")]
    args = parse_args(["--dataset_name", "huggan/facades", "--resolution", "128", "--num_train_epochs", "10",
                       "--random_flip", *out])
    assert args.dataset == "huggan/facades" and args.crop_size == 128 and not args.no_flip
    assert (args.num_epochs, args.num_epochs_decay) == (5, 5)  # the papers' even split
    assert (args.image_column_a, args.image_column_b) == ("imageA", "imageB")  # a known Hub dataset's columns
    args = parse_args(["--train_data_dir", str(FACADES), "--num_train_epochs", "3", "--num_epochs_decay", "1", *out])
    assert args.dataset == str(FACADES) and (args.num_epochs, args.num_epochs_decay) == (2, 1)
    assert args.image_column_a is None and not args.no_flip
    args = parse_args(["--dataset", str(FACADES), "--no_flip", *out])
    assert args.no_flip and (args.num_epochs, args.num_epochs_decay) == (100, 100)
    for bad, message in ((["--dataset_name", "a/b", "--train_data_dir", str(FACADES)], "give the data as"),
                         ([], "give the data as"),
                         (["--dataset_name", "a/b", "--no_flip", "--random_flip"], "not allowed with argument"),
                         (["--dataset_name", "a/b", "--num_train_epochs", "4", "--num_epochs", "2"], "one of them"),
                         (["--dataset_name", "a/b", "--num_train_epochs", "2", "--num_epochs_decay", "3"], ">= 1 and"),
                         (["--train_data_dir", str(tmp_path / "missing")], "no such folder"),
                         (["--dataset_name", "a/b", "--color_rebalance", "0.5"], "it needs --colorization"),
                         (["--dataset_name", "a/b", "--colorization", "--color_rebalance", "2"], "from 0 to 1")):
        with pytest.raises(SystemExit):
            parse_args([*bad, *out])
        assert message in capsys.readouterr().err, bad
    for script in ("train_pix2pix", "train_pix2pixhd"):  # run as modules of the `train` package, from elsewhere
        done = subprocess.run([sys.executable, "-m", f"train.{script}", "--help"], env=environment(tmp_path),
                              cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        for flag in ("--dataset_name DATASET, --dataset DATASET", "--train_data_dir", "--resolution",
                     "--num_train_epochs", "--random_flip", "--train_batch_size"):
            assert flag in done.stdout, (script, flag)


def test_a_known_hub_dataset_needs_no_column_flags(tmp_path, olah_hub):
    """huggan/facades (A and B in columns imageA / imageB), served by a local Hub under its real id."""
    endpoint, repos = olah_hub
    repo = repos / "datasets" / "huggan" / "facades"
    (repo / "data").mkdir(parents=True)
    rows = {"imageA": [], "imageB": []}
    for path in sorted((FACADES / "train").glob("*.jpg")):
        with Image.open(path) as ab:
            half = ab.width // 2
            for column, box in (("imageA", (0, 0, half, ab.height)), ("imageB", (half, 0, ab.width, ab.height))):
                png = io.BytesIO()
                ab.crop(box).save(png, "PNG")
                rows[column].append({"bytes": png.getvalue(), "path": None})
    features = datasets.Features({"imageA": datasets.Image(), "imageB": datasets.Image()})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(repo / "data" / "train-00000-of-00001.parquet")
    (repo / "README.md").write_text("---\nlicense: other\n---\nCMP Facades pairs in the HugGAN layout (test copy).\n")
    git_commit_folder(repo)
    out = tmp_path / "run"
    launch(tmp_path, ["--dataset_name", "huggan/facades", *SMALL[2:], "--max_train_steps", "2", "--checkpointing_steps",
                      "100", "--output_dir", str(out)], HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="0")
    card = (out / "README.md").read_text()
    assert "9 training examples, layout paired" in card and "huggan/facades" in card
    assert json.loads((out / "validation_metrics.json").read_text())["num_samples"] == 1
    pipe = Pix2PixPipeline.from_pretrained(out)
    assert pipe.config.direction == "BtoA" and pipe.working_size == (64, 64)


def test_label_map_inputs_record_their_palette(tmp_path):
    """--label_colors N: the pipeline a run saves snaps its inputs to the N class colours recovered from
    the training label maps (here: the 9 the fixture's maps use), each near one of the shipped facades
    pipeline's colours, not a colour JPEG mixed along a boundary. --label_info gives them."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(ROOT / "train" / "train_pix2pix.py"), *SMALL, "--max_train_steps", "1",
                           "--max_validation_samples", "1", "--label_colors", "9", "--output_dir", str(out)],
                          env=environment(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    shipped = np.array(json.loads((ROOT / "pretrained" / "facades" / "model_index.json").read_text())["palette"])
    pipe = Pix2PixPipeline.from_pretrained(out)
    recovered = np.array(pipe.config.palette)
    distance = np.abs(recovered[:, None] - shipped[None]).max(-1)
    assert recovered.shape == (9, 3) and distance.min(1).max() <= 20, distance.min(1)
    assert len(set(distance.argmin(1))) == 9  # nine different classes
    assert pipe.label_processor is not None and "palette recovered from the training inputs" in \
        (out / "README.md").read_text()
    drawn = Image.new("RGB", (64, 64), tuple(int(v) + 12 for v in recovered[0]))  # a brush near class 0's colour
    assert np.all(np.asarray(pipe.label_processor.snap(drawn)) == recovered[0])

    names = json.loads((ROOT / "pretrained" / "facades" / "model_index.json").read_text())["id2label"]
    info = tmp_path / "facades_classes.json"
    info.write_text(json.dumps({"names": [names[str(i)] for i in range(12)], "colors": shipped.tolist()}))
    args = parse_args([*SMALL, "--label_info", str(info), "--output_dir", str(tmp_path / "x")])
    assert label_palette(args, None) == (shipped.tolist(), names)
    info.write_text(json.dumps({"colors": [[0, 0, 300]]}))
    with pytest.raises(ValueError, match=r'"colors" must be a list of \[r, g, b\] \(0-255\)'):
        label_palette(args, None)
