"""The README's code runs as written, so it cannot drift from the code: every ```python block is
executed (the gradio_client one against the real app on http://127.0.0.1:7860, `push_to_hub`
against tests/upload_server.py standing in for the Hub), and every ```bash block is run with bash,
in README order, in one fresh folder laid out as a clone: the repo's examples/, pretrained/ and
train/, and beside it ../shared/datasets/ holding the test fixtures under the names the README uses.

A block that cannot run as written marks itself, on the line before it, as
`<!-- README test: template (<reason>) -->`; the reason must be one of TEMPLATES, which says what
the test does instead: dry-run a make target that installs the requirements, run a training
command with small flags appended (argparse keeps the last value) on the tiny data, or write the
reference checkpoints a conversion reads. Every command's flags must also exist in its --help."""

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from app_setup import serve
from conftest import ROOT, environment
from reference_layout import RefEncoder, RefGlobal, RefNLayerD, RefUnet, randomize

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^(?:<!-- README test: template \((.*?)\) -->\n)?```(\w*)\n(.*?)^```", README, re.S | re.M)
PYTHON = [code for _, lang, code in BLOCKS if lang == "python"]
BASH = [(template, code) for template, lang, code in BLOCKS if lang == "bash"]
BIN = Path(sys.executable).parent
FIXTURES = ROOT / "tests" / "fixtures"
DATASETS = {"facades": FIXTURES / "facades", "cityscapes_samples": FIXTURES / "cityscapes"}  # ../shared/datasets/
TEMPLATES = {
    "installs the requirements; the test dry-runs the make target": "make",
    "trains for hours; the test runs it with small flags on tiny data": "train",
    "needs the reference's checkpoints; the test writes small ones": "checkpoints",
}
SMALL = {  # appended to a training command: one step of a tiny model
    "train_pix2pix.py": "--max_train_steps 1 --load_size 36 --crop_size 32 --num_downs 5 --ngf 4 --ndf 4 "
                        "--max_validation_samples 1 --validation_steps 1000",
    "train_pix2pixhd.py": "--max_train_steps 1 --n_downsample_global 2 --n_blocks_global 1 --n_blocks_local 1 "
                          "--ndf 4 --num_D 1 --nef 4 --n_downsample_E 2 --n_clusters 2 --max_validation_samples 1 "
                          "--validation_steps 1000",
}
HD_SIZES = {"global": "--load_size 64 --ngf 4", "local": "--load_size 128 --ngf 2"}  # G2's G1: ngf 2 * 2 = 4
REFERENCE = {  # the reference checkpoints the convert block reads, as small models of the same kinds
    "checkpoints/facades_label2photo/latest_net_G.pth": lambda: RefUnet(3, 3, 8, 4, "batch"),
    "checkpoints/facades_label2photo/latest_net_D.pth": lambda: RefNLayerD(6, 4, 3, "batch"),
    "checkpoints/label2city_1024p/latest_net_G.pth": lambda: RefGlobal(35 + 1 + 3, 3, 4, 2, 1),
    "checkpoints/label2city_1024p/latest_net_E.pth": lambda: RefEncoder(3, 3, 4, 2),
    "checkpoints/label2city_1024p/features_clustered_010.npy": None,
}


def commands(block: str) -> list[str]:
    """The commands of a bash block, continuation lines joined."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]


def make_clone(root: Path) -> Path:
    """`root/p2p`, a folder that looks like a clone's root for the README's relative paths, with
    `root/shared/datasets/` beside it."""
    clone = root / "p2p"
    clone.mkdir()
    for name in ("examples", "pretrained", "train"):
        (clone / name).symlink_to(ROOT / name)
    (root / "shared" / "datasets").mkdir(parents=True)
    for name, fixture in DATASETS.items():
        (root / "shared" / "datasets" / name).symlink_to(fixture)
    return clone


@pytest.fixture
def clone(tmp_path) -> Path:
    return make_clone(tmp_path)


def run(code: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.run(code, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(PYTHON) >= 3 and any("gradio_client" in code for code in PYTHON)
    assert any("push_to_hub" in code for code in PYTHON) and BASH
    assert README.count("<!-- README test:") == sum(bool(template) for template, _ in BASH), \
        "a README test marker that is not right above a ```bash block"
    assert {TEMPLATES.get(template) for template, _ in BASH} >= {None, *TEMPLATES.values()}


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_python_block_runs_as_written(index, clone, upload_hub, tmp_path_factory):
    code = PYTHON[index]
    endpoint, uploaded = upload_hub
    env = {"HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_readme_test", "HF_HUB_OFFLINE": "0",
           "HF_MODULES_CACHE": str(tmp_path_factory.mktemp("hf_modules"))}  # DiffusionPipeline's code copies
    if "gradio_client" not in code:
        done = run([sys.executable, "-c", code], clone, env)
        assert done.returncode == 0, f"README block {index} failed:\n{code}\n{done.stderr[-3000:]}"
        if "push_to_hub" in code:
            assert any(uploaded.rglob("model_index.json")), "push_to_hub uploaded no pipeline"
        return
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 7860)) == 0:
            pytest.fail("port 7860 is in use: the README's client code talks to the app there")
    log = tmp_path_factory.mktemp("readme_app") / "app.log"
    with serve(ROOT, log, port=7860):
        done = run([sys.executable, "-c", code], clone, {"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, f"README block {index} failed:\n{code}\n{done.stderr[-3000:]}\napp log:\n" + \
        log.read_text()[-2000:]


def small(command: str) -> str:
    """A README training command with the small flags that make it one step of a tiny model."""
    script = re.search(r"train/(\w+\.py)", command).group(1)
    extra = SMALL[script]
    if script == "train_pix2pixhd.py":
        extra += " " + HD_SIZES["local" if "--netG local" in command else "global"]
    return f"{command} {extra}"


def write_reference_checkpoints(clone: Path, block: str) -> None:
    named = set(re.findall(r"checkpoints/\S+", block))
    assert named <= set(REFERENCE), f"the test cannot write {sorted(named - set(REFERENCE))}"
    for path in named:
        (clone / path).parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".npy"):
            clusters = {26: np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)}
            np.save(clone / path, clusters, allow_pickle=True)
        else:
            torch.save(randomize(REFERENCE[path]()).state_dict(), clone / path)


def test_bash_blocks_run_as_written(tmp_path):
    """Every ```bash block in README order, in one clone (so `evaluate.py --model runs/facades` finds the
    run the training block made): as written, or as its template reason says."""
    clone = make_clone(tmp_path)
    env = {**environment(tmp_path), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    for index, (template, block) in enumerate(BASH):
        kind = TEMPLATES.get(template) if template else None
        assert not template or kind, \
            f"bash block {index}: unknown template reason {template!r}; known: {list(TEMPLATES)}"
        if kind == "make":
            for command in commands(block):
                assert shlex.split(command)[0] == "make", command
                done = subprocess.run(["make", "-n", *shlex.split(command)[1:]], cwd=ROOT, capture_output=True,
                                      text=True, env=env)
                assert done.returncode == 0, f"`{command}` (dry run):\n{done.stderr[-2000:]}"
            continue
        if kind == "checkpoints":
            write_reference_checkpoints(clone, block)
        script = "\n".join(small(c) if kind == "train" else c for c in commands(block))
        done = subprocess.run(["bash", "-e", "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"bash block {index} failed:\n{script}\n{done.stderr[-4000:]}"


def help_text(program: list[str]) -> str:
    done = run([*program, "--help"], ROOT, timeout=120)
    assert done.returncode == 0, f"`{shlex.join(program)} --help` failed:\n{done.stderr[-2000:]}"
    return done.stdout


def program_and_args(words: list[str]) -> tuple[list[str] | None, list[str]]:
    """The program a README command runs (as an argv to ask for --help) and its arguments."""
    if words[:2] == ["accelerate", "launch"]:
        words = words[2:]
        words = words[next(i for i, w in enumerate(words) if w.endswith(".py")):]  # past launcher flags
        return [sys.executable, str(ROOT / words[0])], words[1:]
    if words[0] == "python" and words[1] == "-m":
        return [sys.executable, "-m", words[2]], words[3:]
    if words[0] == "python":
        return [sys.executable, str(ROOT / words[1])], words[2:]
    if words[0] == "p2p":
        return [sys.executable, "-m", "p2p_models.cli", words[1]], words[2:]
    return None, words


@pytest.mark.parametrize("command", [c for _, block in BASH for c in commands(block)])
def test_commands_name_targets_scripts_and_flags_that_exist(command):
    words = shlex.split(command)
    if words[0] == "make":
        targets = re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert set(words[1:]) <= set(targets), f"`{command}`: no such make target"
        return
    program, args = program_and_args(words)
    assert program is not None, f"`{command}`: the README test does not know how to check this command"
    text = help_text(program)
    for flag in (w.split("=")[0] for w in args if w.startswith("--")):
        assert re.search(rf"{re.escape(flag)}\b", text), f"`{command}`: {flag} is not an option of {program[-1]}"
