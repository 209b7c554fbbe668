"""Rebuild docs/any_size.jpg: a 1024x768 label map through the shipped CamVid pix2pixHD model,
resized to its 512x384 working size and back, next to the same map at its native size.

    python docs/any_size.py

The label map is a Cityscapes sample (`../shared/datasets/cityscapes_samples`) mapped to CamVid
classes with its instance map, centre-cropped to 4:3 and scaled to 1024x768 (nearest).
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from p2p_models import Pix2PixHDPipeline, camvid

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "datasets" / "cityscapes_samples" / "test_label"
NAME = "frankfurt_000000_000576_gtFine"
SIZE = (1024, 768)
CROP = (256, 128, 384, 256)  # a detail (left, top, width, height) at full resolution, shown 2x


def load_maps() -> tuple[np.ndarray, np.ndarray]:
    """(labels, instances) as (768, 1024) CamVid ids and instance ids."""
    labels = np.asarray(Image.open(SAMPLE / f"{NAME}_labelIds.png"))
    instances = np.asarray(Image.open(SAMPLE.parent / "test_inst" / f"{NAME}_instanceIds.png")).astype(np.int64)
    labels, instances = camvid.from_cityscapes(labels, instances)
    h, w = labels.shape
    crop_w = h * 4 // 3
    left = (w - crop_w) // 2

    def scale(ids):
        return np.asarray(Image.fromarray(ids[:, left:left + crop_w].astype(np.int32), "I").resize(SIZE, Image.NEAREST))

    return scale(labels).astype(np.int64), scale(instances).astype(np.int64)


def panel(image: Image.Image, title: str) -> Image.Image:
    """The image at half size with a detail crop at 2x below it, and a title."""
    left, top, w, h = CROP
    small = image.resize((SIZE[0] // 2, SIZE[1] // 2), Image.LANCZOS)
    detail = image.crop((left, top, left + w, top + h)).resize((SIZE[0] // 2, SIZE[0] // 2 * h // w), Image.NEAREST)
    out = Image.new("RGB", (SIZE[0] // 2, 24 + small.height + detail.height), "white")
    ImageDraw.Draw(out).text((6, 6), title, fill="black")
    out.paste(small, (0, 24))
    out.paste(detail, (0, 24 + small.height))
    ImageDraw.Draw(out).rectangle((left // 2, 24 + top // 2, (left + w) // 2, 24 + (top + h) // 2), outline="yellow")
    return out


def main():
    pipe = Pix2PixHDPipeline.from_pretrained(ROOT / "pretrained" / "camvid_hd")
    labels, instances = load_maps()
    colours = Image.fromarray(np.asarray(camvid.COLORS, np.uint8)[labels])
    resized = pipe(labels, instances, generator=torch.Generator().manual_seed(0)).images[0]
    native = pipe(labels, instances, generator=torch.Generator().manual_seed(0), size_mode="native").images[0]
    panels = [panel(colours, "label map, 1024x768"), panel(resized, "resize to 512x384 and back (size_mode='resize')"),
              panel(native, "native 1024x768 (size_mode='native')")]
    figure = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), panels[0].height), "white")
    for k, p in enumerate(panels):
        figure.paste(p, (k * (p.width + 8), 0))
    figure.save(ROOT / "docs" / "any_size.jpg", quality=85)


if __name__ == "__main__":
    main()
