"""The package's layers, as the README's Layout section states them: a module imports only from its
own layer or the ones below it, lazily or not."""

import ast

import pytest
from conftest import ROOT

PACKAGE = ROOT / "p2p_models"
LAYERS = [  # lowest first
    {"blocks", "modeling_utils", "labels", "color", "camvid", "cpu", "tiling", "pix2pix", "pix2pixhd", "style_bank",
     "losses", "vgg", "efficientnet", "perceptual", "projected", "diffaugment"},
    {"modes", "optimize", "onnx_export"},
    {"backends"},
    {"pipelines"},
    {"convert", "cli"},
    {"__init__"},
]


def layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def imports(path) -> set[str]:
    """The p2p_models modules a file imports (relative or absolute), as dotted names under the package."""
    here = path.relative_to(PACKAGE).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(here[:len(here) - node.level + 1])
            if node.module:
                found.add(".".join(base + node.module.split(".")))
            else:
                found.update(".".join(base + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("p2p_models."):
            found.add(node.module.removeprefix("p2p_models."))
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_import_only_their_layer_or_below(path):
    module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    upward = [name for name in imports(path) if layer(name) > layer(module)]
    assert not upward, f"{module} (layer {layer(module)}) imports {upward} from a higher layer"
