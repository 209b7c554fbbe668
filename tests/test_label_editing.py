"""label_editing: an editor's picture read back as ids (id images, their RGB copies, not colour maps)
and strokes painted onto ids in the palette's classes."""

import numpy as np
from PIL import Image
from test_label_processor import CAMVID_INDEX, hd_pipe

from p2p_models import camvid
from p2p_models.pipelines.label_editing import id_map, paint


def test_strokes_are_painted_onto_ids_in_palette_classes():
    processor = hd_pipe().label_processor
    ids = np.full((48, 64), 3)
    instances = ids.copy()
    pedestrian = camvid.CLASS_NAMES.index("Pedestrian")
    near = np.asarray(CAMVID_INDEX["palette"][pedestrian]) + [6, -5, 4]  # a brush colour a little off
    stroke = Image.new("RGBA", (128, 96), (0, 0, 0, 0))  # drawn at twice the map's size
    stroke.paste(tuple(int(v) for v in near) + (255,), (20, 10, 40, 30))
    stroke.paste((255, 255, 255, 100), (80, 60, 100, 80))  # faint (alpha < 128): not drawn
    labels, painted = paint(processor, ids, [stroke], instances)
    expected = ids.copy()
    expected[5:15, 10:20] = pedestrian
    assert np.array_equal(labels, expected) and np.array_equal(painted, expected)
    assert (ids == 3).all() and (instances == 3).all()  # the inputs are left alone
    assert paint(processor, ids, [stroke])[1] is None


def test_id_images_are_told_from_colour_maps():
    processor = hd_pipe().label_processor
    ids = np.random.default_rng(0).integers(0, 12, (8, 8)).astype(np.uint8)
    assert np.array_equal(id_map(processor, Image.fromarray(ids)), ids)
    assert np.array_equal(id_map(processor, Image.fromarray(ids).convert("RGBA")), ids)  # an editor's copy
    sky = Image.new("RGBA", (8, 8), tuple(CAMVID_INDEX["palette"][0]) + (255,))  # the palette's own grey
    assert id_map(processor, sky) is None
    assert id_map(processor, processor.label_image(ids.astype(np.int64))) is None
