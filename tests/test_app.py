"""The demo as a real server: started with `python app.py`, called over HTTP with gradio_client."""

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import ROOT, free_port, wait_for_port
from gradio_client import Client, handle_file
from PIL import Image

from p2p_models import Pix2PixPipeline, UNetGenerator


def test_readme_front_matter_matches_spaces_yaml():
    front = (ROOT / "README.md").read_text().split("---\n")[1]
    space = yaml.safe_load((ROOT / "spaces.yaml").read_text())["space"]
    assert yaml.safe_load(front) == space


@pytest.fixture
def app_server(tmp_path):
    """app.py on a free port, its tabs' local folders pointed at small saved pipelines."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    config = yaml.safe_load((ROOT / "spaces.yaml").read_text())
    for tab, spec in config["tabs"].items():
        spec["local"] = str(tmp_path / tab)
        Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=8), image_size=64).save_pretrained(tmp_path / tab)
    (app_dir / "spaces.yaml").write_text(yaml.safe_dump(config))
    (app_dir / "app.py").write_text((ROOT / "app.py").read_text())
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "P2P_OFFLINE": "1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, log, timeout=120)
        yield f"http://127.0.0.1:{port}/", tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_app_translates_and_keeps_serving_after_bad_input(app_server, tmp_path):
    url, models = app_server
    client = Client(url, verbose=False)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    image.save(tmp_path / "in.png")
    name = "/facades_translate"
    out, timing = client.predict(handle_file(str(tmp_path / "in.png")), 3, False, api_name=name)
    expected = Pix2PixPipeline.from_pretrained(models / "facades")(image, seed=3)
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(expected))
    assert timing.endswith("on cpu") and "ms" in timing

    rgba = image.convert("RGBA")
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.save(tmp_path / "alpha.png")
    with pytest.raises(Exception, match="transparent pixels"):
        client.predict(handle_file(str(tmp_path / "alpha.png")), 0, False, api_name=name)
    out, _ = client.predict(handle_file(str(tmp_path / "in.png")), 3, False, api_name=name)
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(expected))
