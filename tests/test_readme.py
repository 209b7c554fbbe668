"""The README's code runs as written, so it cannot drift from the code: every ```python block is
executed (the gradio_client one against the real app on http://127.0.0.1:7860, `push_to_hub`
against tests/upload_server.py standing in for the Hub), every ```bash block of `p2p` commands is
run, and every other command must name a make target, script and flags that exist. Blocks run in a
fresh folder holding the repo's examples/ and pretrained/, as in a clone."""

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from app_setup import serve
from conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", README, re.S | re.M)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
BASH = [code for lang, code in BLOCKS if lang == "bash"]
BIN = Path(sys.executable).parent


def commands(block: str) -> list[str]:
    """The commands of a bash block, continuation lines joined, optional `[...]` parts kept as text."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]


@pytest.fixture
def clone(tmp_path) -> Path:
    """A working folder that looks like a clone's root for the README's relative paths."""
    for name in ("examples", "pretrained", "train"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def run(code: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.run(code, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_readme_has_the_blocks_this_test_runs():
    assert len(PYTHON) >= 3 and any("gradio_client" in code for code in PYTHON)
    assert any("push_to_hub" in code for code in PYTHON) and BASH


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


def p2p_block(block: str) -> bool:
    """A block of `p2p` commands on the repo's own files (no `[optional]` placeholders): run for real."""
    return "[" not in block and all(command.startswith("p2p ") for command in commands(block))


@pytest.mark.parametrize("index", [i for i, block in enumerate(BASH) if p2p_block(block)])
def test_p2p_commands_run_as_written(index, clone):
    for command in commands(BASH[index]):
        done = run(shlex.split(command), clone)
        assert done.returncode == 0, f"`{command}` failed:\n{done.stderr[-3000:]}"


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


@pytest.mark.parametrize("command", [c for block in BASH if not p2p_block(block) for c in commands(block)])
def test_other_commands_name_targets_scripts_and_flags_that_exist(command):
    words = shlex.split(command.replace("[", " ").replace("]", " "))
    if words[0] == "make":
        targets = re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), re.M)
        assert set(words[1:]) <= set(targets), f"`{command}`: no such make target"
        return
    program, args = program_and_args(words)
    assert program is not None, f"`{command}`: the README test does not know how to check this command"
    text = help_text(program)
    for flag in (w.split("=")[0] for w in args if w.startswith("--")):
        assert re.search(rf"{re.escape(flag)}\b", text), f"`{command}`: {flag} is not an option of {program[-1]}"
