"""The shipped default weights load offline and work."""

import json

import numpy as np
import torch
from conftest import ROOT, seeded
from PIL import Image

from p2p_models import Pix2PixHDPipeline, Pix2PixPipeline, camvid
from train.segmenter import Segmenter

FACADE = ROOT / "tests" / "fixtures" / "facades" / "train" / "1.jpg"


def test_facades_pipeline_translates_a_label_map():
    folder = ROOT / "pretrained" / "facades"
    pipe = Pix2PixPipeline.from_pretrained(folder)
    assert pipe.config.direction == "BtoA" and pipe.working_size == (256, 256)
    assert pipe.generator.config.ngf == 32 and next(pipe.generator.parameters()).dtype == torch.float32
    label = Image.open(FACADE).crop((80, 0, 160, 80))
    out = pipe(label, generator=seeded(0)).images[0]
    assert out.size == label.size and np.asarray(out).std() > 5  # a picture, not a flat field
    card = (folder / "README.md").read_text()
    assert "Trained on a CPU" in card and "model-index" in card
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= 40e6  # fp16 weights on disk


def test_facades_segmenter_loads_with_its_palette():
    seg = Segmenter.from_pretrained(ROOT / "pretrained" / "facades_segmenter")
    info = json.loads((ROOT / "pretrained" / "facades_segmenter" / "segmenter.json").read_text())
    assert len(info["palette"]) == 12 and info["validation"]["pixel_accuracy"] > 0.5
    photo = torch.from_numpy(np.asarray(Image.open(FACADE).crop((0, 0, 80, 80)), np.float32).transpose(2, 0, 1))
    assert seg.predict(photo[None] / 255).shape == (1, 80, 80)


def test_camvid_segmenter_runs_at_its_training_width_whatever_the_photo_size():
    seg = Segmenter.from_pretrained(ROOT / "pretrained" / "camvid_segmenter")
    photo = Image.open(sorted((ROOT / "tests" / "fixtures" / "camvid" / "val").glob("*.jpg"))[0])
    seen = []
    seg.model.register_forward_hook(lambda module, inputs, output: seen.append(tuple(inputs[0].shape[-2:])))
    ids = {}
    for size in ((256, 192), (512, 384)):
        rgb = torch.from_numpy(np.asarray(photo.resize(size, Image.BICUBIC), np.float32).transpose(2, 0, 1)) / 255
        ids[size] = seg.predict(rgb[None])[0]
        assert ids[size].shape == (size[1], size[0])
    assert seen == [(192, 256), (192, 256)]  # the 512x384 photo is segmented at 256x192
    upsampled = torch.nn.functional.interpolate(ids[(256, 192)][None, None].float(), size=(384, 512), mode="nearest")
    assert (upsampled[0, 0].long() == ids[(512, 384)]).float().mean() > 0.9


def folder_size(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_every_shipped_pipeline_fits_the_size_cap_and_says_how_it_was_trained():
    for name in ("facades", "maps_aerial2map", "maps_map2aerial", "colorization", "camvid_hd"):
        folder = ROOT / "pretrained" / name
        assert folder_size(folder) <= 30 * 2**20, name
        card = (folder / "README.md").read_text()
        assert "CPU-budget" in card and "model-index" in card and "Command" in card, name


def test_maps_pipelines_translate_both_ways():
    pair = Image.open(ROOT / "examples" / "maps" / "aerial_100.jpg")
    for name, direction in (("maps_aerial2map", "AtoB"), ("maps_map2aerial", "BtoA")):
        pipe = Pix2PixPipeline.from_pretrained(ROOT / "pretrained" / name)
        assert pipe.config.direction == direction and pipe.working_size == (256, 256)
        out = pipe(pair, generator=seeded(0)).images[0]
        assert out.size == pair.size and np.asarray(out).std() > 5


def test_colorization_pipeline_keeps_the_lightness_and_size():
    photo = Image.open(ROOT / "examples" / "colorization" / "103070.jpg").convert("L")
    pipe = Pix2PixPipeline.from_pretrained(ROOT / "pretrained" / "colorization")
    assert pipe.config.color_space == "lab"
    out = pipe(photo, generator=seeded(0)).images[0]
    assert out.size == photo.size
    grey_again = np.asarray(out.convert("L"), np.float32)
    assert np.abs(grey_again - np.asarray(photo, np.float32)).mean() < 3  # colour added, lightness kept
    assert np.asarray(out.convert("HSV"))[..., 1].mean() > 5  # not grey


def test_camvid_hd_pipeline_synthesises_camvid_and_cityscapes_examples():
    pipe = Pix2PixHDPipeline.from_pretrained(ROOT / "pretrained" / "camvid_hd")
    assert pipe.label_processor.class_names == camvid.CLASS_NAMES and pipe.config.palette == camvid.COLORS
    assert pipe.config.countable_classes == list(camvid.COUNTABLE) and pipe.style_bank is not None
    assert type(pipe.generator).__name__ == "LocalEnhancer" and pipe.working_size >= (352, 480)  # coarse to fine
    assert next(pipe.generator.parameters()).dtype == torch.float32  # stored in fp16, loaded in the working dtype
    for label_name, instance_name in (("camvid_0016E5_07997.png", None),
                                      ("cityscapes_frankfurt_000000_000576.png",
                                       "cityscapes_frankfurt_000000_000576_instances.png")):
        label_map = Image.open(ROOT / "examples" / "hd" / label_name)
        instances = Image.open(ROOT / "examples" / "hd" / instance_name) if instance_name else None
        out = pipe(label_map, instances, generator=seeded(0)).images[0]
        assert out.size == label_map.size and np.asarray(out).std() > 5
