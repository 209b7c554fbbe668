"""The shipped default weights load offline and work."""

import json

import numpy as np
import torch
from conftest import ROOT
from PIL import Image
from segmenter import Segmenter

from p2p_models import Pix2PixPipeline

FACADE = ROOT / "tests" / "fixtures" / "facades" / "train" / "1.jpg"


def test_facades_pipeline_translates_a_label_map():
    pipe = Pix2PixPipeline.from_pretrained(ROOT / "pretrained" / "facades")
    assert pipe.config.direction == "BtoA" and pipe.working_size == (256, 256)
    assert sum(p.numel() for p in pipe.generator.parameters()) == 3_404_451
    label = Image.open(FACADE).crop((80, 0, 160, 80))
    out = pipe(label, seed=0)
    assert out.size == label.size and np.asarray(out).std() > 5  # a picture, not a flat field
    card = (ROOT / "pretrained" / "facades" / "README.md").read_text()
    assert "CPU-budget model" in card and "model-index" in card


def test_facades_segmenter_loads_with_its_palette():
    seg = Segmenter.from_pretrained(ROOT / "pretrained" / "facades_segmenter")
    info = json.loads((ROOT / "pretrained" / "facades_segmenter" / "segmenter.json").read_text())
    assert len(info["palette"]) == 12 and info["validation"]["pixel_accuracy"] > 0.5
    photo = torch.from_numpy(np.asarray(Image.open(FACADE).crop((0, 0, 80, 80)), np.float32).transpose(2, 0, 1))
    assert seg.predict(photo[None] / 255).shape == (1, 80, 80)
