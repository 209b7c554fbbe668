"""The bf16 and auto backends: bf16 keeps the shipped models' outputs (PSNR >= 40 dB against float32)
and their seeds; auto picks among the backends this CPU runs well, once per process per model config
and input shape, and a seed gives what the chosen backend gives."""

import contextlib
import importlib.util
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, seeded
from PIL import Image
from test_pipeline import make_pipe, photo
from test_pix2pixhd import hd_pipe, scene

from p2p_models import backends
from p2p_models.cpu import lower_thread_priority, native_bf16, thread_niceness
from p2p_models.onnx_export import OnnxGenerator
from p2p_models.optimize import CastCopy, fast_cpu_copy
from p2p_models.pipelines import P2PPipeline

NATIVE, WHY = native_bf16()
needs_native_bf16 = pytest.mark.skipif(not NATIVE, reason=f"bf16 is checked where the CPU computes it natively; "
                                                          f"here {WHY}")
ORT = [] if any(importlib.util.find_spec(p) is None for p in backends.ONNX_PACKAGES) else ["onnxruntime"]
MIN_PSNR = 40.0  # dB, bf16 output against float32, images in [0, 1]
EXAMPLES = {  # shipped pipeline -> its examples in the app
    "facades": ["facades/103.png", "facades/115.png", "facades/116.png"],
    "colorization": ["colorization/101085.jpg", "colorization/103070.jpg", "colorization/105025.jpg"],
    "maps_aerial2map": ["maps/aerial_100.jpg", "maps/aerial_1002.jpg"],
    "maps_map2aerial": ["maps/map_100.png", "maps/map_1002.png"],
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images with values in [0, 1]."""
    return float(10 * np.log10(1 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-20)))


@pytest.fixture
def fresh_choices(monkeypatch):
    """`auto` with no choices made yet in this process (restored afterwards)."""
    monkeypatch.setattr(backends, "auto_choices", {})
    return backends.auto_choices


def test_bf16_copy_holds_bf16_convolutions_float32_norms_and_returns_float32():
    g = make_pipe().generator
    copy = fast_cpu_copy(g, deterministic=False, dtype=torch.bfloat16)
    assert isinstance(copy, CastCopy)
    convs = [m for m in copy.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    norms = [m for m in copy.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    assert norms and all(m.weight.dtype == m.running_var.dtype == torch.float32 for m in norms)
    with torch.no_grad():
        assert copy(torch.randn(1, 3, 64, 64)).dtype == torch.float32


def test_bf16_without_native_bf16_warns(monkeypatch):
    monkeypatch.setenv("P2P_NATIVE_BF16", "0")
    with pytest.warns(UserWarning, match="backend bf16: P2P_NATIVE_BF16=0; use fast or auto"):
        make_pipe().set_backend("bf16")


@needs_native_bf16
@pytest.mark.parametrize("model", sorted(EXAMPLES))
def test_bf16_output_psnr_against_fp32_on_the_shipped_models(model):
    pipe = P2PPipeline.from_pretrained(ROOT / "pretrained" / model)
    pipe.set_progress_bar_config(disable=True)
    images = [Image.open(ROOT / "examples" / name) for name in EXAMPLES[model]]
    outputs = {}
    for backend in ("fast", "bf16"):
        pipe.set_backend(backend)
        for deterministic in (True, False):  # sampled: the same seeds give the same dropout masks
            generators = [seeded(i) for i in range(len(images))]
            outputs[backend, deterministic] = pipe(images, generator=generators, deterministic=deterministic,
                                                   output_type="np").images
    for deterministic in (True, False):
        for name, fp32, bf16 in zip(EXAMPLES[model], outputs["fast", deterministic], outputs["bf16", deterministic]):
            assert psnr(bf16, fp32) >= MIN_PSNR, (name, deterministic)


@needs_native_bf16
def test_bf16_output_psnr_against_fp32_on_the_shipped_hd_model():
    pipe = P2PPipeline.from_pretrained(ROOT / "pretrained" / "camvid_hd")
    pipe.set_progress_bar_config(disable=True)
    maps = [Image.open(ROOT / "examples" / "hd" / f"camvid_0016E5_{n}.png") for n in ("07997", "08117")]
    style = Image.open(ROOT / "examples" / "colorization" / "101085.jpg")  # through the encoder
    outputs = {}
    for backend in ("fast", "bf16"):
        pipe.set_backend(backend)
        outputs[backend] = [pipe(maps, generator=[seeded(0), seeded(1)], output_type="np").images,
                            pipe(maps[0], style_image=style, output_type="np").images]
    for fp32, bf16 in zip(outputs["fast"], outputs["bf16"]):
        assert all(psnr(b, f) >= MIN_PSNR for f, b in zip(fp32, bf16))


def timed_kinds(monkeypatch, fast_bf16: bool = False) -> list[str]:
    """Record which backends `auto` times, a call at a time; with `fast_bf16`, bf16 calls report 0 ms
    and the others 1 s, so that bf16 wins wherever it is tried (else every call reports 1 s)."""
    timed = []

    def fake(net, x, kwargs):
        kind = "bf16" if isinstance(net, CastCopy) else "onnxruntime" if isinstance(net, OnnxGenerator) else "fast"
        timed.append(kind)
        net(x, **kwargs)
        return 0.0 if fast_bf16 and kind == "bf16" else 1000.0

    monkeypatch.setattr(backends, "call_ms", fake)
    return timed


@pytest.mark.parametrize("native", ["0", "1"])
def test_auto_never_picks_bf16_without_native_bf16(monkeypatch, fresh_choices, native):
    """bf16 is made to win whenever it is timed: with P2P_NATIVE_BF16=0 it must not even be tried."""
    monkeypatch.setenv("P2P_NATIVE_BF16", native)
    timed = timed_kinds(monkeypatch, fast_bf16=True)
    pipe = make_pipe()
    pipe.set_backend("auto")
    pipe(photo(), generator=seeded(0))
    (choice,) = fresh_choices.values()
    if native == "0":
        assert choice == "fast" and "bf16" not in timed
    else:
        assert choice == "bf16" and timed == ["fast", "bf16", *ORT] * backends.TIMED_CALLS


def test_auto_sampled_with_a_generator_gives_the_chosen_backends_image(fresh_choices):
    image = photo(120, 80)
    pipe = make_pipe()
    pipe.set_backend("auto")
    torch.manual_seed(11)  # the first call times the candidates: neither the generator nor the global RNG moves
    got = [np.asarray(pipe(image, generator=seeded(5)).images[0]), np.asarray(pipe(image).images[0])]
    (choice,) = fresh_choices.values()
    direct = make_pipe()
    direct.set_backend(choice)
    torch.manual_seed(11)
    expected = [np.asarray(direct(image, generator=seeded(5)).images[0]), np.asarray(direct(image).images[0])]
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert not np.array_equal(got[0], np.asarray(direct(image, generator=seeded(6)).images[0]))


def test_auto_measures_once_per_model_config_and_shape_and_logs_why(monkeypatch, fresh_choices, caplog):
    monkeypatch.setenv("P2P_NATIVE_BF16", "1")
    timed = timed_kinds(monkeypatch)
    caplog.set_level(logging.INFO, logger="p2p_models.backends")
    pipe, other = make_pipe(), make_pipe()  # two pipelines, one model config
    for p in (pipe, other):
        p.set_backend("auto")
    pipe(photo(), generator=seeded(0))
    # every call reports 1 s: a tie, timed up to MAX_TIMED_CALLS rounds (a clear winner stops at TIMED_CALLS, above)
    assert timed == ["fast", "bf16", *ORT] * backends.MAX_TIMED_CALLS and len(fresh_choices) == 1
    ours = lambda: [r.getMessage() for r in caplog.records if r.name == "p2p_models.backends"]  # not the exporter's
    (line,) = ours()
    assert line.startswith("backend auto: fast for UNetGenerator at (1, 3, 64, 64), sampled (fast 1000.0 ms, "
                           "bf16 1000.0 ms" + ", onnxruntime 1000.0 ms" * len(ORT))
    assert f"fastest of {backends.MAX_TIMED_CALLS} calls each" in line and "not tried" not in line
    pipe(photo(), generator=seeded(1))
    other(photo(200, 130), generator=seeded(2))
    assert len(timed) == (2 + len(ORT)) * backends.MAX_TIMED_CALLS and len(ours()) == 1  # cached: not timed again
    other(photo(), generator=seeded(0), size_mode="native")  # a new shape (padded to 64x128): timed once more
    assert len(timed) == 2 * (2 + len(ORT)) * backends.MAX_TIMED_CALLS and len(fresh_choices) == 2


def test_warm_up_times_auto_in_each_mode_so_calls_at_the_working_size_time_nothing(monkeypatch, fresh_choices):
    timed = timed_kinds(monkeypatch)
    pipe, hd = make_pipe(), hd_pipe()
    for p in (pipe, hd):
        p.set_backend("auto")
        assert p.warm_up() is p
    assert sorted((key[0], key[2], key[3]) for key in fresh_choices) == [
        ("GlobalGenerator", (1, 8, 64, 256), True),
        ("UNetGenerator", (1, 3, 64, 64), False), ("UNetGenerator", (1, 3, 64, 64), True)]
    done = len(timed)
    pipe(photo(120, 80), generator=seeded(0))
    pipe(photo(90, 60), deterministic=True)
    hd(*scene())
    assert len(timed) == done and len(fresh_choices) == 3  # chosen already: no call timed again


def test_auto_deterministic_tries_onnxruntime_and_runs_the_hd_encoder(monkeypatch, fresh_choices):
    for package in backends.ONNX_PACKAGES:
        pytest.importorskip(package)
    monkeypatch.setenv("P2P_NATIVE_BF16", "0")
    pipe = hd_pipe()
    labels, inst = scene()
    style = photo(256, 64)
    expected = np.asarray(pipe(labels, inst, style_image=style).images[0]).astype(int)
    timed = timed_kinds(monkeypatch)
    pipe.set_backend("auto")
    got = np.asarray(pipe(labels, inst, style_image=style).images[0]).astype(int)
    assert {key[0] for key in fresh_choices} == {"GlobalGenerator", "FeatureEncoder"}
    assert timed == ["fast", "onnxruntime"] * 2 * backends.MAX_TIMED_CALLS  # ties; the encoder's calls, then the generator's
    assert np.abs(got - expected).max() <= 1  # fp32 backends: the torch output



@pytest.mark.parametrize("backend", ["fast", *ORT])
def test_a_resize_convolution_generator_runs_on_the_fp32_backends(backend):
    """`upsampling="nearest"` (nn.Upsample + conv): packed and exported like the rest, the same image."""
    pipe = hd_pipe(norm="instance", upsampling="nearest")
    labels, inst = scene()
    style = photo(256, 64)
    expected = np.asarray(pipe(labels, inst, style_image=style).images[0]).astype(int)
    pipe.set_backend(backend)
    got = np.asarray(pipe(labels, inst, style_image=style).images[0]).astype(int)
    assert np.abs(got - expected).max() <= 1


def thread_nice_values() -> dict[int, int]:
    """This process's OS threads -> their nice values (field 19 of /proc/self/task/<tid>/stat)."""
    nice = {}
    for stat in Path("/proc/self/task").glob("*/stat"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            nice[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[16])
    return nice


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread niceness is read from Linux's /proc")
def test_onnxruntime_runs_a_low_priority_threads_calls_in_a_session_of_its_priority():
    """An ONNX Runtime session's pool threads keep the niceness of the thread that created the session,
    so a call from a low-priority thread (the app's backlog) gets a session of its own, loaded from the
    same exported graph, whose threads all run at nice 19; the image is the same."""
    for package in backends.ONNX_PACKAGES:
        pytest.importorskip(package)
    pipe = make_pipe()
    pipe.set_backend("onnxruntime")
    image = photo()
    expected = np.asarray(pipe(image, deterministic=True).images[0])
    normal = pipe._backend._copy(pipe.generator, "onnxruntime", True)
    seen = {}

    def low_priority_call():
        lower_thread_priority()
        torch.set_num_threads(2)  # ONNX Runtime sessions get the creating thread's torch threads: a pool of 1
        before = thread_nice_values()
        seen["image"] = np.asarray(pipe(image, deterministic=True).images[0])
        seen["session"] = pipe._backend._copy(pipe.generator, "onnxruntime", True)
        seen["new threads"] = {t: n for t, n in thread_nice_values().items() if t not in before}

    worker = threading.Thread(target=low_priority_call)
    worker.start()
    worker.join(timeout=120)
    assert normal.niceness == thread_niceness() < 19
    assert seen["session"] is not normal and seen["session"].niceness == 19 and seen["session"].path == normal.path
    assert seen["new threads"] and set(seen["new threads"].values()) == {19}, seen["new threads"]
    assert np.array_equal(seen["image"], expected)
    assert pipe._backend._copy(pipe.generator, "onnxruntime", True) is normal  # this thread's, kept
