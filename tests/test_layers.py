"""The package's layers, as the README's Layout section states them: a module imports only from its
own layer or the ones below it, lazily or not (`from`-imports, `import p2p_models.x`, and
`importlib.import_module("p2p_models.x")` alike)."""

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "p2p_models"
LAYERS = [  # lowest first
    {"blocks", "modeling_utils", "labels", "color", "camvid", "cpu", "tiling", "pix2pix", "pix2pixhd", "style_bank",
     "losses", "vgg", "efficientnet", "perceptual", "projected", "diffaugment",
     "rebalancing", "ab_classes", "palette_classes"},
    {"modes", "optimize", "onnx_export"},
    {"backends"},
    {"pipelines"},
    {"convert", "cli"},
    {"__init__"},
]


def layer(module: str) -> int:
    top = module.split(".")[0]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the README's Layout section")


def imports(source: str, here: tuple[str, ...]) -> set[str]:
    """The p2p_models modules that `source`, a module in the package folder `here` (its path parts
    under p2p_models/), imports, as dotted names under the package; `""` for the package itself."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(here[:len(here) - node.level + 1])
            if node.module:
                found.add(".".join(base + node.module.split(".")))
            else:
                found.update(".".join(base + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "p2p_models":
            found.add(node.module.removeprefix("p2p_models").removeprefix("."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("p2p_models").removeprefix(".") for a in node.names
                         if a.name.split(".")[0] == "p2p_models")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == \
                "import_module" and node.args and isinstance(node.args[0], ast.Constant) and \
                str(node.args[0].value).split(".")[0] == "p2p_models":
            found.add(node.args[0].value.removeprefix("p2p_models").removeprefix("."))
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def upward_imports(source: str, module: str) -> list[str]:
    here = tuple(module.split(".")[:-1])
    return sorted(name for name in imports(source, here) if layer(name or "__init__") > layer(module))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_import_only_their_layer_or_below(path):
    module = module_name(path)
    upward = upward_imports(path.read_text(), module)
    assert not upward, f"{module} (layer {layer(module)}) imports {upward} from a higher layer"


@pytest.mark.parametrize("source", [
    "from .pipelines import P2PPipeline",
    "from .pipelines.pipeline_utils import P2PPipeline",
    "from p2p_models.pipelines import P2PPipeline",
    "import p2p_models.pipelines.pipeline_utils",
    "def f():\n    from . import pipelines",
    "import importlib\nimportlib.import_module('p2p_models.pipelines')",
    "from importlib import import_module\nimport_module('p2p_models.cli')",
    "import p2p_models",
])
def test_the_check_finds_an_upward_import_however_written(source):
    """The layer check can fail: a backend importing the pipelines, in any of these forms, is caught."""
    assert upward_imports(source, "backends")
    assert not upward_imports("from .modes import eval_mode\nfrom . import optimize", "backends")

