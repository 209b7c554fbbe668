"""`python app.py` (the real app: shipped weights, spaces.yaml, examples) driven in headless Chromium
with Playwright: every tab's first example runs, its output is a real PNG of the right size, the HD
tab restyles one clicked object, a non-image upload gets a clear error and the app keeps serving.
Screenshots go to $P2P_SCREENSHOTS (default: screenshots/), printed for the CI log."""

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from app_setup import serve
from conftest import ROOT
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from p2p_models import camvid

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
CONFIG = yaml.safe_load((ROOT / "spaces.yaml").read_text())
SHOTS = Path(os.environ.get("P2P_SCREENSHOTS", ROOT / "screenshots"))
TIMEOUT = 180_000  # ms: first use loads the model on a 2-core CPU
expect.set_options(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium not found: `make test` installs Debian's chromium (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = tmp_path_factory.mktemp("browser") / "app.log"
    with serve(Path(os.environ.get("P2P_APP_DIR", ROOT)), log) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(TIMEOUT)
        page.goto(url)
        yield page
        browser.close()


def open_tab(page, tab: str):
    page.get_by_role("tab", name=CONFIG["tabs"][tab]["title"]).click()
    return page.locator(f"#{tab}-output")


def output_image(page, tab: str, previous: str | None = None) -> tuple[Image.Image, str]:
    """Wait for the tab's output image (a new one if `previous` src is given); fetch it over HTTP."""
    img = page.locator(f"#{tab}-output img")
    expect(img).to_have_count(1)
    if previous is not None:
        expect(img).not_to_have_attribute("src", previous)
    src = img.get_attribute("src")
    body = page.request.get(src).body()
    return Image.open(io.BytesIO(body)), src


def example_size(tab: str) -> tuple[int, int]:
    first = CONFIG["tabs"][tab]["examples"][0]
    return Image.open(ROOT / (first[0] if isinstance(first, list) else first)).size


def shoot(page, name: str) -> None:
    path = SHOTS / f"{name}.png"
    try:  # let running events (e.g. the example loading) finish; a status bar left over doesn't fail the test
        expect(page.locator(".progress-text")).to_have_count(0, timeout=10_000)
    except AssertionError:
        pass
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


@pytest.mark.parametrize("tab", ["colorization", "maps", "facades"])
def test_example_runs_in_browser(page, tab):
    open_tab(page, tab)
    page.locator(f"#{tab}-examples .gallery-item, #{tab}-examples tbody tr").first.click()
    image, _ = output_image(page, tab)
    assert image.format == "PNG"
    assert image.size == example_size(tab)
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 24)) > 50  # a picture, not a blank
    expect(page.locator(f"#{tab}-time")).to_contain_text("ms on cpu")
    shoot(page, tab)


def test_hd_example_and_instance_restyling_in_browser(page):
    open_tab(page, "hd")
    page.locator("#hd-examples .gallery-item, #hd-examples tbody tr").nth(1).click()  # Cityscapes + instances
    image, _ = output_image(page, "hd")
    examples = CONFIG["tabs"]["hd"]["examples"]
    label_map = Image.open(ROOT / examples[1][0])
    assert image.format == "PNG" and image.size == label_map.size
    shoot(page, "hd")

    # click the first car pixel found in the label map; the same spot in the displayed output
    car = tuple(camvid.COLORS[camvid.CLASS_NAMES.index("Car")])
    x, y = next((x, y) for y in range(label_map.height // 3, label_map.height) for x in range(label_map.width)
                if label_map.getpixel((x, y))[:3] == car)
    img = page.locator("#hd-output img")
    box = img.bounding_box()  # the output is shown at the label map's aspect ratio
    img.click(position={"x": (x + 0.5) * box["width"] / label_map.width,
                        "y": (y + 0.5) * box["height"] / label_map.height})
    expect(page.get_by_text("Selected:")).to_contain_text("Car (instance")
    inst = int(page.locator("#hd-selected input").input_value())
    restyled = []
    for cluster in ("1", "2"):
        # Once, in a full-suite run, the pick of "2" reached the server as the previous "1" (not reproduced
        # alone or with the app tests): pick again rather than fail on the browser's race.
        for attempt in range(3):
            page.get_by_label("Style of the selected instance").click()
            page.get_by_role("option", name=cluster, exact=True).click()
            try:
                expect(page.locator("#hd-time")).to_contain_text(f"restyled instances {{{inst}: {cluster}}}",
                                                                 timeout=60_000 if attempt < 2 else 180_000)
                break
            except AssertionError:
                if attempt == 2:
                    raise
        expect(page.locator("#hd-time")).not_to_contain_text("processing")  # idle before the next choice
        restyled.append(output_image(page, "hd")[0])
    assert restyled[0].size == image.size and restyled[0].tobytes() != restyled[1].tobytes()
    shoot(page, "hd_restyled")


def test_non_image_upload_gets_clear_error_and_app_keeps_serving(page, tmp_path):
    open_tab(page, "colorization")
    page.locator("#colorization-examples .gallery-item").first.click()
    _, src = output_image(page, "colorization")
    upload = page.locator("#colorization-input input[type=file]")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    upload.set_input_files(str(notes))  # refused by the browser: not image/*
    expect(page.get_by_text("Invalid file type").first).to_be_visible()
    broken = tmp_path / "broken.png"  # passes the browser's check, fails on the server
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    upload.set_input_files(str(broken))
    page.get_by_role("button", name="Colourise").click()
    expect(page.get_by_text("can't be read as an image").first).to_be_visible()
    shoot(page, "bad_upload")
    page.locator("#colorization-examples .gallery-item").nth(1).click()
    image, _ = output_image(page, "colorization", previous=src)
    assert image.size == Image.open(ROOT / CONFIG["tabs"]["colorization"]["examples"][1]).size


def test_facade_swatches_are_named_after_their_classes(page):
    open_tab(page, "facades")
    panel = page.locator("[role=tabpanel]:visible")
    panel.get_by_role("button", name="Brush", exact=True).click()
    panel.get_by_role("button", name="Color").click()
    for name in json.loads((ROOT / "pretrained" / "facades" / "model_index.json").read_text())["id2label"].values():
        expect(panel.locator(f"button.color[title='{name}']")).to_have_count(1)
    panel.get_by_role("button", name="Color").click()


def test_hd_id_map_upload_keeps_its_classes_when_drawn_on(page, tmp_path):
    """Upload a CamVid id map (mode L, ids 0-11) to the HD editor, draw one stroke, synthesise: the
    label map the model reads (shown in palette colours) is the upload plus the stroke, not
    "Unlabelled" around a lone stroke."""
    colours = np.asarray(Image.open(ROOT / "examples" / "hd" / "camvid_0016E5_07997.png").convert("RGB"))
    palette = np.asarray(camvid.COLORS)
    ids = (colours[:, :, None] == palette).all(-1).argmax(-1)  # the example's classes, as ids
    Image.fromarray(ids.astype(np.uint8)).save(tmp_path / "ids.png")
    page.reload()  # a fresh session: no output or timing left by the tests before
    open_tab(page, "hd")
    panel = page.locator("[role=tabpanel]:visible")
    page.wait_for_timeout(3000)
    panel.locator("input[type=file]").first.set_input_files(str(tmp_path / "ids.png"))
    expect(panel.locator("canvas").first).to_be_visible()
    page.wait_for_timeout(3000)  # the upload reaches the canvas
    panel.get_by_role("button", name="Brush", exact=True).click()
    box = panel.locator("canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.7)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.7, steps=10)
    page.mouse.up()
    panel.get_by_role("button", name="Synthesise").click()
    time_md = page.locator("#hd-time")  # empty until this synthesis answers (with the preview)
    expect(time_md).to_contain_text(re.compile("ms on cpu|Error"))
    if "Error" in time_md.inner_text():
        # A Gradio 6 race, not fixed here (about 1 run in 4): the click's request can arrive with an
        # editor value whose uploaded content never reaches the server ("No label map"). A second
        # click uploads the value again; the drawn map must then be intact.
        expect(page.get_by_text("No label map").first).to_be_visible()
        panel.get_by_role("button", name="Synthesise").click()
    expect(time_md).to_contain_text("ms on cpu")
    preview = page.locator("#hd-labels img")
    shoot(page, "hd_id_upload_drawn")
    read = np.asarray(Image.open(io.BytesIO(page.request.get(preview.get_attribute("src")).body())).convert("RGB"))
    assert read.shape == colours.shape
    same = (read == colours).all(-1).mean()
    assert same > 0.9, f"only {same:.0%} of the upload's classes survived the stroke"
    void = (read == palette[camvid.VOID]).all(-1).mean()
    assert void <= (ids == camvid.VOID).mean() + 0.02  # the unlabelled fraction does not jump
