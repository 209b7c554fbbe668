"""A copy of the app in a temporary folder whose tabs load small, freshly built pipelines (the
shipped weights are tested by test_pretrained.py and by the browser test, which runs the real app)."""

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from conftest import ROOT, free_port, wait_for_port

from p2p_models import (
    FeatureEncoder,
    GlobalGenerator,
    Pix2PixHDPipeline,
    Pix2PixPipeline,
    StyleBank,
    UNetGenerator,
    camvid,
)


def small_pipelines(folder: Path) -> dict[tuple[str, str], Path]:
    """One small pipeline per (tab, model) of spaces.yaml, saved under `folder`."""
    config = yaml.safe_load((ROOT / "spaces.yaml").read_text())
    facades = json.loads((ROOT / "pretrained" / "facades" / "model_index.json").read_text())
    camvid_hd = json.loads((ROOT / "pretrained" / "camvid_hd" / "model_index.json").read_text())
    torch.manual_seed(0)
    out = {}
    for tab, spec in config["tabs"].items():
        for i, (model, entry) in enumerate(spec["models"].items()):
            path = folder / f"{tab}_{i}"
            if tab == "colorization":
                pipe = Pix2PixPipeline(generator=UNetGenerator(1, 2, num_downs=5, ngf=8), image_size=64,
                                       color_space="lab")
            elif tab == "hd":
                bank = StyleBank(num_classes=12, feat_num=3, k=4)
                bank.centers.normal_()
                bank.counts.fill_(4)
                pipe = Pix2PixHDPipeline(
                    generator=GlobalGenerator(12 + 1 + 3, 3, ngf=8, n_downsampling=2, n_blocks=1),
                    encoder=FeatureEncoder(3, 3, nef=8, n_downsampling=2), style_bank=bank, label_nc=12,
                    image_size=[48, 64], palette=camvid.COLORS, id2label=dict(enumerate(camvid.CLASS_NAMES)),
                    countable_classes=list(camvid.COUNTABLE), label_mappings=camvid_hd["label_mappings"])
            elif tab == "facades":  # the shipped pipeline's classes: colour label maps snapped to them
                pipe = Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=8), image_size=64, direction="BtoA",
                                       palette=facades["palette"], id2label=facades["id2label"])
            else:
                pipe = Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=8), image_size=64,
                                       direction="BtoA" if "Map ->" in model else "AtoB")
            pipe.save_pretrained(path)
            out[(tab, model)] = path
    return out


def app_copy(folder: Path, **limits) -> Path:
    """app.py, examples/ and a spaces.yaml pointing every model's local folder at a small pipeline
    (`limits` override spaces.yaml's, e.g. queue_size=2)."""
    app_dir = folder / "app"
    app_dir.mkdir()
    config = yaml.safe_load((ROOT / "spaces.yaml").read_text())
    config["limits"].update(limits)
    for (tab, model), path in small_pipelines(folder / "models").items():
        config["tabs"][tab]["models"][model]["local"] = str(path)
    (app_dir / "spaces.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(ROOT / "app.py", app_dir / "app.py")
    shutil.copytree(ROOT / "examples", app_dir / "examples")
    return app_dir


@contextmanager
def serve(app_dir: Path, log: Path, port: int | None = None, port_from_env: bool = False, env: dict | None = None):
    """`python app.py --host 127.0.0.1 --port PORT` in `app_dir` (`port` default: a free one; with
    `port_from_env`, the port in GRADIO_SERVER_PORT instead), offline, with its own Gradio cache
    (`gradio_cache` beside `log`, so that serving the repository itself writes nothing into it) and `env`
    added to the environment; yields (its URL, its process id)."""
    port = port or free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "P2P_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(log.parent / "gradio_cache"), **(env or {})}
    env.pop("GRADIO_SERVER_PORT", None)
    flags = ["--host", "127.0.0.1", "--port", str(port)]
    if port_from_env:
        env["GRADIO_SERVER_PORT"], flags = str(port), []
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", *flags], cwd=app_dir, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, log, timeout=300)  # a loaded machine starts it slowly
        yield f"http://127.0.0.1:{port}/", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)
