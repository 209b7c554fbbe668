"""The `p2p` console script, run as `python -m p2p_models.cli` in a subprocess (what the installed
`p2p` entry point calls)."""

import re
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tomllib
import torch
from conftest import ROOT, environment, seeded
from PIL import ExifTags, Image, ImageOps
from reference_layout import RefUnet, randomize
from test_pipeline import make_pipe, photo
from test_pix2pixhd import hd_pipe, scene

from p2p_models import Pix2PixPipeline
from p2p_models.cli import main
from p2p_models.onnx_export import OnnxGenerator


def p2p(tmp_path, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "p2p_models.cli", *map(str, args)], env=environment(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "pix2pix"
    make_pipe().save_pretrained(path)
    return path


def test_pyproject_installs_the_p2p_console_script():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"p2p": "p2p_models.cli:main"}
    assert "onnxruntime" in (ROOT / "requirements-dev.txt").read_text()


def test_translate_folders_and_files_bad_ones_named_others_done(model, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo(90, 50).save(inputs / "a.png")
    photo(64, 64, seed=1).save(inputs / "b.jpg")
    (inputs / "broken.png").write_bytes(b"not an image")
    (inputs / "notes.txt").write_text("skipped: not an image extension")
    extra = tmp_path / "c.webp"
    photo(30, 70, seed=2).save(extra)
    out = tmp_path / "out"
    done = p2p(tmp_path, "translate", "--model", model, inputs, extra, tmp_path / "missing.png", "--output", out,
               "--batch_size", "2", "--seed", "3")
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert Image.open(out / "a.png").size == (90, 50) and Image.open(out / "c.png").size == (30, 70)
    assert re.search(r"broken\.png: UnidentifiedImageError", done.stderr)
    assert "missing.png: no such file or folder" in done.stderr
    assert "translated 3 of 5 images" in done.stderr and "2 failed" in done.stderr
    assert "100%" in done.stderr  # the progress bar
    expected = Pix2PixPipeline.from_pretrained(model)(Image.open(inputs / "a.png"), generator=seeded(3)).images[0]
    assert np.abs(np.asarray(Image.open(out / "a.png")).astype(int) - np.asarray(expected)).max() <= 1  # fast path


def test_translate_native_deterministic_and_command_errors(model, tmp_path):
    photo(150, 97).save(tmp_path / "x.png")
    ok = p2p(tmp_path, "translate", "--model", model, tmp_path / "x.png", "--output", tmp_path / "o",
             "--size_mode", "native", "--deterministic", "--backend", "torch")
    assert ok.returncode == 0, ok.stderr
    expected = Pix2PixPipeline.from_pretrained(model)(photo(150, 97), deterministic=True, size_mode="native").images[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "x.png")), np.asarray(expected))
    (tmp_path / "sub").mkdir()
    photo().save(tmp_path / "sub" / "x.jpg")
    clash = p2p(tmp_path, "translate", "--model", model, tmp_path / "x.png", tmp_path / "sub", "--output", tmp_path / "o")
    assert clash.returncode == 2 and "would both be written to" in clash.stderr
    bad_model = p2p(tmp_path, "translate", "--model", tmp_path / "sub", tmp_path / "x.png", "--output", tmp_path / "o")
    assert bad_model.returncode == 2 and "no model_index.json in this folder" in bad_model.stderr
    not_onnx = p2p(tmp_path, "translate", "--model", model, tmp_path / "x.png", "--output", tmp_path / "o",
                   "--backend", "onnxruntime", "--onnx", tmp_path / "x.png")
    assert not_onnx.returncode == 2 and "x.png: could not be loaded by ONNX Runtime" in not_onnx.stderr


def test_translate_hd_label_maps_with_instance_maps_matched_by_name(tmp_path):
    model = tmp_path / "hd"
    pipe = hd_pipe()
    pipe.save_pretrained(model)
    labels, inst = scene()
    (tmp_path / "labels").mkdir()
    (tmp_path / "instances").mkdir()
    Image.fromarray(labels.astype(np.uint8)).save(tmp_path / "labels" / "a_gtFine_labelIds.png")
    Image.fromarray(inst.astype(np.uint8)).save(tmp_path / "instances" / "a_gtFine_instanceIds.png")
    Image.fromarray(labels.astype(np.uint8)).save(tmp_path / "labels" / "b.png")
    done = p2p(tmp_path, "translate", "--model", model, tmp_path / "labels", "--instances", tmp_path / "instances",
               "--output", tmp_path / "out", "--seed", "1")
    assert done.returncode == 1
    assert "b.png: no instance map named b or b_instances among --instances" in done.stderr
    expected = np.asarray(pipe(labels, inst, generator=seeded(1)).images[0]).astype(int)
    assert np.abs(np.asarray(Image.open(tmp_path / "out" / "a_gtFine_labelIds.png")).astype(int) - expected).max() <= 1


def test_convert_subcommand_and_the_module_entry_point(tmp_path):
    ref = randomize(RefUnet(3, 3, 6, 4, "batch")).eval()
    torch.save(ref.state_dict(), tmp_path / "latest_net_G.pth")
    for command in (["-m", "p2p_models.cli", "convert"], ["-m", "p2p_models.convert"]):
        out = tmp_path / f"pipe_{len(command)}"
        done = subprocess.run([sys.executable, *command, "--checkpoint", str(tmp_path / "latest_net_G.pth"),
                               "--output_dir", str(out), "--image_size", "64"], env=environment(tmp_path),
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        assert Pix2PixPipeline.from_pretrained(out).generator.config.num_downs == 6
    bad = p2p(tmp_path, "convert", "--checkpoint", tmp_path / "nothing.pth", "--output_dir", tmp_path / "x")
    assert bad.returncode == 2 and "nothing.pth: could not be read" in bad.stderr


def test_export_onnx_prints_parity_and_translate_runs_it(model, tmp_path):
    done = p2p(tmp_path, "export-onnx", "--model", model, "--output", tmp_path / "g.onnx")
    assert done.returncode == 0, done.stderr
    diffs = [float(d) for d in re.findall(r"max abs difference ONNX Runtime vs PyTorch = (\S+)", done.stdout)]
    assert len(diffs) == 2 and max(diffs) < 1e-4, done.stdout  # two sizes: height and width are dynamic
    photo(150, 97).save(tmp_path / "x.png")
    ran = p2p(tmp_path, "translate", "--model", model, tmp_path / "x.png", "--output", tmp_path / "o",
              "--backend", "onnxruntime", "--onnx", tmp_path / "g.onnx", "--deterministic", "--size_mode", "tiled",
              "--tile_size", "64", "--tile_overlap", "16")
    assert ran.returncode == 0, ran.stderr
    expected = Pix2PixPipeline.from_pretrained(model)(photo(150, 97), deterministic=True, size_mode="tiled",
                                                      tile_size=64, tile_overlap=16).images[0]
    assert np.abs(np.asarray(Image.open(tmp_path / "o" / "x.png")).astype(int) - np.asarray(expected)).max() <= 1
    hd = tmp_path / "hd"
    hd_pipe().save_pretrained(hd)
    hd_export = p2p(tmp_path, "export-onnx", "--model", hd, "--output", tmp_path / "hd.onnx", "--size", "64", "96")
    assert hd_export.returncode == 0 and "parity at 64x96" in hd_export.stdout, hd_export.stderr
    hd_sampled = p2p(tmp_path, "export-onnx", "--model", hd, "--output", tmp_path / "hd2.onnx", "--sampled")
    assert hd_sampled.returncode == 2 and "has no sampling mode" in hd_sampled.stderr


def test_export_onnx_sampled_and_translate_samples_with_it(model, tmp_path):
    """The sampling-mode graph: parity from one seed, the CLI's seeded images equal PyTorch's, and a graph of
    the other mode than asked is refused in one line."""
    done = p2p(tmp_path, "export-onnx", "--model", model, "--output", tmp_path / "s.onnx", "--sampled")
    assert done.returncode == 0, done.stderr
    diffs = [float(d) for d in re.findall(r"\(sampling mode.*\): max abs difference ONNX Runtime vs PyTorch = (\S+)",
                                          done.stdout)]
    assert len(diffs) == 2 and max(diffs) < 1e-4, done.stdout
    assert "input x (1, 3, H, W)" in done.stdout and "mask0 (1, " in done.stdout
    with pytest.raises(ValueError, match="takes one image at a time"):
        OnnxGenerator(tmp_path / "s.onnx")(torch.zeros(2, 3, 64, 64))
    photo(150, 97).save(tmp_path / "x.png")
    ran = p2p(tmp_path, "translate", "--model", model, tmp_path / "x.png", "--output", tmp_path / "o",
              "--backend", "onnxruntime", "--onnx", tmp_path / "s.onnx", "--seed", "5")
    assert ran.returncode == 0, ran.stderr
    pipe = Pix2PixPipeline.from_pretrained(model)
    expected = np.asarray(pipe(photo(150, 97), generator=seeded(5)).images[0]).astype(int)
    assert np.abs(np.asarray(Image.open(tmp_path / "o" / "x.png")).astype(int) - expected).max() <= 1
    other_seed = np.asarray(pipe(photo(150, 97), generator=seeded(6)).images[0]).astype(int)
    assert np.abs(other_seed - expected).max() > 1  # the seed matters: the masks are the seed's
    assert p2p(tmp_path, "export-onnx", "--model", model, "--output", tmp_path / "e.onnx").returncode == 0
    for graph, flags, problem in (("s.onnx", ["--deterministic"], "is the sampling-mode graph"),
                                  ("e.onnx", [], "is the eval-mode graph")):
        wrong = p2p(tmp_path, "translate", "--model", model, tmp_path / "x.png", "--output", tmp_path / "w",
                    "--backend", "onnxruntime", "--onnx", tmp_path / graph, *flags)
        assert wrong.returncode == 2 and problem in wrong.stderr and "Traceback" not in wrong.stderr, wrong.stderr


@pytest.mark.parametrize("name, problem", [("pretrained/nope", "no such folder"), ("./nope", "no such folder"),
                                           ("pretrained", "no model_index.json")])
def test_a_mistyped_local_model_fails_at_once(name, problem, tmp_path):
    """A name meant as a folder is not tried on the Hub (whose retries took 37 s): the Hub here is an address
    that never answers, so only an immediate error finishes within the timeout."""
    (tmp_path / "pretrained").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    env = {**environment(tmp_path), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://10.255.255.1"}
    done = subprocess.run([sys.executable, "-m", "p2p_models.cli", "translate", "--model", name, "in.png",
                           "--output", "out"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line.startswith(f"p2p translate: error: --model {name}: {problem}"), line
    with pytest.raises(FileNotFoundError, match=problem):
        Pix2PixPipeline.from_pretrained(tmp_path / name.removeprefix("./"))


def test_an_output_folder_that_is_or_is_inside_an_input_folder_is_refused(model, tmp_path, capsys):
    labels = tmp_path / "labels"
    labels.mkdir()
    photo(64, 64).save(labels / "a.png")
    photo(64, 64, seed=1).save(tmp_path / "b.png")
    before = (labels / "a.png").read_bytes()
    for output, message in ((labels, "is the input folder"), (labels / "out", "is inside the input folder")):
        assert main(["translate", "--model", str(model), str(labels), "--output", str(output)]) == 2
        assert message in capsys.readouterr().err
    assert main(["translate", "--model", str(model), str(tmp_path / "b.png"), "--output", str(tmp_path)]) == 2
    assert "would overwrite an input" in capsys.readouterr().err
    assert (labels / "a.png").read_bytes() == before and sorted(p.name for p in labels.iterdir()) == ["a.png"]


def test_sigint_leaves_only_whole_outputs_and_skip_existing_finishes_the_rest(model, tmp_path):
    """Interrupted while an output is being written (large PNGs take a while): every PNG under its final name
    is complete, no temporary is left, and `--skip_existing` translates only what is missing."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(3):
        photo(3000, 3000, seed=k).save(inputs / f"{k}.png", compress_level=0)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "p2p_models.cli", "translate", "--model", str(model), str(inputs), "--output",
               str(out), "--backend", "torch"]
    # as from a terminal: SIGINT at its default (an ignored SIGINT, which a parent may have set, is inherited)
    proc = subprocess.Popen(command, env=environment(tmp_path), cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (out.is_dir() and any(out.iterdir())) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    finished = sorted(out.iterdir())
    assert len(finished) < 3 and all(p.suffix == ".png" and not p.name.startswith(".") for p in finished), finished
    for path in finished:
        Image.open(path).load()  # complete
    stamps = {p.name: p.stat().st_mtime_ns for p in finished}
    rerun = p2p(tmp_path, "translate", "--model", model, inputs, "--output", out, "--backend", "torch",
                "--skip_existing")
    assert rerun.returncode == 0, rerun.stderr
    assert f"translated {3 - len(finished)} of {3 - len(finished)} images" in rerun.stderr
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png"]
    assert {p: (out / p).stat().st_mtime_ns for p in stamps} == stamps  # finished ones left alone


def test_unwritable_outputs_are_named_without_a_traceback(model, tmp_path, capsys):
    photo(64, 64).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("not a folder")
    assert main(["translate", "--model", str(model), str(tmp_path / "a.png"), "--output",
                 str(tmp_path / "file" / "o")]) == 2
    assert re.search(r"error: --output .*o: can't write there \(Not a directory\)", capsys.readouterr().err)

    def small_files():  # a full disk: writes past 4 KB fail (EFBIG) instead of raising SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    full = subprocess.run([sys.executable, "-m", "p2p_models.cli", "translate", "--model", str(model),
                           str(tmp_path / "a.png"), "--output", str(tmp_path / "o")], env=environment(tmp_path),
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, preexec_fn=small_files)
    assert full.returncode == 1 and re.search(r"a\.png: could not write .*a\.png \(File too large\)", full.stderr)
    assert "Traceback" not in full.stderr and list((tmp_path / "o").iterdir()) == []


def test_exif_orientation_is_applied_as_the_app_does(model, tmp_path):
    upright = photo(90, 50)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored sideways: viewers rotate it 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    assert main(["translate", "--model", str(model), str(tmp_path / "sideways.jpg"), "--output", str(tmp_path / "o"),
                 "--deterministic", "--backend", "torch"]) == 0
    shown = ImageOps.exif_transpose(Image.open(tmp_path / "sideways.jpg"))
    assert shown.size == (90, 50)
    expected = Pix2PixPipeline.from_pretrained(model)(shown, deterministic=True).images[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "sideways.png")), np.asarray(expected))
