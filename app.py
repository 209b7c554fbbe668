"""p2p demo: `python app.py [--host HOST] [--port PORT] [--share]`. Tabs, models, examples and limits
come from spaces.yaml.

Tabs: colorization, maps (both directions), facades (label map -> photo; draw with the class
colours) and HD label -> street (pix2pixHD: styles per class, click an object to restyle it).
Each tab's main button is an API endpoint: /colorization, /maps, /facades, /hd.
"""

import argparse
import base64
import contextvars
import ctypes
import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache, wraps
from io import BytesIO
from pathlib import Path
from urllib.parse import urlparse

import gradio as gr
import numpy as np
import torch
import yaml
from huggingface_hub import constants
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

from p2p_models.cpu import lower_thread_priority
from p2p_models.pipelines import (
    HIGH_BIT_MODES,
    ID_MODES,
    MAX_SEED,
    P2PPipeline,
    check_image,
    label_editing,
    seeded_generator,
)

try:  # ZeroGPU Spaces: the tab functions get a GPU while they run
    import spaces

    gpu = spaces.GPU
except ImportError:
    spaces = None

    def gpu(fn):
        return fn

ROOT = Path(__file__).resolve().parent
CONFIG = yaml.safe_load((ROOT / "spaces.yaml").read_text())
STYLE_CHOICES = ["random"] + [str(k) for k in range(10)]
MAX_ASPECT_CHANGE = 2  # an HD label map may be at most this much wider or taller (in aspect) than the model's size
AERIAL_SMOOTHNESS = 0.3  # map tiles have >= 38% of pixels equal to their right neighbour; most aerial photos less
MAX_FILE_BYTES = gr.utils._parse_file_size(CONFIG["limits"]["max_file_size"])
logger = logging.getLogger("p2p.app")


def user_error(message: str) -> gr.Error:
    """A gr.Error for a mistake in the input: shown in the UI, logged as one line (no traceback)."""
    logger.warning(f"refused: {message}")
    return gr.Error(message, print_exception=False)


# --- models -------------------------------------------------------------------------------------

def offline() -> bool:
    return os.environ.get("P2P_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"


@lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """One quick connection check, so an offline start doesn't wait for the Hub client's retries."""
    if offline():
        return False
    try:
        socket.create_connection((urlparse(constants.ENDPOINT).hostname, 443), timeout=3).close()
        return True
    except OSError:
        return False


_loading = threading.Lock()


def load_pipeline(tab: str, model: str | None = None):
    """A tab's pipeline (its first model unless `model` names another): from the Hub, else from
    the local folder, on CUDA in float16 when there is one, else on the CPU with the auto backend
    (`optimize_for_inference`: the fastest of fp32, bf16 where the CPU has it, and ONNX Runtime where
    installed, timed at the first call or by `warm_up`), without progress bars. Loaded on first use
    (once, whichever threads ask), then cached."""
    with _loading:
        return _load_pipeline(tab, model or next(iter(CONFIG["tabs"][tab]["models"])))


@lru_cache(maxsize=None)
def _load_pipeline(tab: str, model: str):
    spec = CONFIG["tabs"][tab]["models"][model]
    errors = []
    pipe = None
    if hub_reachable():
        try:
            pipe = P2PPipeline.from_pretrained(spec["hub_id"])
        except Exception as e:  # missing repo, network trouble: fall back to the local copy
            errors.append(f"{spec['hub_id']}: {type(e).__name__}")
    local = ROOT / spec["local"]
    if pipe is None and (local / "model_index.json").exists():
        pipe = P2PPipeline.from_pretrained(local)
    if pipe is not None:
        pipe.set_progress_bar_config(disable=True)
        return pipe.optimize_for_inference()
    errors.append(f"{spec['local']}: no pipeline folder")
    raise gr.Error(f"No weights for {CONFIG['tabs'][tab]['title']} ({'; '.join(errors)}).")


# --- input checks -------------------------------------------------------------------------------

def check_header(source, max_side: int, what: str = "image", refuse_high_bit: bool = False) -> None:
    """Refuse an upload (a path, bytes or an open file) whose header gives a side over `max_side`
    (or, with `refuse_high_bit`, a 16-bit or float mode), before its pixels are decoded: a few
    hundred KB of PNG can decode to gigabytes."""
    if source is None:
        return
    try:
        with Image.open(BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as image:
            width, height = image.size
            mode = image.mode
    except Image.DecompressionBombError as e:
        raise user_error(f"The {what} has more pixels than this app decodes; its longer side may be at most {max_side} "
                         "pixels. Downscale it first.") from e
    except Exception:  # unreadable: the decoding step reports it
        return
    if max(width, height) > max_side:
        raise user_error(f"The {what} is {width}x{height}; its longer side may be at most {max_side} pixels. "
                         "Downscale it first.")
    if refuse_high_bit and mode in HIGH_BIT_MODES:
        raise user_error(f"The {what} is a 16-bit or float image (mode {mode}); save it as an 8-bit PNG (class ids "
                         "or colours).")


def unreadable(e: Exception) -> str:
    """Why PIL could not read an upload, in words."""
    if "truncated" in str(e):
        return "the file is cut short (truncated)"
    if isinstance(e, Image.UnidentifiedImageError):
        return "not an image format this app reads"
    return type(e).__name__


def check_upload_size(size: int) -> None:
    """Refuse an upload over `max_file_size` before it is read or decoded: Gradio checks the size of
    uploaded files only, not of data: URLs or files named by path."""
    if size > MAX_FILE_BYTES:
        raise user_error(f"The upload is {size / 2**20:.1f} MB; uploads may be at most "
                         f"{CONFIG['limits']['max_file_size']}.")


def upload_source(data):
    """The file behind one upload in a component payload: a path, raw bytes (a blob or a data: URL),
    or None; each within `max_file_size`."""
    if data is None or isinstance(data, (bytes, bytearray)):
        check_upload_size(len(data or b""))
        return data
    url = getattr(data, "url", None) or ""
    if url.startswith("data:"):
        encoded = url.partition(",")[2]
        check_upload_size(len(encoded) * 3 // 4)
        return base64.b64decode(encoded)
    path = data if isinstance(data, str) else getattr(data, "path", None)
    if path and os.path.isfile(path):
        check_upload_size(os.path.getsize(path))
    return path


def discard(*parts) -> None:
    """Delete the uploaded files of a refused payload from Gradio's upload folder (nothing else)."""
    folder = Path(gr.utils.get_upload_folder()).resolve()
    for part in parts:
        path = getattr(part, "path", None) or (part if isinstance(part, str) else None)
        if path and folder in Path(path).resolve().parents:
            Path(path).unlink(missing_ok=True)


class ImageInput(gr.Image):
    """gr.Image whose uploads are size-checked from their header before decoding, and whose
    unreadable uploads fail with a clear message rather than Gradio's generic one."""

    max_side = 4096  # set per tab from spaces.yaml

    @classmethod
    def get_block_name(cls) -> str:
        return "image"

    def preprocess(self, payload):
        try:
            check_header(upload_source(payload), self.max_side)
            image = super().preprocess(payload)
            if isinstance(image, Image.Image):
                image.load()  # decode here, so a truncated file is reported as one
            return image
        except gr.Error:
            discard(payload)
            raise
        except Exception as e:  # not an image, truncated, decompression bomb
            discard(payload)
            raise user_error(f"The upload can't be read as an image ({unreadable(e)}): use a PNG, JPEG or WebP "
                             f"file of at most {CONFIG['limits']['max_file_size']}.") from e


class LabelEditor(gr.ImageEditor):
    """gr.ImageEditor (upload a label map and/or draw on it) with the same header checks and clear
    upload errors."""

    max_side = 4096  # set per tab from spaces.yaml

    @classmethod
    def get_block_name(cls) -> str:
        return "imageeditor"

    def preprocess(self, payload):
        parts = payload
        if payload is not None and payload.id is not None:
            parts = self.blob_storage.get(payload.id) or payload
        uploads = [] if parts is None else [parts.background, parts.composite, *(parts.layers or [])]
        try:
            return self.checked(payload, uploads)
        except gr.Error:
            discard(*uploads)
            raise

    def checked(self, payload, uploads: list):
        layers, limit = len(uploads) - 2, CONFIG["limits"]["max_layers"]
        if layers > limit:
            raise user_error(f"The label map has {layers} layers; at most {limit} are read. Merge them first.")
        for part in uploads:
            check_header(upload_source(part), self.max_side, "label map", refuse_high_bit=True)
        try:
            value = super().preprocess(payload)
        except Exception as e:
            raise user_error(f"The upload can't be read as an image ({unreadable(e)}): use a PNG or JPEG "
                             "label map.") from e
        background = value and value["background"]
        if background is not None and background.mode == "RGBA":
            low, high = background.getchannel("A").getextrema()
            if low < 255 and high > 0:  # an uploaded label map with transparent parts (an empty canvas is all 0)
                raise user_error("The label map has transparent pixels: a label map must give a class for every "
                                 "pixel, so fill them (or drop the alpha channel) first.")
        return value


def checked(image: Image.Image | None, tab: str, what: str = "image") -> Image.Image:
    """The upload, or a gr.Error saying what is wrong with it."""
    if image is None:
        raise user_error(f"No {what}: upload one or click an example.")
    limit = CONFIG["tabs"][tab]["max_side"]
    if max(image.size) > limit:
        raise user_error(f"The {what} is {image.width}x{image.height}; its longer side may be at most {limit} "
                         "pixels. Downscale it first.")
    try:
        return check_image(image, 0)
    except ValueError as e:
        raise user_error(str(e).replace("image 0", f"The {what}")) from e


def editor_image(value, fill: list[int]) -> Image.Image | None:
    """The picture in an ImageEditor value (a PIL image passes through): the composite of the
    uploaded background and the drawn layers, transparent areas filled with `fill`."""
    if value is None or isinstance(value, Image.Image):
        image = value
    else:
        image = value.get("composite") or value.get("background")
    if image is None or image.mode not in ("RGBA", "LA", "PA"):
        return image
    canvas = Image.new("RGBA", image.size, tuple(fill) + (255,))
    return Image.alpha_composite(canvas, image.convert("RGBA")).convert("RGB")


def seed_value(seed) -> int:
    """The Seed field as an exact int (empty = 0): an int, a string of one, or a whole float (exact
    below 2**53); a gr.Error for what a pipeline can't take."""
    if seed is None or seed == "":
        return 0
    value = seed
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            value = float(value) if value.strip().replace(".", "", 1).isdigit() else None
    if isinstance(value, float) and value.is_integer() and value < 2**53:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < MAX_SEED:
        raise user_error(f"The seed must be a whole number from 0 to 2**64 - 1, got {seed!r}.")
    return int(value)


def seeded(pipe, seed) -> torch.Generator:
    """The Seed field as a generator on the pipeline's device, how pipelines are seeded."""
    return seeded_generator(seed_value(seed), pipe.device)


def timing(start: float, pipe) -> str:
    """"123 ms on cpu, 2 threads": the call's time, and on the CPU the torch threads it ran with (its
    share of the thread budget, a range where it changed during the call), and "low priority" for a
    call of a tab's backlog."""
    threads = "" if pipe.device.type != "cpu" or (used := THREADS.used()) is None else \
        f", {used[0]}{'' if used[0] == used[1] else f'-{used[1]}'} thread{'s' if used[1] > 1 else ''}" + \
        (", low priority" if threading.get_ident() in THREADS.low_priority else "")
    return f"{(time.perf_counter() - start) * 1000:.0f} ms on {pipe.device}{threads}"


def run(pipe, *args, **kwargs):
    try:
        return pipe(*args, **kwargs)
    except (TypeError, ValueError) as e:
        raise user_error(str(e)) from e


class BodyLimit:
    """ASGI middleware refusing (413) a request body over `max_bytes` other than a file upload
    (multipart, which Gradio checks against `max_file_size`): a JSON body can carry data: URLs."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers") or [])
        if scope["type"] != "http" or headers.get(b"content-type", b"").startswith(b"multipart/form-data"):
            return await self.app(scope, receive, send)
        if int(headers.get(b"content-length", b"0") or 0) > self.max_bytes:
            return await PlainTextResponse(self.refusal, status_code=413)(scope, receive, send)
        received = 0

        async def counted():  # a body sent without a length (chunked)
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self.refusal)
            return message

        await self.app(scope, counted, send)

    @property
    def refusal(self) -> str:
        return f"request body over {self.max_bytes:,} bytes (uploads may be at most {CONFIG['limits']['max_file_size']})"


# --- admission: each tab queues its own requests; calls share the CPU's threads ---------------------

class ThreadBudget:
    """The CPU's torch threads shared by the model calls running at once (one per tab at most): while
    k calls run, each gets max(1, cores // k) intra-op threads, so calls on different tabs don't
    oversubscribe the cores. A low-priority call (a tab's backlog, in a thread of nice 19) takes every
    core and no share: the OS gives the others the CPU first. torch's thread count (OpenMP's, which
    oneDNN and MKL follow) belongs to each OS thread and only that thread can set it: a call sets its
    own on entry, and a global module forward pre-hook lets a call already running take its new share
    at its next layer when another call starts or ends. ONNX Runtime sessions (the `auto` backend's
    choice for some models) keep the pool they were created with."""

    def __init__(self, cores: int):
        self.cores = cores
        self.lock = threading.Lock()
        self.running: dict[int, list[int]] = {}  # OS thread id -> [fewest, most] threads its call ran with
        self.low_priority: set[int] = set()  # the OS threads of those calls that run at low priority
        self.hook = None

    def share(self) -> int:
        """The threads of each call of normal priority now."""
        return max(1, self.cores // max(1, len(self.running.keys() - self.low_priority)))

    @contextmanager
    def held(self, low_priority: bool = False):
        """Run the body as one of the calls sharing the budget (not re-entrant); `low_priority`: in a
        thread of raised niceness, with every core."""
        me = threading.get_ident()
        with self.lock:
            if self.hook is None:
                self.hook = torch.nn.modules.module.register_module_forward_pre_hook(self.adjust)
            self.running[me] = [self.cores, 1]
            if low_priority:
                self.low_priority.add(me)
        try:
            self.adjust()
            yield
        finally:
            with self.lock:
                del self.running[me]
                self.low_priority.discard(me)
            torch.set_num_threads(self.cores)  # what this worker thread's other (unbudgeted) torch work gets

    def adjust(self, *_) -> None:
        """Set the calling thread's torch threads to its current share (a module pre-hook: a no-op
        outside a budgeted call)."""
        me = threading.get_ident()
        used = self.running.get(me)
        if used is None:
            return
        share = self.cores if me in self.low_priority else self.share()
        if torch.get_num_threads() != share:
            torch.set_num_threads(share)
        used[0], used[1] = min(used[0], share), max(used[1], share)

    def used(self) -> tuple[int, int] | None:
        """(fewest, most) threads the calling thread's budgeted call has run with so far; None outside one."""
        used = self.running.get(threading.get_ident())
        return None if used is None else (used[0], used[1])


THREADS = ThreadBudget(torch.get_num_threads())  # torch's default: the cores (or OMP_NUM_THREADS)

try:
    LIBC = ctypes.CDLL("libc.so.6")
    LIBC.malloc_trim  # glibc only
except (OSError, AttributeError):
    LIBC = None


def trim_memory() -> None:
    """Hand the heap memory freed by a call back to the OS: glibc's malloc keeps freed chunks in its
    per-thread arenas, so a server's RSS only grew from burst to burst. A no-op without glibc."""
    if LIBC is not None:
        LIBC.malloc_trim(0)


def preprocessed(component, payload):
    """What Gradio's preprocessing would pass the function for `payload`, the raw value of an event
    wired with preprocess=False."""
    data_model = getattr(component, "data_model", None)
    if data_model is not None and payload is not None:
        payload = data_model.model_validate(payload, context={"validate_meta": True})
    return component.preprocess(payload)


class TabGate:
    """One tab's admission: one request runs at a time and at most `max_waiting` more wait; beyond
    that a request is refused at once with a message. Every tab has its own gate (Gradio's queue
    only dispatches), so a slow or flooded tab never refuses the others. Nor does it delay them by
    more than the one call it has running: a request that had to queue behind its own tab's starts
    only while no other tab has a request that did not (a fresh one), and runs in the tab's
    low-priority thread (nice 19: the OS gives a fresh call on another tab the CPU first, while the
    backlog's call goes on with what is left). A fresh call holds a share of `THREADS`, and the heap
    a call freed is returned to the OS when it ends."""

    changed = threading.Condition()  # one for all the gates: whether a call may start depends on the others
    gates: list["TabGate"] = []

    def __init__(self, title: str, max_waiting: int):
        self.title, self.max_waiting = title, max_waiting
        self.admitted = 0  # running + waiting
        self.fresh = 0  # admitted requests that found the tab idle (0 or 1)
        self.running = False
        self.backlog = ThreadPoolExecutor(1, f"{title} backlog", initializer=lower_thread_priority)
        TabGate.gates.append(self)

    def may_start(self, fresh: bool) -> bool:
        """Whether a request of this tab may start its call now (the caller holds `changed`)."""
        return not self.running and (fresh or not any(g.fresh for g in self.gates if g is not self))

    def __call__(self, fn, inputs: list | None = None):
        """`fn` gated. With `inputs`, the event's input components, for an event wired with
        preprocess=False: their raw payloads are preprocessed (uploads decoded) after admission, so
        that a refused request is answered before any upload is decoded."""
        @wraps(fn)
        def gated(*args, **kwargs):
            with self.changed:
                busy = self.admitted > self.max_waiting
                fresh = self.admitted == 0
                if not busy:
                    self.admitted += 1
                    self.fresh += fresh
            if busy:  # its uploads stay for the cache's eviction: an admitted request may share them (same content)
                raise user_error(f"{self.title} is busy: {self.max_waiting} requests are already waiting. "
                                 "Try again in a moment.")
            def call():
                with THREADS.held(low_priority=not fresh):
                    raw = args if inputs is None else [preprocessed(c, a) for c, a in zip(inputs, args)]
                    return fn(*raw, **kwargs)

            started = False
            try:
                with self.changed:
                    self.changed.wait_for(lambda: self.may_start(fresh))
                    self.running = started = True
                return call() if fresh else self.backlog.submit(contextvars.copy_context().run, call).result()
            finally:
                with self.changed:
                    self.admitted -= 1
                    self.fresh -= fresh
                    if started:
                        self.running = False
                    self.changed.notify_all()
                trim_memory()

        return gated


GATES = {tab: TabGate(spec["title"], CONFIG["limits"]["queue_size"]) for tab, spec in CONFIG["tabs"].items()}


# --- tab functions (PIL in, PIL out) -------------------------------------------------------------

@gpu
def colorize(image, seed: float = 0, deterministic: bool = False):
    """Colour photo or grey photo -> (the grey input, the colourised photo at its size, timing)."""
    grey = checked(image, "colorization", "photo").convert("L")
    grey.info = {}  # the upload's metadata (an RGB ICC profile of megabytes) would be written into the grey PNG
    pipe = load_pipeline("colorization")
    start = time.perf_counter()
    out = run(pipe, grey, generator=seeded(pipe, seed), deterministic=deterministic).images[0]
    return grey, out, timing(start, pipe)


def smoothness(image: Image.Image) -> float:
    """The fraction of pixels (nearly) equal to their right neighbour: high for flat map tiles."""
    pixels = np.asarray(image, dtype=np.int16)
    return float((np.abs(np.diff(pixels, axis=1)).sum(-1) <= 6).mean())


@gpu
def translate_map(image, direction: str, seed: float = 0, deterministic: bool = False):
    """Aerial photo -> map, or map -> aerial photo, at the input's size."""
    if direction not in CONFIG["tabs"]["maps"]["models"]:
        raise user_error(f"Unknown direction {direction!r}; choose one of {list(CONFIG['tabs']['maps']['models'])}.")
    image = checked(image, "maps", "map tile" if direction.startswith("Map") else "aerial photo").convert("RGB")
    if direction.startswith("Map") and smoothness(image) < AERIAL_SMOOTHNESS:
        gr.Warning("This looks like an aerial photo rather than a map tile: for a photo, choose \"Aerial -> map\".")
    pipe = load_pipeline("maps", direction)
    start = time.perf_counter()
    out = run(pipe, image, generator=seeded(pipe, seed), deterministic=deterministic).images[0]
    return out, timing(start, pipe)


@gpu
def facades(label_map, seed: float = 0, deterministic: bool = False):
    """Facade label map (uploaded and/or drawn) -> (the label map snapped to the class colours, photo, timing)."""
    pipe = load_pipeline("facades")
    image = checked(editor_image(label_map, pipe.config.palette[0]), "facades", "label map")
    snapped = run(pipe.label_processor.snap, image, "The label map")
    start = time.perf_counter()
    out = run(pipe, image, generator=seeded(pipe, seed), deterministic=deterministic).images[0]  # the pipeline snaps it too
    return snapped, out, timing(start, pipe)


def read_instance_map(instance_map) -> np.ndarray | None:
    if instance_map is None:
        return None
    path = None if isinstance(instance_map, Image.Image) else instance_map
    try:
        if path is not None:
            check_header(upload_source(path), CONFIG["tabs"]["hd"]["max_side"], "instance map")
            try:
                with Image.open(path) as opened:
                    instance_map = opened.copy()
            except Exception as e:
                raise user_error(f"The instance map can't be read as an image ({type(e).__name__}): use a PNG of "
                                 "instance ids (8- or 16-bit).") from e
        return run(load_pipeline("hd").label_processor.instance_ids, instance_map, "The instance map")
    except gr.Error:
        discard(path)
        raise


def hd_maps(label_map, instance_map) -> tuple[np.ndarray | Image.Image, np.ndarray | None]:
    """(label ids or an RGB label map for the pipeline to snap and check, instance ids or None) at the
    label map's size. Label maps: RGB in the model's palette (uploaded and/or drawn), an id image of
    the model's classes, or of a source label set the model's `label_mappings` config maps (e.g. a
    Cityscapes *_labelIds.png for the CamVid model, with its instance map if given); strokes drawn
    on an uploaded id map are painted onto its ids."""
    pipe = load_pipeline("hd")
    processor = pipe.label_processor
    strokes = []
    if isinstance(label_map, Image.Image) and label_map.mode in ID_MODES:  # ids, possibly 16-bit
        image = label_map
        if max(image.size) > CONFIG["tabs"]["hd"]["max_side"]:
            checked(image.convert("L"), "hd", "label map")
    elif (isinstance(label_map, dict) and label_map.get("background") is not None
          and label_editing.id_map(processor, label_map["background"]) is not None):
        image = checked(label_map["background"], "hd", "label map")  # strokes go on the uploaded ids
        strokes = label_map.get("layers") or []
    else:
        image = checked(editor_image(label_map, pipe.config.palette[-1]), "hd", "label map")
    instances = read_instance_map(instance_map)
    (h, w), (height, width) = pipe.working_size, (image.height, image.width)
    if max(width / height / (w / h), (w / h) / (width / height)) > MAX_ASPECT_CHANGE:
        raise user_error(f"The label map is {width}x{height}, but the model works at {w}x{h}: crop it to a similar "
                         f"shape (at most {MAX_ASPECT_CHANGE}x wider or taller) so it isn't squashed.")
    ids = label_editing.id_map(processor, image)
    if ids is None:
        return image.convert("RGB"), instances
    labels, instances = run(processor.map_ids, ids, instances, "The label map")
    return run(label_editing.paint, processor, labels, strokes, instances)


def check_styles(class_styles: list, instance_styles, num_classes: int) -> None:
    """A gr.Error for style choices the UI can't send (a malformed API call), instead of a traceback."""
    # none at all is every class "random": what the examples send (they fill the maps, not the dropdowns)
    if len(class_styles) not in (0, num_classes) or any(s not in (None, "", *STYLE_CHOICES) for s in class_styles):
        raise user_error(f"Class styles: give none or {num_classes}, each one of {STYLE_CHOICES}; "
                         f"got {list(class_styles)!r}.")
    if not isinstance(instance_styles, (dict, type(None))) or any(
            not str(i).isdigit() or str(s) not in STYLE_CHOICES for i, s in (instance_styles or {}).items()):
        raise user_error(f"Instance styles must be {{instance id: one of {STYLE_CHOICES}}}, got {instance_styles!r}.")


def hd_styles(class_styles: list[str], instance_styles: dict | None, labels: np.ndarray,
              instances: np.ndarray) -> tuple[dict, dict]:
    """The chosen styles for the classes and instances this map has; a warning names the others."""
    names = load_pipeline("hd").label_processor.class_names
    check_styles(class_styles, instance_styles, len(names))
    chosen = {c: s for c, s in enumerate(class_styles) if s not in (None, "", "random")}
    per_instance = {int(i): s for i, s in (instance_styles or {}).items()}
    classes, ids = set(np.unique(labels).tolist()), set(np.unique(instances).tolist())
    if absent := [names[c] for c in chosen if c not in classes]:
        gr.Warning(f"No {', '.join(absent)} in this label map: the style chosen for it is not used.")
    if absent := [i for i in per_instance if i not in ids]:
        gr.Warning(f"Instance(s) {absent} are not in this label map (it changed?): their styles are not used; "
                   "\"Clear instance styles\" forgets them.")
    styles = {c: int(s) for c, s in chosen.items() if c in classes}
    return styles, {i: (s if s == "random" else int(s)) for i, s in per_instance.items() if i in ids}


@gpu
def hd(label_map, instance_map, seed: float, instance_styles: dict | None, *class_styles: str):
    """Label map (+ instance map) -> (the label map as the model reads it, street photo at its size,
    timing). `class_styles`: one "random" or cluster index per class; `instance_styles`: {instance
    id: cluster} overrides."""
    pipe = load_pipeline("hd")
    labels, instances = run(pipe.label_and_instance_ids, *hd_maps(label_map, instance_map))
    styles, per_instance = hd_styles(list(class_styles), instance_styles, labels, instances)
    start = time.perf_counter()
    out = run(pipe, labels, instances, styles=styles, instance_styles=per_instance, generator=seeded(pipe, seed)).images[0]
    restyled = f"; restyled instances {per_instance}" if per_instance else ""
    return pipe.label_image(labels), out, timing(start, pipe) + restyled


def hd_preview(label_map, instance_map):
    """The label map as the model will read it, in the model's colours (nothing while it can't be
    read). Runs as the editor changes."""
    pipe = load_pipeline("hd")
    try:
        labels, _ = run(pipe.label_and_instance_ids, *hd_maps(label_map, instance_map))
    except gr.Error:
        return gr.skip()
    return pipe.label_image(labels)


def hd_instance_at(label_map, instance_map, x: int, y: int) -> tuple[int, str]:
    """The instance under pixel (x, y) of the label map: (instance id, "Car (instance 8003)")."""
    pipe = load_pipeline("hd")
    labels, instances = run(pipe.label_and_instance_ids, *hd_maps(label_map, instance_map))
    y, x = min(y, labels.shape[0] - 1), min(x, labels.shape[1] - 1)
    names = class_colours("hd")[1]
    return int(instances[y, x]), f"{names[labels[y, x]]} (instance {instances[y, x]})"


# --- UI ------------------------------------------------------------------------------------------

def legend(names: list[str], palette: list[list[int]]) -> str:
    chips = [f'<span style="display:inline-block;margin:2px 8px 2px 0"><span style="display:inline-block;width:14px;'
             f'height:14px;vertical-align:middle;background:rgb({r},{g},{b});border:1px solid #888"></span> {n}</span>'
             for n, (r, g, b) in zip(names, palette)]
    return '<div class="legend">' + "".join(chips) + "</div>"


def class_colours(tab: str) -> tuple[list[list[int]], list[str]]:
    """(palette, class names) of a label-map tab's pipeline."""
    processor = load_pipeline(tab).label_processor
    return processor.palette, processor.class_names or [str(c) for c in range(len(processor.palette))]


def swatch_names() -> str:
    """A <head> script naming the editors' colour swatches after their classes (hover text and
    aria-label): the swatches are Gradio's, so they are found by their colour."""
    names = {f"rgb({r}, {g}, {b})": name for tab in ("facades", "hd")
             for (r, g, b), name in zip(*class_colours(tab))}
    return f"""<script>
const p2pClassNames = {json.dumps(names)};
new MutationObserver(() => document.querySelectorAll("button.color").forEach((swatch) => {{
  const name = p2pClassNames[swatch.style.backgroundColor];
  if (name && swatch.title !== name) {{ swatch.title = name; swatch.setAttribute("aria-label", name); }}
}})).observe(document.documentElement, {{childList: true, subtree: true}});
</script>"""


def hex_colours(palette: list[list[int]]) -> list[str]:
    return ["#%02x%02x%02x" % tuple(c) for c in palette]


def seed_controls(stochastic: bool = True):
    with gr.Row():
        seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
        deterministic = gr.Checkbox(label="Deterministic (dropout off)", value=False, visible=stochastic)
    return seed, deterministic


def wire(tab: str, fn, inputs, outputs, run_button, again_button, seed):
    """The tab's button (an API endpoint named after the tab) and "sample again" (seed + 1, rerun),
    both through the tab's gate (Gradio runs them at once; the gate queues them, and preprocesses
    their inputs once admitted)."""
    fn = GATES[tab](fn, inputs)
    run_button.click(fn, inputs, outputs, api_name=tab, concurrency_limit=None, preprocess=False)
    again_button.click(lambda s: seed_value(s) + 1, seed, seed, api_name=False, queue=False).then(
        fn, inputs, outputs, api_name=False, concurrency_limit=None, preprocess=False)


def colorization_tab(tab: str, spec: dict) -> None:
    gr.Markdown(spec["description"])
    with gr.Row():
        source = ImageInput(label="Photo", type="pil", image_mode=None, elem_id=f"{tab}-input")
        source.max_side = spec["max_side"]
        grey = gr.Image(label="Grey input", type="pil", format="png", interactive=False)
        result = gr.Image(label="Colourised", type="pil", format="png", interactive=False,
                          elem_id=f"{tab}-output")
    seed, deterministic = seed_controls()
    with gr.Row():
        button = gr.Button("Colourise", variant="primary")
        again = gr.Button("Sample again")
    time_md = gr.Markdown(elem_id=f"{tab}-time")
    inputs, outputs = [source, seed, deterministic], [grey, result, time_md]
    wire(tab, colorize, inputs, outputs, button, again, seed)
    with gr.Column(elem_id=f"{tab}-examples"):
        gr.Examples(spec["examples"], inputs=[source], outputs=outputs, fn=GATES[tab](colorize), run_on_click=True,
                    cache_examples=False)


def maps_tab(tab: str, spec: dict) -> None:
    gr.Markdown(spec["description"])
    directions = list(spec["models"])
    with gr.Row():
        source = ImageInput(label="Input tile", type="pil", image_mode=None, elem_id=f"{tab}-input")
        source.max_side = spec["max_side"]
        result = gr.Image(label="Output", type="pil", format="png", interactive=False, elem_id=f"{tab}-output")
    direction = gr.Radio(directions, value=directions[0], label="Direction")
    seed, deterministic = seed_controls()
    with gr.Row():
        button = gr.Button("Translate", variant="primary")
        again = gr.Button("Sample again")
    time_md = gr.Markdown(elem_id=f"{tab}-time")
    inputs, outputs = [source, direction, seed, deterministic], [result, time_md]
    wire(tab, translate_map, inputs, outputs, button, again, seed)
    with gr.Column(elem_id=f"{tab}-examples"):
        gr.Examples(spec["examples"], inputs=[source, direction], outputs=outputs, fn=GATES[tab](translate_map),
                    run_on_click=True, cache_examples=False)


def facades_tab(tab: str, spec: dict) -> None:
    gr.Markdown(spec["description"])
    palette, names = class_colours(tab)
    blank = Image.new("RGB", (256, 256), tuple(palette[0]))
    with gr.Row():
        editor = LabelEditor(value=blank, label="Label map (upload, or draw)", type="pil", image_mode="RGBA",
                             canvas_size=(256, 256), brush=gr.Brush(colors=hex_colours(palette), color_mode="fixed",
                                                                    default_color=hex_colours(palette)[1]),
                             sources=["upload", "clipboard"], format="png")
        editor.max_side = spec["max_side"]
        snapped = gr.Image(label="Label map as the model sees it", type="pil", format="png", interactive=False)
        result = gr.Image(label="Photo", type="pil", format="png", interactive=False, elem_id=f"{tab}-output")
    gr.HTML(legend(names, palette))
    seed, deterministic = seed_controls()
    with gr.Row():
        button = gr.Button("Translate", variant="primary")
        again = gr.Button("Sample again")
    time_md = gr.Markdown(elem_id=f"{tab}-time")
    inputs, outputs = [editor, seed, deterministic], [snapped, result, time_md]
    wire(tab, facades, inputs, outputs, button, again, seed)
    example_input = ImageInput(type="pil", image_mode=None, visible=False)
    example_input.change(lambda im: im, example_input, editor, api_name=False)
    with gr.Column(elem_id=f"{tab}-examples"):
        gr.Examples(spec["examples"], inputs=[example_input], outputs=outputs,
                    fn=GATES[tab](lambda im: facades(im)), run_on_click=True, cache_examples=False)


def hd_tab(tab: str, spec: dict) -> None:
    gr.Markdown(spec["description"])
    palette, names = class_colours(tab)
    blank = Image.new("RGB", (480, 360), tuple(palette[0]))
    with gr.Row():
        with gr.Column():
            editor = LabelEditor(value=blank, label="Label map (upload, or draw)", type="pil", image_mode="RGBA",
                                 canvas_size=(480, 360), brush=gr.Brush(colors=hex_colours(palette),
                                                                        color_mode="fixed",
                                                                        default_color=hex_colours(palette)[8]),
                                 sources=["upload", "clipboard"], format="png")
            editor.max_side = spec["max_side"]
            instance_file = gr.File(label="Instance map (optional: PNG of instance ids, same size)", type="filepath",
                                    file_types=[".png"])
        with gr.Column():
            result = gr.Image(label="Photo (click an object to restyle it)", type="pil", format="png",
                              interactive=False, elem_id=f"{tab}-output")
            preview = gr.Image(label="Label map as the model reads it", type="pil", format="png", interactive=False,
                               elem_id=f"{tab}-labels")
    gr.HTML(legend(names, palette))
    seed = gr.Number(label="Seed (draws the random styles)", value=0, precision=0, minimum=0)
    with gr.Accordion("Style per class (a style-bank cluster, or random)", open=False):
        with gr.Row():
            class_styles = [gr.Dropdown(STYLE_CHOICES, value="random", label=name, min_width=120) for name in names]
    with gr.Row():
        selected = gr.Number(label="Selected instance", value=None, precision=0, interactive=False,
                             elem_id="hd-selected")
        selected_name = gr.Markdown("Click an object in the result to select it.")
        instance_style = gr.Dropdown(STYLE_CHOICES, value="random", label="Style of the selected instance")
    instance_styles = gr.JSON(value={}, label="Per-instance styles {instance id: cluster}")
    with gr.Row():
        button = gr.Button("Synthesise", variant="primary")
        again = gr.Button("Resample styles")
        clear = gr.Button("Clear instance styles")
    time_md = gr.Markdown(elem_id=f"{tab}-time")
    inputs, outputs = [editor, instance_file, seed, instance_styles, *class_styles], [preview, result, time_md]
    wire(tab, hd, inputs, outputs, button, again, seed)
    editor.change(hd_preview, [editor, instance_file], preview, api_name=False, trigger_mode="always_last")

    def select(label_map, instance_map, event: gr.SelectData):
        inst, name = hd_instance_at(label_map, instance_map, *event.index)
        return inst, f"Selected: **{name}**"

    result.select(select, [editor, instance_file], [selected, selected_name], api_name=False)

    def restyle(inst, choice, current):
        if inst is None:
            raise user_error("Click an object in the result first.")
        return {**(current or {}), str(int(inst)): choice}

    instance_style.input(restyle, [selected, instance_style, instance_styles], instance_styles, api_name=False).then(
        GATES[tab](hd), inputs, outputs, api_name=False, concurrency_limit=None)
    clear.click(lambda: {}, None, instance_styles, api_name=False).then(
        GATES[tab](hd), inputs, outputs, api_name=False, concurrency_limit=None)

    example_label = ImageInput(type="pil", image_mode=None, visible=False)
    example_instances = gr.File(type="filepath", visible=False)
    example_label.change(lambda im: im, example_label, editor, api_name=False)
    example_instances.change(lambda f: f, example_instances, instance_file, api_name=False)
    with gr.Column(elem_id=f"{tab}-examples"):
        gr.Examples(spec["examples"], inputs=[example_label, example_instances], outputs=outputs,
                    fn=GATES[tab](lambda label_map, instance_map: hd(label_map, instance_map, 0, {})),
                    run_on_click=True, cache_examples=False)


TABS = {"colorization": colorization_tab, "maps": maps_tab, "facades": facades_tab, "hd": hd_tab}


def load_models(warm_up: bool) -> None:
    """Load every tab's models now, before serving (ZeroGPU runs each call in a fork of this process, and
    neither a load, whose empty-weights init patches torch.nn.Module process-wide, nor an ONNX export may
    run beside model calls); with `warm_up`, also get their backends ready (`P2PPipeline.warm_up`: `auto`'s
    timing, ONNX exports) so that the first visitor's call runs at full speed; one log line each."""
    for tab, spec in CONFIG["tabs"].items():
        for model in spec["models"]:
            start = time.perf_counter()
            try:
                pipe = load_pipeline(tab, model)
                if warm_up:
                    pipe.warm_up()
            except Exception as e:  # a tab without weights tells its visitors; the others serve
                logger.warning(f"{tab} {model}: {type(e).__name__}: {e}")
                continue
            if warm_up:
                logger.info(f"warm-up: {tab} {model} ready in {time.perf_counter() - start:.1f} s")


def build_demo() -> gr.Blocks:
    age = CONFIG["limits"]["cache_max_age"]
    with gr.Blocks(title=CONFIG["space"]["title"], delete_cache=(age, age)) as demo:  # evict every `age` s
        gr.Markdown(f"# {CONFIG['space']['title']}: {CONFIG['space']['short_description']}")
        for tab, spec in CONFIG["tabs"].items():
            with gr.Tab(spec["title"], id=tab):
                TABS[tab](tab, spec)
    return demo.queue(max_size=None)  # admission is per tab (TabGate)


def max_threads() -> int:
    """Enough worker threads for every tab's running and waiting requests, plus quick events."""
    return len(CONFIG["tabs"]) * (CONFIG["limits"]["queue_size"] + 1) + 8


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the p2p demo (tabs, models and limits from spaces.yaml).")
    p.add_argument("--host", default=None,
                   help="address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1; 0.0.0.0 for every "
                        "interface)")
    p.add_argument("--port", type=int, default=None,
                   help="port (default: $GRADIO_SERVER_PORT, else 7860, or the next free one)")
    p.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("p2p_models.backends").setLevel(logging.INFO)  # the auto backend's choices, one line each
    logger.setLevel(logging.INFO)  # warm-up lines
    load_models(warm_up=spaces is None)  # on the CPU, time the backends (and export to ONNX) before serving
    body_limit = Middleware(BodyLimit, max_bytes=MAX_FILE_BYTES * 4 // 3 + 2**16)  # one data: URL, plus the rest
    build_demo().launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True,
                        max_file_size=CONFIG["limits"]["max_file_size"], max_threads=max_threads(),
                        head=swatch_names(), app_kwargs={"middleware": [body_limit]})


if __name__ == "__main__":
    main()
