"""LabelMapProcessor (`pipe.label_processor`): ids in every integer form, colour maps snapped to the
pipeline's palette (the HD and facades thresholds, on real label maps and photos), the Cityscapes ->
CamVid mapping from the shipped CamVid config, instance maps, and config checks at load."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, environment, seeded
from PIL import Image

from p2p_models import GlobalGenerator, Pix2PixHDPipeline, Pix2PixPipeline, UNetGenerator, camvid
from p2p_models.labels import nearest_palette
from p2p_models.pipelines import LabelMapProcessor, label_editing

CITYSCAPES = ROOT / "tests" / "fixtures" / "cityscapes"
FACADE_PAIR = ROOT / "tests" / "fixtures" / "facades" / "train" / "1.jpg"  # photo | JPEG label map
FACADES_INDEX = json.loads((ROOT / "pretrained" / "facades" / "model_index.json").read_text())
CAMVID_INDEX = json.loads((ROOT / "pretrained" / "camvid_hd" / "model_index.json").read_text())


def hd_pipe(**config):
    """A tiny pipeline with the shipped CamVid model's label config (palette, classes, mapping)."""
    torch.manual_seed(0)
    label_config = {k: CAMVID_INDEX[k] for k in ("palette", "id2label", "countable_classes", "label_mappings")}
    return Pix2PixHDPipeline(generator=GlobalGenerator(12 + 1, 3, ngf=4, n_downsampling=2, n_blocks=1).eval(),
                             label_nc=12, image_size=[48, 64], **{**label_config, **config})


def facades_pipe(**config):
    torch.manual_seed(0)
    return Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=8), image_size=64, direction="BtoA",
                           palette=FACADES_INDEX["palette"], id2label=FACADES_INDEX["id2label"], **config)


def facade_halves() -> tuple[Image.Image, Image.Image]:
    pair = Image.open(FACADE_PAIR).convert("RGB")
    half = pair.width // 2
    return pair.crop((0, 0, half, pair.height)), pair.crop((half, 0, pair.width, pair.height))


def test_ids_from_every_integer_form():
    processor = hd_pipe().label_processor
    ids = np.random.default_rng(0).integers(0, 12, (6, 9))
    forms = [ids, ids.astype(np.uint8), ids.astype(np.int16), torch.from_numpy(ids), torch.from_numpy(ids).int(),
             Image.fromarray(ids.astype(np.uint8)), Image.fromarray(ids.astype(np.uint8)).convert("P"),
             Image.fromarray(ids.astype(np.int32)), Image.fromarray(ids.astype(np.uint16))]
    big_endian = Image.frombytes("I;16B", (9, 6), ids.astype(">u2").tobytes())
    for form in [*forms, big_endian]:
        out = processor.ids(form)
        assert out.dtype == np.int64 and np.array_equal(out, ids), type(form)
    colours = Image.fromarray(np.asarray(CAMVID_INDEX["palette"], np.uint8)[ids])
    assert np.array_equal(processor.ids(colours), ids) and np.array_equal(processor.ids(colours.convert("RGBA")), ids)
    assert np.array_equal(np.asarray(processor.label_image(ids)), np.asarray(colours))
    with pytest.raises(ValueError, match="an array must be \\(H, W\\) integers"):
        processor.ids(ids.astype(np.float32))
    with pytest.raises(ValueError, match="an array must be \\(H, W\\) integers"):
        processor.ids(ids[None])
    with pytest.raises(ValueError, match="mode F is not an id map"):
        processor.ids(Image.fromarray(ids.astype(np.float32)))
    with pytest.raises(TypeError, match="expected a PIL image or an \\(H, W\\) integer array, got str"):
        processor.ids("labels.png")
    with pytest.raises(ValueError, match="a colour image needs the pipeline's palette"):
        LabelMapProcessor(12).ids(colours)


def test_snapping_thresholds_on_a_real_jpeg_label_map_and_photos():
    photo, label = facade_halves()
    facades = facades_pipe().label_processor
    snapped = np.asarray(facades.snap(label))
    assert np.array_equal(snapped, np.asarray(FACADES_INDEX["palette"], np.uint8)[nearest_palette(label,
                                                                                                  facades.palette)[0]])
    assert len(np.unique(snapped.reshape(-1, 3), axis=0)) > 3  # a real map: several classes survive
    with pytest.raises(ValueError, match="image: \\d+% of its pixels are far from every class colour"):
        facades.snap(photo, "image")
    # the HD pipeline's stricter distance (20) with a looser fraction (0.4): its JPEG label maps pass, photos don't
    hd = hd_pipe().label_processor
    buffer = io.BytesIO()
    Image.open(ROOT / "examples" / "hd" / "camvid_0016E5_07997.png").save(buffer, "JPEG", quality=75)
    jpeg = Image.open(buffer)
    assert hd.ids(jpeg).max() < 12
    street = Image.open(ROOT / "examples" / "colorization" / "103070.jpg").convert("RGB")
    with pytest.raises(ValueError, match="looks like a photo, not a label map"):
        hd.ids(street)
    # the facades label, JPEG noise and all, is off the CamVid palette: the thresholds belong to the pipeline
    with pytest.raises(ValueError, match="far from every class colour"):
        hd.ids(label)
    hd.max_off_palette = 1.0  # the limits are settable on the processor
    assert hd.ids(street).shape == (street.height, street.width)


def test_the_facades_pipeline_snaps_its_inputs_to_its_palette():
    photo, label = facade_halves()
    pipe = facades_pipe()
    snapped = pipe.label_processor.snap(label)
    assert np.array_equal(pipe(label, generator=seeded(1)).images[0], pipe(snapped, generator=seeded(1)).images[0])
    unsnapped = Pix2PixPipeline(generator=pipe.generator, image_size=64, direction="BtoA")
    assert unsnapped.label_processor is None
    assert not np.array_equal(unsnapped(label, generator=seeded(1)).images[0],
                              pipe(label, generator=seeded(1)).images[0])
    with pytest.raises(ValueError, match="image 1: \\d+% of its pixels are far from every class colour"):
        pipe([label, photo], generator=seeded(0))
    shipped = Pix2PixPipeline.from_pretrained(ROOT / "pretrained" / "facades")
    assert shipped.config.palette == FACADES_INDEX["palette"] and len(shipped.label_processor.class_names) == 12
    assert shipped.label_processor.palette == shipped.config.palette


def cityscapes_pair(k: int = 0) -> tuple[Image.Image, Image.Image]:
    label = Image.open(sorted((CITYSCAPES / "train_label").iterdir())[k])
    return label, Image.open(sorted((CITYSCAPES / "train_inst").iterdir())[k])


def test_cityscapes_ids_are_mapped_by_the_shipped_config():
    assert CAMVID_INDEX["label_mappings"] == {"cityscapes": [camvid.CITYSCAPES_TO_CAMVID[i] for i in range(34)]}
    pipe = hd_pipe()
    label, instance = cityscapes_pair()
    city, city_instances = np.asarray(label).astype(np.int64), np.asarray(instance).astype(np.int64)
    assert city.max() >= 12  # not CamVid ids
    labels, instances = pipe.label_and_instance_ids(label, instance)
    expected = camvid.from_cityscapes(city, city_instances)
    assert np.array_equal(labels, expected[0]) and np.array_equal(instances, expected[1])
    assert (labels[city == 26] == camvid.CLASS_NAMES.index("Car")).all()
    cars = city_instances[(city == 26) & (city_instances >= 1000)]
    assert len(np.unique(instances[(city == 26) & (city_instances >= 1000)])) == len(np.unique(cars))
    # without an instance map, countable classes are split into connected regions
    labels, instances = pipe.label_and_instance_ids(label)
    assert np.array_equal(instances, camvid.from_cityscapes(city)[1])
    # the pipeline synthesises from Cityscapes ids as from the mapped CamVid ids
    assert np.array_equal(pipe(label, instance, generator=seeded(0)).images[0],
                          pipe(*expected, generator=seeded(0)).images[0])
    # ids that fit neither the model nor a mapping
    with pytest.raises(ValueError, match="ids must lie in \\[0, 12\\) \\(the model's classes\\) or \\[0, 34\\) "
                                         "\\(cityscapes ids, mapped to these classes\\); found ids up to 40"):
        pipe.label_and_instance_ids(np.full((48, 64), 40))
    with pytest.raises(ValueError, match="instance_map is 32x16 but label_map is 256x128: they must have the same"):
        pipe.label_and_instance_ids(label, np.zeros((16, 32), np.int64))
    # a model without the mapping refuses Cityscapes ids
    with pytest.raises(ValueError, match="ids must lie in \\[0, 12\\) \\(the model's classes\\); found ids up to"):
        hd_pipe(label_mappings=None).label_and_instance_ids(label)


def test_the_shipped_cityscapes_example_keeps_its_instances():
    pipe = hd_pipe()
    label = Image.open(ROOT / "examples" / "hd" / "cityscapes_frankfurt_000000_000576.png")
    instance = Image.open(ROOT / "examples" / "hd" / "cityscapes_frankfurt_000000_000576_instances.png")
    labels, instances = pipe.label_and_instance_ids(label, instance)
    assert np.array_equal(instances, np.asarray(instance).astype(np.int64))
    objects = instances >= 1000
    assert objects.any() and (instances[objects] // 1000 == labels[objects]).mean() > 0.95  # objects: class * 1000 + k


def test_instance_maps_are_checked():
    processor = hd_pipe().label_processor
    labels = np.full((48, 64), 3)
    labels[10:20, 10:30] = 8
    with pytest.raises(ValueError, match="instance_map: ids must be non-negative, found -5"):
        processor.label_and_instance_ids(labels, np.full((48, 64), -5))
    with pytest.raises(ValueError, match="instance_map: mode RGB is not an instance map; it must be a single-channel"):
        processor.label_and_instance_ids(labels, Image.new("RGB", (64, 48)))
    with pytest.raises(ValueError, match="instance_map is 64x47 but label_map is 64x48"):
        processor.label_and_instance_ids(labels, np.zeros((47, 64), np.int64))
    many = np.arange(48 * 64).reshape(48, 64)
    processor.max_instances, processor.max_boundary_fraction = 4000, None  # every pixel its own instance: noise
    assert len(np.unique(processor.label_and_instance_ids(labels, many)[1])) == 48 * 64
    processor.max_instances = 100
    with pytest.raises(ValueError, match="hold 3072 instances, more than this pipeline's limit of 100"):
        processor.label_and_instance_ids(labels, many)
    dontcare = LabelMapProcessor(3, dontcare_class=2, max_boundary_fraction=None)
    assert dontcare.label_and_instance_ids(np.array([[0, 255], [1, 255]]))[0].tolist() == [[0, 2], [1, 2]]


def test_the_colour_spellings_are_deprecated_aliases():
    processor = hd_pipe().label_processor
    image = processor.label_image(np.random.default_rng(0).integers(0, 12, (8, 8)))
    with pytest.warns(FutureWarning, match="use color_ids"):
        assert np.array_equal(processor.colour_ids(image), processor.color_ids(image))
    with pytest.warns(FutureWarning, match="use indexed_colors"):
        assert processor.indexed_colours(image.quantize(12)) == processor.indexed_colors(image.quantize(12))


@pytest.mark.parametrize("change, message", [
    ({"label_mappings": {"cityscapes": [0] * 33 + [12]}},
     "label_mappings\\['cityscapes'\\]: must be a list of class ids in \\[0, 12\\)"),
    ({"label_mappings": {"short": [0] * 12}}, "maps ids 0-11, but ids below 12 are read as the model's own classes"),
    ({"label_mappings": {"bad": "cityscapes"}}, r"label_mappings must be dict\[str, list\[int\]\] \| None"),
])
def test_bad_label_mappings_are_refused_at_load(tmp_path, change, message):
    hd_pipe().save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["label_mappings"] == CAMVID_INDEX["label_mappings"]
    (tmp_path / "model_index.json").write_text(json.dumps({**index, **change}))
    with pytest.raises(ValueError, match=message):
        Pix2PixHDPipeline.from_pretrained(tmp_path)


def test_facades_config_round_trips_and_bad_ones_are_refused_at_load(tmp_path):
    facades_pipe().save_pretrained(tmp_path)
    loaded = Pix2PixPipeline.from_pretrained(tmp_path)
    assert loaded.config.palette == FACADES_INDEX["palette"]
    assert loaded.config.id2label == FACADES_INDEX["id2label"]
    index = json.loads((tmp_path / "model_index.json").read_text())
    for change, message in (({"palette": [[0, 0, 0], [0, 0, 256]]}, "three integers in \\[0, 255\\]"),
                            ({"id2label": {"0": "background"}}, r"id2label has no name for class id\(s\) \[1, 2"),
                            ({"palette": None}, "id2label names the classes of a palette, and this pipeline has")):
        (tmp_path / "model_index.json").write_text(json.dumps({**index, **change}))
        with pytest.raises(ValueError, match=message):
            Pix2PixPipeline.from_pretrained(tmp_path)


def test_nearest_palette_is_exact_on_every_colour_near_a_boundary():
    palette = np.random.default_rng(0).integers(0, 256, (30, 3)).tolist() + [[10, 20, 30], [10, 20, 30]]  # a tie
    colours = np.random.default_rng(1).integers(0, 256, (256, 256, 3)).astype(np.uint8)
    ids, distance = nearest_palette(Image.fromarray(colours), palette)
    squared = ((colours[:, :, None].astype(np.int64) - np.asarray(palette)[None, None]) ** 2).sum(-1)
    assert np.array_equal(ids, squared.argmin(-1))  # the first of equally near colours, as argmin
    assert np.allclose(distance, np.sqrt(squared.min(-1)))


ALL_COLOURS = """
import io, json, resource, sys, time
import numpy as np
from PIL import Image
from p2p_models import Pix2PixHDPipeline, Pix2PixPipeline


def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024

colours = np.arange(2**24, dtype=np.uint32)
pixels = np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)
buffer = io.BytesIO()
Image.fromarray(pixels).save(buffer, "PNG")  # every colour once: a small PNG
del colours, pixels
pipes = [Pix2PixPipeline.from_pretrained("pretrained/facades"), Pix2PixHDPipeline.from_pretrained("pretrained/camvid_hd")]
resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + 3 * 2**30, resource.RLIM_INFINITY))  # bound the test
results = []
for pipe in pipes:
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM) to the current RSS
    before, start = status("VmRSS"), time.process_time()
    try:
        pipe(image)
        error = None
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    results.append([error, time.process_time() - start, (status("VmHWM") - before) / 2**30])
print(json.dumps(results))
"""


def test_a_map_of_all_two_to_the_24_colours_costs_pixels_not_colours_times_classes(tmp_path):
    """16.7 M distinct colours in a 4096x4096 PNG: refused as a photo by both shipped label-map pipelines,
    each in under 5 s of CPU and 1 GB (the old palette matching held colours x classes x 3 int64: 8 GB)."""
    done = subprocess.run([sys.executable, "-c", ALL_COLOURS], cwd=ROOT, env=environment(tmp_path, OMP_NUM_THREADS="2"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for error, seconds, gigabytes in json.loads(done.stdout.splitlines()[-1]):
        assert error is not None and "looks like a photo, not a label map" in error, error
        assert seconds < 5 and gigabytes < 1, (seconds, gigabytes)


def test_a_colour_map_saved_indexed_is_read_by_its_colours_and_an_indexed_id_map_by_its_indices(tmp_path):
    """A CamVid colour map saved as a palette-mode PNG (indices in the order the quantiser chose): the pipeline
    and `p2p translate` read its colours, as they read the RGB file; an id map with a grey palette keeps its ids."""
    rgb = Image.open(ROOT / "examples" / "hd" / "camvid_0016E5_07997.png")
    rgb.quantize(colors=12, method=Image.Quantize.MAXCOVERAGE).save(tmp_path / "indexed.png")
    indexed = Image.open(tmp_path / "indexed.png")
    assert indexed.mode == "P"
    pipe = hd_pipe()
    expected = pipe.label_processor.ids(rgb)
    assert np.array_equal(pipe.label_processor.ids(indexed), expected)
    assert label_editing.id_map(pipe.label_processor, indexed.convert("RGBA")) is None  # as the editor converts it
    assert label_editing.id_map(pipe.label_processor, indexed) is None  # the app's check: a colour map, not ids
    grey_ids = Image.fromarray(expected.astype(np.uint8)).convert("P")  # ids 0-11 with PIL's grey palette
    assert grey_ids.mode == "P" and np.array_equal(pipe.label_processor.ids(grey_ids), expected)
    assert np.array_equal(label_editing.id_map(pipe.label_processor, grey_ids), expected)
    pipe.save_pretrained(tmp_path / "model")
    rgb.save(tmp_path / "rgb.png")
    for name in ("rgb", "indexed"):
        done = subprocess.run([sys.executable, "-m", "p2p_models.cli", "translate", "--model", str(tmp_path / "model"),
                               str(tmp_path / f"{name}.png"), "--output", str(tmp_path / f"out_{name}")], cwd=tmp_path,
                              env=environment(tmp_path), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out_indexed" / "indexed.png")),
                          np.asarray(Image.open(tmp_path / "out_rgb" / "rgb.png")))



def test_a_noise_instance_map_is_refused_even_with_few_ids(tmp_path):
    """16-bit noise of 2000 ids (within `max_instances`) beside the real Cityscapes label map: noise, refused;
    the map's real instance map passes."""
    label, instances = cityscapes_pair()
    processor = hd_pipe().label_processor
    assert processor.label_and_instance_ids(label, instances)[1].shape == (label.height, label.width)
    noise = np.random.default_rng(0).integers(24000, 26000, (label.height, label.width)).astype(np.uint16)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    assert Image.open(tmp_path / "noise.png").mode.startswith("I;16")
    with pytest.raises(ValueError, match="instance_map: \\d+% of its pixels lie on an instance boundary .* looks like "
                                         "noise or a photo"):
        processor.label_and_instance_ids(label, Image.open(tmp_path / "noise.png"))
