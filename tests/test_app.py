"""The demo: its tab functions (PIL in, PIL out, clear errors), and `python app.py` as a real server
called over HTTP with gradio_client. The browser test is test_app_browser.py."""

import base64
import importlib
import io
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
import torch
import yaml
from app_setup import app_copy, serve
from conftest import ROOT, free_port, seeded
from gradio.data_classes import FileData
from gradio.processing_utils import encode_pil_to_bytes
from gradio_client import Client, handle_file
from gradio_client.utils import Status
from PIL import Image, ImageCms

from p2p_models import Pix2PixHDPipeline, Pix2PixPipeline, camvid
from p2p_models.color import rgb_to_model_lab
from p2p_models.cpu import thread_niceness


def test_readme_front_matter_matches_spaces_yaml():
    front = (ROOT / "README.md").read_text().split("---\n")[1]
    space = yaml.safe_load((ROOT / "spaces.yaml").read_text())["space"]
    assert yaml.safe_load(front) == space


def test_spaces_yaml_examples_and_local_models_exist():
    config = yaml.safe_load((ROOT / "spaces.yaml").read_text())
    for tab, spec in config["tabs"].items():
        assert spec["examples"], f"{tab} has no examples"
        for example in spec["examples"]:
            for item in example if isinstance(example, list) else [example]:
                if isinstance(item, str) and item.startswith("examples/"):
                    assert (ROOT / item).is_file(), item
        for model in spec["models"].values():
            assert (ROOT / model["local"] / "model_index.json").is_file(), model["local"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app module, its models replaced by small pipelines (P2P_OFFLINE: local folders only)."""
    folder = tmp_path_factory.mktemp("app")
    app_dir = app_copy(folder)
    mp = pytest.MonkeyPatch()
    mp.setenv("P2P_OFFLINE", "1")
    mp.syspath_prepend(str(app_dir))
    sys.modules.pop("app", None)
    module = importlib.import_module("app")
    assert module.ROOT == app_dir
    yield module
    sys.modules.pop("app", None)
    mp.undo()


def noise(h, w, seed=0, channels=3):
    shape = (h, w, channels) if channels > 1 else (h, w)
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def test_colorize_returns_grey_input_and_colour_at_input_size(app):
    photo = noise(45, 70)
    grey, out, timing = app.colorize(photo, seed=2)
    assert grey.mode == "L" and grey.size == photo.size
    assert out.mode == "RGB" and out.size == photo.size
    assert "ms on cpu" in timing
    # the prediction is recombined with the full-resolution lightness of the grey photo
    def lightness(image):
        return rgb_to_model_lab(torch.from_numpy(np.asarray(image.convert("RGB"), np.float32).transpose(2, 0, 1) / 255))[0]

    assert (lightness(out) - lightness(grey)).abs().mean() < 0.05
    expected = app.load_pipeline("colorization")(grey, generator=seeded(2)).images[0]
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_the_grey_output_carries_no_metadata_of_the_upload(app):
    """A photo with a large RGB ICC profile: the grey PNG the app returns must not copy it (an RGB profile in a
    grey PNG, megabytes of it, makes the file unreadable to colour-managed viewers)."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = noise(40, 32)
    photo.info["icc_profile"] = profile + b"\0" * 2**20
    grey, _, _ = app.colorize(photo, 0)
    saved = Image.open(io.BytesIO(encode_pil_to_bytes(grey, "png")))  # as Gradio writes outputs
    assert "icc_profile" not in saved.info and len(encode_pil_to_bytes(grey, "png")) < 2**16


def test_maps_direction_picks_the_model(app):
    tile = noise(64, 64, 1)
    to_map, _ = app.translate_map(tile, "Aerial -> map", seed=1)
    to_aerial, _ = app.translate_map(tile, "Map -> aerial", seed=1)
    for out, direction in ((to_map, "Aerial -> map"), (to_aerial, "Map -> aerial")):
        expected = app.load_pipeline("maps", direction)(tile, generator=seeded(1)).images[0]
        assert np.array_equal(np.asarray(out), np.asarray(expected))
    assert not np.array_equal(np.asarray(to_map), np.asarray(to_aerial))
    assert app.load_pipeline("maps", "Map -> aerial").config.direction == "BtoA"
    # a tab's first model is one pipeline (the one `warm_up` readied), whether or not its name is given
    assert app.load_pipeline("maps") is app.load_pipeline("maps", "Aerial -> map")
    with pytest.raises(gr.Error, match="Unknown direction"):
        app.translate_map(tile, "sideways")


def test_facades_snaps_drawn_colours_and_fills_transparent_canvas(app):
    palette = app.load_pipeline("facades").config.palette
    ids = np.random.default_rng(0).integers(0, len(palette), (8, 8)).repeat(8, 0).repeat(8, 1)
    clean = np.asarray(palette, np.uint8)[ids]
    jitter = np.random.default_rng(1).integers(-8, 9, clean.shape)
    noisy = Image.fromarray(np.clip(clean.astype(int) + jitter, 0, 255).astype(np.uint8))
    snapped, out, _ = app.facades(noisy, seed=3)
    assert np.array_equal(np.asarray(snapped), clean)
    expected = app.load_pipeline("facades")(snapped, generator=seeded(3)).images[0]
    assert np.array_equal(np.asarray(out), np.asarray(expected))

    # an ImageEditor value: a transparent canvas with one stroke; empty canvas = background class
    layer = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    layer.paste(tuple(palette[2]) + (255,), (10, 10, 30, 30))
    snapped, _, _ = app.facades({"background": None, "layers": [layer], "composite": layer})
    pixels = np.asarray(snapped)
    assert tuple(pixels[20, 20]) == tuple(palette[2]) and tuple(pixels[50, 50]) == tuple(palette[0])


def test_facades_rejects_photos_and_empty_input(app):
    with pytest.raises(gr.Error, match="far from every class colour"):
        app.facades(noise(64, 64))
    with pytest.raises(gr.Error, match="No label map"):
        app.facades(None)


@pytest.mark.parametrize(
    "image, message",
    [
        (Image.new("I;16", (32, 32), 300), "16-bit"),
        (Image.new("RGBA", (32, 32), (10, 20, 30, 0)), "transparent"),
        (Image.new("RGB", (5000, 20)), "at most 4096"),
        (None, "No photo"),
    ],
)
def test_bad_images_get_clear_errors(app, image, message):
    with pytest.raises(gr.Error, match=message):
        app.colorize(image)


def test_palette_and_grey_images_are_accepted(app):
    for image in (noise(40, 40).convert("P"), noise(40, 40, channels=1), noise(40, 40).convert("CMYK")):
        out, _ = app.translate_map(image, "Aerial -> map")
        assert out.size == (40, 40) and out.mode == "RGB"


def hd_label_map() -> tuple[Image.Image, np.ndarray]:
    """A small street: road, sky, two separate cars (so two car instances)."""
    ids = np.full((48, 64), 3)
    ids[:16] = 0
    ids[20:30, 5:20] = 8
    ids[20:30, 40:60] = 8
    return Image.fromarray(np.asarray(camvid.COLORS, np.uint8)[ids]), ids


def test_hd_styles_and_instance_selection(app, tmp_path):
    label_map, ids = hd_label_map()
    classes = ["random"] * 12
    preview, out, timing = app.hd(label_map, None, 0, {}, *classes)
    assert np.array_equal(np.asarray(preview), np.asarray(label_map))  # what the model reads, in its colours
    assert out.size == (64, 48) and "ms on cpu" in timing
    _, again, _ = app.hd(label_map, None, 0, {}, *classes)
    assert np.array_equal(np.asarray(out), np.asarray(again))  # same seed, same styles
    _, resampled, _ = app.hd(label_map, None, 1, {}, *classes)
    assert not np.array_equal(np.asarray(out), np.asarray(resampled))

    # clicking a car selects that car's connected component (CamVid has no instance maps)
    first, name = app.hd_instance_at(label_map, None, 10, 25)
    second, _ = app.hd_instance_at(label_map, None, 50, 25)
    assert name == f"Car (instance {first})" and first != second and first // 1000 == 8
    _, styled, _ = app.hd(label_map, None, 0, {str(first): "2"}, *classes)
    pipe = app.load_pipeline("hd")
    expected = pipe(ids, None, styles={c: "random" for c in range(12)}, instance_styles={first: 2},
                    generator=seeded(0)).images[0]
    assert np.array_equal(np.asarray(styled), np.asarray(expected))
    per_cluster = {app.hd(label_map, None, 0, {str(first): str(k)}, *classes)[1].tobytes() for k in range(4)}
    assert len(per_cluster) == 4

    # an uploaded instance map must match the label map's size and be an id image
    Image.fromarray(np.zeros((10, 10), np.uint16)).save(tmp_path / "small.png")
    with pytest.raises(gr.Error, match="same size"):
        app.hd(label_map, str(tmp_path / "small.png"), 0, {}, *classes)
    label_map.save(tmp_path / "rgb.png")
    with pytest.raises(gr.Error, match="single-channel"):
        app.hd(label_map, str(tmp_path / "rgb.png"), 0, {}, *classes)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(gr.Error, match="can't be read as an image"):
        app.hd(label_map, str(tmp_path / "notes.txt"), 0, {}, *classes)
    # id maps: the model's own ids, or Cityscapes label ids (mapped to CamVid), else a clear error
    _, as_ids, _ = app.hd(Image.fromarray(ids.astype(np.uint8)), None, 0, {}, *classes)
    assert np.array_equal(np.asarray(as_ids), np.asarray(out))
    grey_rgba = {"background": None, "layers": [], "composite": Image.fromarray(ids.astype(np.uint8)).convert("RGBA")}
    assert np.array_equal(np.asarray(app.hd(grey_rgba, None, 0, {}, *classes)[1]), np.asarray(out))
    city = np.where(ids == 3, 7, np.where(ids == 0, 23, 26)).astype(np.uint8)  # road, sky, car
    labels, instances = app.hd_maps(Image.fromarray(city), None)
    assert np.array_equal(labels, ids) and len(np.unique(instances[ids == 8])) == 2
    with pytest.raises(gr.Error, match="ids up to 40"):
        app.hd(Image.fromarray(np.full((48, 64), 40, np.uint8)), None, 0, {}, *classes)
    with pytest.raises(gr.Error, match="clusters 0..3"):
        app.hd(label_map, None, 0, {}, *(["7"] * 12))


def auto_choice(log: Path, pipe, deterministic: bool) -> str:
    """The backend the server's `auto` picked for `pipe`'s generator at its working size in that mode (its
    one INFO line in `log`), to compare the server's images with that backend's."""
    shape = (1, pipe.generator.config.in_channels, *pipe.working_size)
    mode = "deterministic" if deterministic else "sampled"
    (choice,) = re.findall(rf"backend auto: (\w+) for {type(pipe.generator).__name__} at {re.escape(str(shape))}, "
                           rf"{mode} ", log.read_text())
    return choice


def wait_for_warm_up(log: Path, app_dir: Path, timeout: float = 300) -> None:
    """Until the server's log has a `warm-up:` line for each model in its spaces.yaml."""
    models = sum(len(spec["models"]) for spec in yaml.safe_load((app_dir / "spaces.yaml").read_text())["tabs"].values())
    deadline = time.monotonic() + timeout
    while len(re.findall(r"warm-up: .* ready in", log.read_text())) < models:
        assert time.monotonic() < deadline, f"no warm-up line for every model after {timeout} s:\n{log.read_text()}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    with serve(app_copy(folder), folder / "app.log") as (url, pid):
        yield url, folder, pid


def test_server_every_tab_and_bad_uploads(server, tmp_path):
    url, folder, _ = server
    client = Client(url, verbose=False)
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/colorization", "/maps", "/facades", "/hd"}
    photo = noise(50, 70)
    photo.save(tmp_path / "photo.png")
    log = folder / "app.log"
    wait_for_warm_up(log, folder / "app")  # the backends were timed at start-up
    start = len(log.read_text())
    grey, colour, _ = client.predict(handle_file(str(tmp_path / "photo.png")), 3, False, api_name="/colorization")
    colorization = Pix2PixPipeline.from_pretrained(folder / "models" / "colorization_0")
    colorization.set_backend(auto_choice(log, colorization, deterministic=False))
    expected = colorization(photo.convert("L"), generator=seeded(3)).images[0]
    assert np.array_equal(np.asarray(Image.open(colour)), np.asarray(expected))  # PNG: exact pixels
    out, _ = client.predict(handle_file(str(tmp_path / "photo.png")), "Map -> aerial", 0, True, api_name="/maps")
    assert Image.open(out).size == (70, 50)

    example = ROOT / "examples" / "facades" / "103.png"
    editor = {"background": handle_file(str(example)), "layers": [], "composite": None}
    snapped, photo_out, _ = client.predict(editor, 0, False, api_name="/facades")
    assert Image.open(photo_out).size == Image.open(example).size

    label_map, ids = hd_label_map()
    label_map.save(tmp_path / "label.png")
    editor = {"background": handle_file(str(tmp_path / "label.png")), "layers": [], "composite": None}
    _, out, _ = client.predict(editor, None, 5, {}, *["random"] * 12, api_name="/hd")
    pipe = Pix2PixHDPipeline.from_pretrained(folder / "models" / "hd_0")
    pipe.set_backend(auto_choice(log, pipe, deterministic=True))
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(pipe(ids, generator=seeded(5)).images[0]))
    assert "backend auto:" not in log.read_text()[start:]  # every tab's first call found its backend chosen

    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(Exception, match="can't be read as an image"):
        client.predict(handle_file(str(tmp_path / "notes.txt")), 0, False, api_name="/colorization")
    with pytest.raises(Exception, match="far from every class colour"):
        client.predict({"background": handle_file(str(tmp_path / "photo.png")), "layers": [], "composite": None},
                       0, False, api_name="/facades")
    # still serving
    _, again, _ = client.predict(handle_file(str(tmp_path / "photo.png")), 3, False, api_name="/colorization")
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(expected))


@pytest.mark.parametrize("seed", [-1, 2**64, float("nan"), 1.5, "x"])
def test_bad_seeds_get_clear_errors(app, seed):
    with pytest.raises(gr.Error, match="The seed must be a whole number from 0 to 2\\*\\*64 - 1"):
        app.colorize(noise(20, 20), seed)
    with pytest.raises(gr.Error, match="The seed must be a whole number"):
        app.hd(hd_label_map()[0], None, seed, {}, *["random"] * 12)



def test_seeds_are_exact_integers_over_the_whole_range(app):
    for seed in (2**64 - 1, 2**53 + 1, str(2**64 - 1), 7.0, "7"):
        assert app.seed_value(seed) == int(seed)
    label_map = hd_label_map()[0]  # random styles: drawn from the seed
    outputs = [np.asarray(app.hd(label_map, None, seed, {}, *["random"] * 12)[1])
               for seed in (5, 5 + 2**32, 2**53, 2**53 + 1)]
    assert not np.array_equal(outputs[0], outputs[1])  # torch's CPU generator alone keeps only 32 bits
    assert not np.array_equal(outputs[2], outputs[3])  # through a float, both were 2**53


def test_data_urls_over_max_file_size_are_refused_before_decoding(app):
    huge = FileData(url="data:image/png;base64," + "A" * (28 * 2**20), path="")  # 21 MB once decoded
    with pytest.raises(gr.Error, match="The upload is 21.0 MB; uploads may be at most 20mb"):
        app.upload_source(huge)
    small = io.BytesIO()
    noise(8, 8).save(small, "PNG")
    url = "data:image/png;base64," + base64.b64encode(small.getvalue()).decode()
    assert app.upload_source(FileData(url=url, path="")) == small.getvalue()


@pytest.mark.parametrize("instance_styles, class_styles, message", [
    ("abc", ["random"] * 12, "Instance styles must be"),
    ({"car": "3"}, ["random"] * 12, "Instance styles must be"),
    ({"8001": "eleven"}, ["random"] * 12, "Instance styles must be"),
    ({}, ["x"] * 12, "Class styles: give none or 12"),
    ({}, ["random"] * 3, "Class styles: give none or 12"),
])
def test_malformed_style_arguments_get_one_line_errors(app, instance_styles, class_styles, message, caplog):
    with pytest.raises(gr.Error, match=message):
        app.hd(hd_label_map()[0], None, 0, instance_styles, *class_styles)
    logged = [r for r in caplog.records if r.name == "p2p.app"]
    assert [r.getMessage().startswith("refused: ") and r.exc_info is None for r in logged] == [True]


def test_hd_without_class_styles_is_every_class_random_as_the_examples_send_it(app):
    """Clicking an example sends the maps and no dropdown values."""
    _, image, status = app.hd(hd_label_map()[0], None, 0, None)
    assert image is not None and "refused" not in status


def test_gradio_cache_is_evicted(app):
    age = app.CONFIG["limits"]["cache_max_age"]
    assert app.build_demo().delete_cache == (age, age) and 0 < age <= 24 * 3600


def test_hd_refuses_photos_and_noise_as_label_maps(app):
    photo = Image.open(ROOT / "examples" / "colorization" / "101085.jpg")
    with pytest.raises(gr.Error, match="looks like a photo, not a label map"):
        app.hd(photo, None, 0, {}, *["random"] * 12)
    ids = np.random.default_rng(0).integers(0, 12, (360, 480))
    random_colours = Image.fromarray(np.asarray(camvid.COLORS, np.uint8)[ids])
    with pytest.raises(gr.Error, match="looks like noise or a photo"):
        app.hd(random_colours, None, 0, {}, *["random"] * 12)
    with pytest.raises(gr.Error, match="looks like noise or a photo"):
        app.hd_instance_at(random_colours, None, 3, 3)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> str:
    """A ~100 KB PNG that decodes to 10000x10000 pixels."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("RGB", (10000, 10000), (128, 64, 128)).save(path)
    return str(path)


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_large_uploads_are_refused_from_their_header_and_memory_returns(server, bomb, tmp_path):
    url, _, pid = server
    client = Client(url, verbose=False)
    big = tmp_path / "big.jpg"  # allowed (4096 on its longer side), processed at full resolution
    noise(256, 256).resize((4096, 3072)).save(big, quality=90)
    classes = ["random"] * 12

    def burst():
        for api, args in (("/colorization", (handle_file(bomb), 0, False)),
                          ("/maps", (handle_file(bomb), "Aerial -> map", 0, False)),
                          ("/facades", ({"background": handle_file(bomb), "layers": [], "composite": None}, 0, False)),
                          ("/hd", ({"background": handle_file(bomb), "layers": [], "composite": None}, None, 0, {},
                                   *classes))):
            with pytest.raises(Exception, match="10000x10000; its longer side may be at most 4096"):
                client.predict(*args, api_name=api)
        label_map = hd_label_map()[0]
        label_map.save(tmp_path / "label.png")
        editor = {"background": handle_file(str(tmp_path / "label.png")), "layers": [], "composite": None}
        with pytest.raises(Exception, match="The instance map is 10000x10000; its longer side may be at most 4096"):
            client.predict(editor, handle_file(bomb), 0, {}, *classes, api_name="/hd")
        for _ in range(2):
            _, colour, _ = client.predict(handle_file(str(big)), 0, False, api_name="/colorization")
            assert Image.open(colour).size == (4096, 3072)

    burst()  # warm: models loaded, allocator pools and Gradio's caches in use
    start = rss_mb(pid)
    for _ in range(3):
        burst()
    after = rss_mb(pid)
    print(f"server RSS {start:.0f} MB after a warm-up burst, {after:.0f} MB after three more")
    assert after < start + 150


def test_a_flooded_tab_never_refuses_or_delays_the_others(tmp_path_factory, tmp_path):
    """Each tab admits its own requests (here 1 running + 2 waiting): flooding the HD tab with slow
    requests refuses the excess there with a clear message, while the other tabs answer at once."""
    folder = tmp_path_factory.mktemp("flood")
    big_map = Image.open(ROOT / "examples" / "hd" / "camvid_0016E5_07997.png").resize((2400, 1800), Image.NEAREST)
    big_map.save(tmp_path / "big_label.png")
    photo = tmp_path / "photo.png"
    noise(60, 80).save(photo)
    with serve(app_copy(folder, queue_size=2), folder / "app.log") as (url, _):
        client = Client(url, verbose=False)
        client.predict(handle_file(str(photo)), 0, False, api_name="/colorization")  # models loaded
        editor = {"background": handle_file(str(tmp_path / "big_label.png")), "layers": [], "composite": None}
        flood = [client.submit(editor, None, k, {}, *["random"] * 12, api_name="/hd") for k in range(12)]
        time.sleep(1)  # the flood is admitted (or refused) first
        answers = [client.predict(handle_file(str(photo)), 1, False, api_name="/colorization"),
                   client.predict(handle_file(str(photo)), "Aerial -> map", 0, False, api_name="/maps"),
                   client.predict({"background": handle_file(str(ROOT / "examples" / "facades" / "103.png")),
                                   "layers": [], "composite": None}, 0, False, api_name="/facades")]
        hd_pending = sum(not job.done() for job in flood)
        outcomes = []
        for job in flood:
            try:
                outcomes.append(Image.open(job.result()[1]).size)
            except Exception as e:
                outcomes.append(str(e))
    assert all(Image.open(a[-2]).size for a in answers)
    assert hd_pending > 0, "the other tabs waited for the HD flood"
    served = [o for o in outcomes if o == (2400, 1800)]
    busy = [o for o in outcomes if isinstance(o, str) and "is busy: 2 requests are already waiting" in o]
    assert 1 <= len(served) <= 3 + 1 and len(served) + len(busy) == len(flood), outcomes


def big_hd_request(tmp_path) -> tuple:
    """/hd arguments that keep the small HD model busy for a while: a 2400x1800 label map."""
    big_map = Image.open(ROOT / "examples" / "hd" / "camvid_0016E5_07997.png").resize((2400, 1800), Image.NEAREST)
    big_map.save(tmp_path / "big_label.png")
    editor = {"background": handle_file(str(tmp_path / "big_label.png")), "layers": [], "composite": None}
    return editor, None, 0, {}, *["random"] * 12


def running(job, timeout: float = 120):
    """Wait until Gradio runs `job` (then a moment, for the tab's gate to admit it); the job."""
    deadline = time.time() + timeout
    while job.status().code != Status.PROCESSING:
        assert not job.done() and time.time() < deadline, "the job ended or never started"
        time.sleep(0.05)
    time.sleep(0.5)
    return job


def test_concurrent_calls_share_the_cpu_threads(tmp_path_factory, tmp_path):
    """The thread budget: a call alone runs with every torch thread (here 2, OMP_NUM_THREADS), a call
    on one tab while the HD tab runs one with its share, 2 // 2 = 1; each timing line says so."""
    folder = tmp_path_factory.mktemp("threads")
    photo = tmp_path / "photo.png"
    noise(60, 80).save(photo)
    with serve(app_copy(folder), folder / "app.log", env={"OMP_NUM_THREADS": "2"}) as (url, _):
        client = Client(url, verbose=False)
        quiet = client.predict(handle_file(str(photo)), 0, False, api_name="/colorization")[-1]
        for _ in range(3):  # a fast machine may finish the HD call first: then try again
            hd_job = running(client.submit(*big_hd_request(tmp_path), api_name="/hd"))
            during = client.predict(handle_file(str(photo)), 0, False, api_name="/colorization")[-1]
            overlapped = not hd_job.done()
            hd_timing = hd_job.result()[-1]
            if overlapped:
                break
    assert quiet.endswith("ms on cpu, 2 threads"), quiet
    assert overlapped, "the HD call ended before the other call: no overlap to test"
    assert during.endswith("ms on cpu, 1 thread"), during
    assert re.search(r"ms on cpu, (1-)?2 threads$", hd_timing), hd_timing  # it started alone


def test_a_flooded_tab_waits_for_the_other_tabs_calls(app):
    """Tab A has a call running and one waiting (a backlog) when tab B's call arrives: B starts at
    once, and A's waiting call only after B's has ended, so a flood on one tab delays the others by
    at most the one call it has running (before, A's next call started as soon as its first ended,
    beside B's). A backlog's call runs at low priority (nice 19), a fresh one at the server's. Tabs
    that both have a backlog both go on."""
    events, niceness = [], {}

    def work(name, release=None):
        niceness[name] = thread_niceness()
        events.append(("start", name))
        if release is not None:
            assert release.wait(30)
        events.append(("end", name))

    def until(condition):
        deadline = time.time() + 30
        while not condition():
            assert time.time() < deadline, events
            time.sleep(0.01)

    gate_a, gate_b = app.TabGate("A", 2), app.TabGate("B", 2)
    release_a1, release_b1 = threading.Event(), threading.Event()
    calls = [threading.Thread(target=gate_a(work), args=("a1", release_a1))]
    calls[-1].start()
    until(lambda: ("start", "a1") in events)
    calls.append(threading.Thread(target=gate_a(work), args=("a2",)))
    calls[-1].start()
    until(lambda: gate_a.admitted == 2)
    calls.append(threading.Thread(target=gate_b(work), args=("b1", release_b1)))
    calls[-1].start()
    until(lambda: ("start", "b1") in events)  # B did not wait for A's running call
    release_a1.set()
    until(lambda: ("end", "a1") in events)
    time.sleep(0.3)
    assert ("start", "a2") not in events  # A's waiting call waits for B's
    release_b1.set()
    for t in calls:
        t.join(timeout=30)
    assert events[-2:] == [("start", "a2"), ("end", "a2")], events
    assert niceness == {"a1": thread_niceness(), "b1": thread_niceness(), "a2": 19}, niceness

    events.clear()
    calls = [threading.Thread(target=gate(work), args=(f"{gate.title}{k}",))
             for k in range(3) for gate in (gate_a, gate_b)]
    for t in calls:
        t.start()
    for t in calls:
        t.join(timeout=30)
    assert len(events) == 12 and not any(t.is_alive() for t in calls), events


def test_a_busy_tab_refuses_before_decoding_the_upload(tmp_path_factory, tmp_path):
    """A request beyond the queue is refused at admission: before its upload is preprocessed (a file
    that is no image gets "busy", not the decoding error) or the model runs."""
    folder = tmp_path_factory.mktemp("busy")
    app_dir = app_copy(folder, queue_size=0)
    notes = tmp_path / "notes_busy.txt"
    notes.write_text("not an image")
    refused = {"background": handle_file(str(notes)), "layers": [], "composite": None}
    with serve(app_dir, folder / "app.log") as (url, _):
        client = Client(url, verbose=False)
        for _ in range(3):  # a fast machine may finish the HD call first: then try again
            hd_job = running(client.submit(*big_hd_request(tmp_path), api_name="/hd"))
            with pytest.raises(Exception) as busy:
                client.predict(refused, None, 0, {}, *["random"] * 12, api_name="/hd")
            overlapped = not hd_job.done()
            hd_job.result()
            if overlapped:
                break
        with pytest.raises(Exception, match="can't be read as an image"):  # admitted, it is decoded
            client.predict(refused, None, 0, {}, *["random"] * 12, api_name="/hd")
    assert overlapped, "the HD call ended before the refused one: the gate was not full"
    assert "is busy: 0 requests are already waiting" in str(busy.value), str(busy.value)


def test_strokes_on_an_uploaded_id_map_keep_its_classes_and_the_preview_shows_them_in_colour(app):
    label_map, ids = hd_label_map()
    upload = Image.fromarray(ids.astype(np.uint8)).convert("RGBA")  # the editor hands uploads over as RGBA
    assert np.array_equal(np.asarray(app.hd_preview({"background": upload, "layers": [], "composite": upload}, None)),
                          np.asarray(label_map))  # palette colours, not near-black ids
    pedestrian = camvid.CLASS_NAMES.index("Pedestrian")
    stroke = Image.new("RGBA", upload.size, (0, 0, 0, 0))
    stroke.paste(tuple(camvid.COLORS[pedestrian]) + (255,), (40, 35, 44, 45))
    drawn = {"background": upload, "layers": [stroke], "composite": Image.alpha_composite(upload, stroke)}
    preview, out, _ = app.hd(drawn, None, 0, {}, *["random"] * 12)
    expected = ids.copy()
    expected[35:45, 40:44] = pedestrian
    assert np.array_equal(np.asarray(preview), np.asarray(camvid.COLORS, np.uint8)[expected])
    pipe = app.load_pipeline("hd")
    assert np.array_equal(np.asarray(out), np.asarray(pipe(expected, generator=seeded(0)).images[0]))
    # Cityscapes label ids with their instance map: the same through the editor as given directly
    city = np.where(ids == 3, 7, np.where(ids == 0, 23, 26)).astype(np.uint8)
    direct = app.hd_maps(Image.fromarray(city), None)
    via_editor = app.hd_maps({"background": Image.fromarray(city).convert("RGBA"), "layers": [], "composite": None},
                             None)
    assert all(np.array_equal(a, b) for a, b in zip(direct, via_editor))
    # an all-sky canvas is sky (a palette grey), not id 128
    sky = Image.new("RGBA", (64, 48), tuple(camvid.COLORS[0]) + (255,))
    assert np.array_equal(np.asarray(app.hd_preview({"background": sky, "layers": [], "composite": sky}, None)),
                          np.asarray(sky.convert("RGB")))


def test_styles_for_classes_or_instances_not_in_the_map_warn_and_are_not_used(app):
    label_map, _ = hd_label_map()
    classes = ["random"] * 12
    _, plain, _ = app.hd(label_map, None, 0, {}, *classes)
    fence = classes.copy()
    fence[camvid.CLASS_NAMES.index("Fence")] = "2"
    with pytest.warns(UserWarning, match="No Fence in this label map"):
        _, out, _ = app.hd(label_map, None, 0, {}, *fence)
    assert out.tobytes() == plain.tobytes()
    with pytest.warns(UserWarning, match="Instance\\(s\\) \\[26001\\] are not in this label map"):
        _, out, _ = app.hd(label_map, None, 0, {"26001": "1"}, *classes)
    assert out.tobytes() == plain.tobytes()


def test_street_photos_and_panoramas_are_not_hd_label_maps(app):
    photo = Image.open(ROOT / "examples" / "colorization" / "103070.jpg").convert("RGB")
    with pytest.raises(gr.Error, match="looks like a photo, not a label map"):
        app.hd(photo, None, 0, {}, *["random"] * 12)
    panorama = Image.fromarray(np.asarray(camvid.COLORS, np.uint8)[np.full((200, 3000), 3)])
    with pytest.raises(gr.Error, match="The label map is 3000x200, but the model works at 64x48: crop it"):
        app.hd(panorama, None, 0, {}, *["random"] * 12)


def test_an_aerial_photo_given_as_a_map_gets_a_hint(app):
    aerial = Image.open(ROOT / "examples" / "maps" / "aerial_100.jpg")
    with pytest.warns(UserWarning, match="looks like an aerial photo"):
        app.translate_map(aerial, "Map -> aerial")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app.translate_map(Image.open(ROOT / "examples" / "maps" / "map_1002.png"), "Map -> aerial")
        app.translate_map(aerial, "Aerial -> map")


def editor_value(path) -> dict:
    return {"background": handle_file(str(path)), "layers": [], "composite": None}


def test_server_checks_match_the_readme_and_log_one_line(server, tmp_path):
    """The README's promises, per tab, over HTTP: transparent and 16-bit label maps, truncated files."""
    url, folder, _ = server
    client = Client(url, verbose=False)
    label_map, ids = hd_label_map()
    transparent = label_map.convert("RGBA")
    transparent.putalpha(Image.fromarray(np.where(ids == 0, 0, 255).astype(np.uint8)))
    transparent.save(tmp_path / "transparent.png")
    Image.fromarray(ids.astype(np.uint16) * 300).save(tmp_path / "sixteen.png")
    noise(60, 80).save(tmp_path / "photo.jpg")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "photo.jpg").read_bytes()[:-200])
    cases = [
        ("/facades", (editor_value(tmp_path / "transparent.png"), 0, False), "The label map has transparent pixels"),
        ("/hd", (editor_value(tmp_path / "transparent.png"), None, 0, {}, *["random"] * 12),
         "The label map has transparent pixels"),
        ("/facades", (editor_value(tmp_path / "sixteen.png"), 0, False), "The label map is a 16-bit or float image"),
        ("/hd", (editor_value(tmp_path / "sixteen.png"), None, 0, {}, *["random"] * 12),
         "The label map is a 16-bit or float image"),
        ("/colorization", (handle_file(str(tmp_path / "truncated.jpg")), 0, False), "the file is cut short"),
        ("/maps", (handle_file(str(tmp_path / "truncated.jpg")), "Aerial -> map", 0, False), "the file is cut short"),
        ("/facades", ({**editor_value(tmp_path / "photo.jpg"), "layers": [handle_file(str(tmp_path / "photo.jpg"))] * 60},
                      0, False), "The label map has 60 layers; at most 10 are read"),
    ]
    cache = folder / "gradio_cache"
    cached = set(cache.rglob("*"))
    for api, args, message in cases:
        with pytest.raises(Exception, match=message):
            client.predict(*args, api_name=api)
    assert cache.is_dir() and {p for p in cache.rglob("*") if p.is_file()} <= cached  # refused uploads: deleted
    # a JSON body is not an upload, but can carry data: URLs: bodies over 4/3 of max_file_size are refused
    body = b'{"data": [{"url": "data:image/png;base64,' + b"A" * 28 * 2**20 + b'"}], "fn_index": 0}'
    start = time.perf_counter()
    for content in (body, iter([body[i:i + 2**20] for i in range(0, len(body), 2**20)])):  # with a length, chunked
        response = httpx.post(f"{url}gradio_api/queue/join", content=content, timeout=60,
                              headers={"content-type": "application/json"})
        assert response.status_code == 413 and "uploads may be at most 20mb" in response.text, response.text[:300]
    assert time.perf_counter() - start < 30
    log = (folder / "app.log").read_text()
    assert log.count("refused: The label map has transparent pixels") == 2
    assert "refused: The upload can't be read as an image (the file is cut short" in log
    assert "Traceback" not in log


def test_app_command_line():
    """`python app.py --help` prints the flags and exits (it used to start the server); a bad flag is
    one line. --host and --port serve the `server` fixture; GRADIO_SERVER_PORT is the next test."""
    def app_py(*flags):
        return subprocess.run([sys.executable, "app.py", *flags], cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "P2P_OFFLINE": "1"})

    done = app_py("--help")
    assert done.returncode == 0 and "Running on" not in done.stdout + done.stderr
    for flag in ("--host", "--port", "--share", "GRADIO_SERVER_PORT", "GRADIO_SERVER_NAME"):
        assert flag in done.stdout, flag
    done = app_py("--port", "seventy")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].endswith(
        "argument --port: invalid int value: 'seventy'")


def test_gradio_server_port_from_the_environment(tmp_path):
    port = free_port()
    with serve(app_copy(tmp_path), tmp_path / "app.log", port=port, port_from_env=True) as (url, _):
        assert url == f"http://127.0.0.1:{port}/"
        assert "/facades" in Client(url, verbose=False).view_api(print_info=False, return_format="dict")[
            "named_endpoints"]
