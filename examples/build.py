"""Rebuild the app's example inputs from `../shared/datasets` (held-out images only):

    python examples/build.py

colorization/: BSDS500 val photos (max side 400). maps/: aerial and map halves of held-out maps
pairs. facades/: held-out label maps snapped to the facade palette (PNG). hd/: CamVid val label maps
in the CamVid palette, and Cityscapes samples mapped to CamVid classes with their instance maps
(16-bit PNG), centre-cropped to the CamVid model's 4:3 aspect and scaled to its 512x384 working size.
"""

import json
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from p2p_models import camvid
from p2p_models.labels import colors_to_ids
from train.data import load_splits, train_val_split

ROOT = Path(__file__).resolve().parents[1]

SHARED = ROOT.parent / "shared" / "datasets"
OUT = ROOT / "examples"
HD_SIZE = (512, 384)  # the CamVid model's working size (width, height)


def held_out(folder: str, count: int) -> list[str]:
    """Paths of the first `count` examples of the training scripts' seeded 10% validation split."""
    _, val, _ = train_val_split(load_splits(str(SHARED / folder)), "train", None, 0.1, 0)
    return [row["image"]["path"] for row in val.cast_column("image", datasets.Image(decode=False))][:count]


def colour(ids: np.ndarray, palette) -> Image.Image:
    return Image.fromarray(np.asarray(palette, dtype=np.uint8)[ids])


def main():
    for sub in ("colorization", "maps", "facades", "hd"):
        (OUT / sub).mkdir(parents=True, exist_ok=True)
    for name in ("101085.jpg", "103070.jpg", "105025.jpg"):
        photo = Image.open(SHARED / "photos" / "bsds500_val" / name).convert("RGB")
        photo.thumbnail((400, 400), Image.BICUBIC)
        photo.save(OUT / "colorization" / name, quality=92)
    for path in held_out("maps", 2):
        pair = Image.open(path).convert("RGB")
        half = pair.width // 2
        pair.crop((0, 0, half, pair.height)).save(OUT / "maps" / f"aerial_{Path(path).stem}.jpg", quality=92)
        pair.crop((half, 0, pair.width, pair.height)).save(OUT / "maps" / f"map_{Path(path).stem}.png")
    palette = json.loads((ROOT / "pretrained" / "facades" / "model_index.json").read_text())["palette"]
    for path in held_out("facades", 3):
        pair = Image.open(path).convert("RGB")
        label = pair.crop((pair.width // 2, 0, pair.width, pair.height))
        colour(colors_to_ids(label, palette), palette).save(OUT / "facades" / f"{Path(path).stem}.png")
    for name in ("0016E5_07997.png", "0016E5_08117.png"):
        ids = np.asarray(Image.open(SHARED / "camvid" / "valannot" / name)).astype(np.int64)
        colour(ids, camvid.COLORS).save(OUT / "hd" / f"camvid_{Path(name).stem}.png")
    city = SHARED / "cityscapes_samples"
    for label_path in sorted((city / "test_label").glob("*.png"))[:2]:
        inst_path = city / "test_inst" / label_path.name.replace("labelIds", "instanceIds")
        labels, instances = camvid.from_cityscapes(np.asarray(Image.open(label_path)).astype(np.int64),
                                                   np.asarray(Image.open(inst_path)).astype(np.int64))
        width = labels.shape[0] * HD_SIZE[0] // HD_SIZE[1]  # centre crop to the working aspect
        left = (labels.shape[1] - width) // 2
        labels, instances = labels[:, left:left + width], instances[:, left:left + width]
        stem = label_path.name.split("_gtFine")[0]
        colour(labels, camvid.COLORS).resize(HD_SIZE, Image.NEAREST).save(OUT / "hd" / f"cityscapes_{stem}.png")
        Image.fromarray(instances.astype(np.uint16)).resize(HD_SIZE, Image.NEAREST).save(
            OUT / "hd" / f"cityscapes_{stem}_instances.png")


if __name__ == "__main__":
    main()
