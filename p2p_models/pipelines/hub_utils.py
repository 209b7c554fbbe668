"""A p2p pipeline folder on disk and on the Hub: names meant as local folders, the files a download
takes, model_index.json's entries, and what `save_pretrained` adds to diffusers' output (the modules
diffusers' `trust_remote_code` loading imports) or takes out of it (local paths)."""

import json
import os
import re
from pathlib import Path

HUB_ID = re.compile(r"[\w-][\w.-]*(/[\w-][\w.-]*)?")  # "name" or "owner/name"
FILE_SUFFIXES = {".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".npy", ".json", ".parquet", ".png", ".jpg"}
HUB_FILES = ["model_index.json", "README.md", "*/config.json", "*/*.safetensors", "*/*.safetensors.index.json"]
LOADER = "pipeline_p2p"  # the module model_index.json's `_class_name` names, for diffusers' DiffusionPipeline
# What `save_pretrained` writes beside a p2p class: diffusers' `trust_remote_code` loading imports it (from
# the installed p2p package). `import_module` rather than an import statement: diffusers scans those and
# would tell a user without p2p to `pip install p2p_models`, a package that doesn't exist.
LOADER_CODE = '''"""Lets `diffusers.DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` load this p2p
folder: {name} comes from the installed p2p package."""

from importlib import import_module

try:
    {name} = import_module("{module}").{name}
except ImportError as e:
    raise ImportError(
        "this is a p2p pipeline (pix2pix / pix2pixHD): loading it needs the p2p package (its `p2p_models` "
        "module) installed: `pip install -e .` in a checkout of p2p"
    ) from e
'''


def looks_local(name: str | os.PathLike) -> bool:
    """Whether a name that is nothing here was meant as a local path, not as a Hub id: an absolute, `.`,
    `..` or `~` path, a name that is no valid Hub id (three parts, a backslash), a file name
    (`vgg19.safetensors`), or one whose owner part is a folder here (`pretrained/nope` beside `pretrained/`)."""
    text = str(name)
    if os.path.isabs(text) or text.startswith((".", "~")) or not HUB_ID.fullmatch(text) or \
            Path(text).suffix in FILE_SUFFIXES:
        return True
    return "/" in text and os.path.isdir(text.split("/")[0])


def check_local_folder(name: str | os.PathLike) -> None:
    """A clear, immediate error for a model name meant as a local folder (`looks_local`) that is not
    a pipeline folder, rather than a Hub download that retries before failing."""
    text = str(name)
    if os.path.isdir(text):
        if not os.path.isfile(os.path.join(text, "model_index.json")):
            raise FileNotFoundError(f"{text}: no model_index.json in this folder (a pipeline folder, as "
                                    "save_pretrained writes it, has one)")
    elif looks_local(text):
        raise FileNotFoundError(f"{text}: no such folder (expected a pipeline folder, or a Hub id such as "
                                "user/model)")


def is_component_entry(entry) -> bool:
    """Whether a model_index.json value names a component ([library, class], or [null, null] for an
    optional one left out) rather than being a config value."""
    return isinstance(entry, list) and len(entry) == 2 and all(x is None or isinstance(x, str) for x in entry)


def is_p2p_component(entry) -> bool:
    """Whether a model_index.json value names a p2p model class: ["p2p_models.<module>", class]."""
    return is_component_entry(entry) and (entry[0] or "").startswith("p2p_models.") and isinstance(entry[1], str)


def drop_local_paths(folder: str | os.PathLike) -> None:
    """Remove `_name_or_path` from a saved folder's model_index.json and component configs where it
    is a local path (the folder a pipeline was loaded from): a shipped or pushed folder names no
    path on the machine that wrote it. Hub ids stay."""
    for path in [Path(folder) / "model_index.json", *Path(folder).glob("*/config.json")]:
        config = json.loads(path.read_text())
        source = config.get("_name_or_path")
        local = isinstance(source, str) and (os.path.isabs(source) or source.startswith((".", "~"))
                                             or os.path.exists(source))
        if local:
            del config["_name_or_path"]
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_loader_code(folder: str | os.PathLike) -> None:
    """Make a folder diffusers' `save_pretrained` wrote for a p2p pipeline loadable by
    `diffusers.DiffusionPipeline.from_pretrained(folder or Hub id, trust_remote_code=True)` with p2p
    installed: model_index.json's `_class_name` becomes [`pipeline_p2p`, class], as diffusers names a
    custom pipeline class, and each p2p class gets a module that imports it from the installed package:
    `pipeline_p2p.py` for the pipeline, and `<component>/<library>.py` for each component (diffusers' Hub
    download refuses a component from a library outside diffusers and transformers without one). The
    weights and configs are untouched."""
    folder = Path(folder)
    path = folder / "model_index.json"
    index = json.loads(path.read_text())
    name = index["_class_name"]  # the class name diffusers' `save_config` writes
    index["_class_name"] = [LOADER, name]
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (folder / f"{LOADER}.py").write_text(LOADER_CODE.format(module="p2p_models", name=name))
    for component, entry in index.items():
        if is_p2p_component(entry) and (folder / component).is_dir():
            (folder / component / f"{entry[0]}.py").write_text(LOADER_CODE.format(module=entry[0], name=entry[1]))
