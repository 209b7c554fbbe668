"""The segmentation network behind the FCN-score: a U-Net (`UNetGenerator` with logit outputs)
trained on real photos, stored as a folder with `model/` (safetensors) and `segmenter.json`
(classes, palette for colour-coded label maps, its own validation accuracy)."""

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from p2p_models import UNetGenerator
from p2p_models.pipelines import LabelMapProcessor
from train.metrics import SegmentationScores


class Segmenter:
    def __init__(self, model: UNetGenerator, info: dict):
        self.model, self.info = model.eval(), info
        self.num_classes = info["num_classes"]

    @classmethod
    def from_pretrained(cls, path, device="cpu") -> "Segmenter":
        path = Path(path)
        if not (path / "segmenter.json").exists():
            raise FileNotFoundError(f"{path}: no segmenter.json; train one with train/train_segmenter.py")
        info = json.loads((path / "segmenter.json").read_text())
        return cls(UNetGenerator.from_pretrained(path / "model").to(device), info)

    def save_pretrained(self, path) -> None:
        path = Path(path)
        self.model.save_pretrained(path / "model")
        (path / "segmenter.json").write_text(json.dumps(self.info, indent=2))

    @torch.no_grad()
    def predict(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) photos in [0, 1] -> (B, H, W) class ids. The U-Net runs at its training width
        (`size` in segmenter.json; aspect kept, rounded to sizes it takes), so the FCN-score of
        outputs at any resolution is measured at the scale the segmenter learned."""
        factor = 2**self.model.config.num_downs
        h, w = rgb.shape[-2:]
        scale = self.info.get("size", w) / w
        size = tuple(max(factor, round(n * scale / factor) * factor) for n in (h, w))
        x = rgb.to(self.model.device, self.model.dtype) * 2 - 1
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        logits = self.model(x).float()
        if size != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits.argmax(1).cpu()

    def labels_of(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) colour-coded label maps in [0, 1] -> (B, H, W) ids of the nearest palette colour."""
        palette = self.info["palette"]
        processor = LabelMapProcessor(len(palette), palette, max_off_palette=1.0)  # every map is read, none refused
        pixels = (rgb.permute(0, 2, 3, 1).float().cpu() * 255).round().byte().numpy()
        return torch.stack([torch.from_numpy(processor.color_ids(p)) for p in pixels])

    def scores(self) -> SegmentationScores:
        return SegmentationScores(self.num_classes)
