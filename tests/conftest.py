import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any huggingface_hub import: no 23 s network retries

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def seeded(seed: int) -> torch.Generator:
    """A CPU `torch.Generator` seeded with `seed`: how the tests seed a pipeline call (diffusers' way)."""
    return torch.Generator().manual_seed(seed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server did not open port {port} in {timeout} s:\n{log.read_text()[-3000:]}")


ACCELERATE = Path(sys.executable).parent / "accelerate"


def environment(tmp_path: Path, **extra) -> dict:
    """Environment for training subprocesses: the project importable, CPU accelerate, a private HF_HOME."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path / "hf"), "ACCELERATE_USE_CPU": "1",
            "OMP_NUM_THREADS": "1", **extra}


def run_python(code: str, env: dict, cwd: Path, timeout: float = 300) -> str:
    """Run `code` in a fresh interpreter (huggingface_hub reads HF_ENDPOINT at import time)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run([sys.executable, "-c", code], env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="session")
def olah_cli() -> Path:
    """olah, a self-hosted Hub server (../shared/hub/README.md), installed by `make test` in .olah/."""
    cli = Path(os.environ.get("P2P_OLAH_CLI", ROOT / ".olah" / "bin" / "olah-cli"))
    if not cli.exists():
        pytest.fail(f"{cli} not found: run the tests with `make test`, which installs olah==0.5.4 into .olah/")
    return cli


@pytest.fixture
def olah_hub(olah_cli, tmp_path):
    """Start olah serving git repos under `<tmp>/hub_repos/models/<org>/<name>`; yields (endpoint, repos dir)."""
    port = free_port()
    repos = tmp_path / "hub_repos"
    (repos / "models").mkdir(parents=True)
    config = tmp_path / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\nrepos-path = "./olah_state"\nmirrors-path = ["./hub_repos"]\n'
        'hf-scheme = "http"\nhf-netloc = "127.0.0.1:9"\nhf-lfs-netloc = "127.0.0.1:9"\n\n'
        "[accessibility]\noffline = true\n"
    )
    log = tmp_path / "olah.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(olah_cli), "-c", str(config)], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, log)
        yield f"http://127.0.0.1:{port}", repos
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def upload_hub(tmp_path):
    """Start tests/upload_server.py; yields (endpoint, folder where uploaded repos land)."""
    port = free_port()
    root = tmp_path / "uploaded"
    log = tmp_path / "upload.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "upload_server.py"), str(root), str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, log)
        yield f"http://127.0.0.1:{port}", root
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def git_commit_folder(folder: Path) -> None:
    """Make `folder` a git repo with everything committed on `main` (how olah serves a Hub repo)."""
    git = shutil.which("git")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "upload"]):
        subprocess.run([git, *args], cwd=folder, env=env, check=True)
