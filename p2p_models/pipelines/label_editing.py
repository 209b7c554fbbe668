"""Label maps edited in a drawing UI (the app's label editors): an editor's picture read back as class
ids, and brush strokes painted onto ids. Plain numpy / PIL work on a pipeline's `LabelMapProcessor`
(its palette and checks), kept off it: a pipeline reads its inputs with the processor alone, and a
front end (Gradio or another) does no label work of its own."""

import numpy as np
from PIL import Image

from ..labels import nearest_palette
from .label_processor import ID_MODES, LabelMapProcessor


def id_map(processor: LabelMapProcessor, image: Image.Image) -> np.ndarray | None:
    """The (H, W) int64 ids an image holds: those of an id image (not a colour map stored indexed,
    `processor.indexed_colors`), or of an RGB(A) image whose channels are all equal (an id map an
    editor converted); None for a colour-coded map, including a grey one made only of the palette's
    own greys (e.g. an all-sky canvas) rather than ids."""
    if image.mode in ID_MODES and not processor.indexed_colors(image):
        return np.asarray(image).astype(np.int64)
    rgb = np.asarray(image.convert("RGB"))
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
        return None
    palette = processor.palette or []
    greys = {c[0] for c in palette if c[0] == c[1] == c[2]}
    values = set(np.flatnonzero(np.bincount(rgb[..., 0].ravel(), minlength=256)).tolist())
    return None if max(values) >= len(palette) and values <= greys else rgb[..., 0].astype(np.int64)


def paint(processor: LabelMapProcessor, labels: np.ndarray, strokes: list[Image.Image],
          instances: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Strokes drawn on (H, W) ids: each RGBA layer (resized nearest-neighbour to the map) sets the
    pixels it covers (alpha >= 128) to the class of the nearest palette colour; in (H, W)
    `instances`, a drawn region is one instance per class (its class id). Returns new arrays."""
    labels = labels.copy()
    if instances is not None:
        processor.check_same_size(labels, instances)
        instances = instances.copy()
    for layer in strokes:
        layer = layer.convert("RGBA").resize(labels.shape[::-1], Image.NEAREST)
        drawn = np.asarray(layer.getchannel("A")) >= 128
        labels[drawn] = nearest_palette(layer.convert("RGB"), processor.palette)[0][drawn]
        if instances is not None:
            instances[drawn] = labels[drawn]
    return labels, instances
