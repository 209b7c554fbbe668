"""Measure a pipeline on a paired split: L1 / PSNR / SSIM, FID, segmentation score, diversity,
colourfulness (outputs and targets), and for rendered targets such as map tiles the per-pixel
accuracy of colour classes (`--colour_classes K`).

    python train/evaluate.py --model runs/facades --dataset ../shared/datasets/facades \
        --split validation --out metrics.json [--segmenter pretrained/facades_segmenter] [--update_model_card]

The pipeline is called as a user calls it (`output_type="pt"`, a generator per image seeded from
`--seed`). pix2pix pipelines: the split's A (or B, by the pipeline's direction) images are resized to
the working size (bicubic, as in training) and translated (as 8-bit RGB images; a pipeline with a
palette snaps these label maps to it, a colorization pipeline keeps their L); outputs are compared
with the targets at that size. pix2pixHD pipelines: label (+ instance) maps are resized
nearest-neighbour to the working width and synthesised at that size with style-bank styles.
`--split validation` uses the dataset's validation split or, where it has none, the same held-out
part of train the training script used (same `--validation_fraction` and `--seed`).
"""

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import ModelCard
from PIL import Image
from tqdm.auto import tqdm

from p2p_models import Pix2PixHDPipeline
from p2p_models.palette_classes import fit_palette, nearest_class
from p2p_models.pipelines import P2PPipeline
from p2p_models.pipelines.hub_utils import check_local_folder
from p2p_models.pipelines.model_cards import card_data, eval_results, hub_dataset_id, make_card, merge_eval_results
from train.common import check_exists, label_colors, run_script, score, to_uint8_grid
from train.data import (
    LabelImageDataset,
    PairedImageDataset,
    known_columns,
    load_label_splits,
    load_splits,
    train_val_split,
)
from train.metrics import (
    FID_MISSING,
    InceptionFeatures,
    colourfulness,
    frechet_distance,
)
from train.segmenter import Segmenter
from train.train_pix2pix import translate


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="pipeline folder or Hub id")
    p.add_argument("--dataset_name", "--dataset", dest="dataset", required=True,
                   help="Hub dataset id (known ids need no column flags) or local path, as for training")
    p.add_argument("--split", default="validation")
    p.add_argument("--validation_fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image_column", default=None)
    p.add_argument("--image_column_a", default=None)
    p.add_argument("--image_column_b", default=None)
    p.add_argument("--label_column", default="label")
    p.add_argument("--instance_column", default="instance")
    p.add_argument("--max_samples", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--no_fid", action="store_true")
    p.add_argument("--segmenter", default=None, help="a train_segmenter.py folder: adds the FCN-score")
    p.add_argument("--colour_classes", type=int, default=0,
                   help="K > 0: cluster the targets' colours into K classes (map tiles: background, roads, water, "
                        "parks) and report the per-pixel accuracy and per-class IoU of outputs vs targets")
    p.add_argument("--input_baseline", action="store_true",
                   help="pix2pix: also score the inputs as if they were the outputs (what adding nothing scores: "
                        "the grey photo for colorization, the aerial photo for aerial -> map)")
    p.add_argument("--diversity_seeds", type=int, default=3, help="seeds per input for diversity (0 = skip)")
    p.add_argument("--num_grid", type=int, default=4,
                   help="rows of the input | output | target grid saved beside --out (0: no grid)")
    p.add_argument("--out", default="metrics.json")
    p.add_argument("--update_model_card", action="store_true", help="write the numbers into the model's README.md")
    p.add_argument("--card_dataset_id", default=None,
                   help="the Hub id the card names local data by (e.g. huggan/maps for a local copy of it); default: "
                        "--dataset if it is a Hub id, else its folder name")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    try:
        check_local_folder(args.model)
    except FileNotFoundError as e:
        p.error(f"--model {e}")
    check_exists(p, "--dataset", args.dataset, hub=True)
    if args.num_grid < 0:
        p.error(f"--num_grid {args.num_grid}: rows of the grid, 0 or more")
    if args.segmenter and not (Path(args.segmenter) / "segmenter.json").is_file():
        p.error(f"--segmenter {args.segmenter}: no segmenter.json there (a train/train_segmenter.py folder, such "
                "as pretrained/facades_segmenter or pretrained/camvid_segmenter)")
    return args


def split_of(args, splits):
    if args.split in ("validation", "val"):
        return train_val_split(splits, "train" if "train" in splits else list(splits)[0], None,
                               args.validation_fraction, args.seed)[1]
    if args.split not in splits:
        raise ValueError(f"split {args.split!r} not found; the dataset has {sorted(splits)}")
    return splits[args.split]


class Batches:
    """Yields (condition for the grid/segmenter, fake RGB, real RGB, labels or None) in [0, 1]."""

    def __init__(self, pipe, dataset, args):
        self.pipe, self.dataset, self.args = pipe, dataset, args
        self.hd = isinstance(pipe, Pix2PixHDPipeline)

    def __len__(self):
        n = len(self.dataset)
        return n if self.args.max_samples is None else min(n, self.args.max_samples)

    def generate(self, items, seed):
        """The pipeline's outputs for `items`, RGB (B, 3, H, W) in [0, 1], image i drawing from a
        generator seeded with seed + i (pix2pix: its dropout noise; pix2pixHD: its style-bank styles)."""
        if not self.hd:
            return translate(self.pipe, self.dataset, torch.stack([it["A"] for it in items]), seed)
        generators = [torch.Generator().manual_seed(seed + i) for i in range(len(items))]
        return self.pipe([it["label"] for it in items], instance_map=[it["instance"] for it in items],
                         generator=generators, size_mode="native", output_type="pt").images

    def __iter__(self):
        n, size = len(self), self.args.batch_size
        for start in range(0, n, size):
            items = [self.dataset[i] for i in range(start, min(start + size, n))]
            if self.hd:
                real = torch.stack([(it["image"] + 1) / 2 for it in items])
                condition = [it["label"] for it in items]
            else:
                a = torch.stack([it["A"] for it in items])
                real = self.dataset.to_rgb(a, torch.stack([it["B"] for it in items]))
                condition = self.dataset.to_rgb(a)
            yield items, condition, real


def main(argv=None):
    args = parse_args(argv)
    fid = None
    if not args.no_fid:
        try:
            fid = InceptionFeatures(args.device)
        except ImportError:
            raise SystemExit(FID_MISSING)
    pipe = P2PPipeline.from_pretrained(args.model).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    hd = isinstance(pipe, Pix2PixHDPipeline)
    h, w = pipe.working_size
    if hd:
        split = split_of(args, load_label_splits(args.dataset))
        instance = args.instance_column if args.instance_column in split.column_names else None
        dataset = LabelImageDataset(split, args.label_column, args.image_column or "image", instance, load_size=w,
                                    train=False, size_factor=1, countable=pipe.config.countable_classes)
    else:
        split = split_of(args, load_splits(args.dataset))
        if not (args.image_column or args.image_column_a or args.image_column_b):
            vars(args).update(known_columns(args.dataset))
        layout = "paired" if args.image_column_a else "colorization" if pipe.config.color_space == "lab" else "aligned"
        dataset = PairedImageDataset(split, layout, args.image_column, args.image_column_a, args.image_column_b,
                                     direction=pipe.config.direction, load_size=h, crop_size=h, train=False)
    segmenter = Segmenter.from_pretrained(args.segmenter, args.device) if args.segmenter else None
    batches = Batches(pipe, dataset, args)
    classes = pipe.num_classes if hd else 0
    palette = np.asarray(pipe.config.palette or np.random.default_rng(0).integers(0, 256, (max(classes, 1), 3)),
                         np.uint8) if hd else None

    if args.input_baseline and hd:
        raise SystemExit("evaluate.py: --input_baseline scores pix2pix inputs (images); pix2pixHD's are label maps")
    scores, fake_feats, real_feats, grid_rows, diversity = {}, [], [], [], []
    colourful, pairs_u8 = {"generated": [], "real": []}, []
    baseline_scores, baseline_feats, baseline_colourful = {}, [], []
    seg_fake = seg_real = None
    if segmenter is not None:
        seg_fake, seg_real = segmenter.scores(), segmenter.scores()
    stochastic = not hd and pipe.generator.config.use_dropout and args.diversity_seeds > 1
    progress = tqdm(total=len(batches), desc="evaluating")
    for start, (items, condition, real) in zip(range(0, len(batches), args.batch_size), batches):
        fake = batches.generate(items, seed=args.seed + start)
        score(fake, real, scores)
        colourful["generated"] += colourfulness(fake).tolist()
        colourful["real"] += colourfulness(real).tolist()
        if args.input_baseline:
            score(condition, real, baseline_scores)
            baseline_colourful += colourfulness(condition).tolist()
            if fid is not None:
                baseline_feats.append(fid(condition))
        if args.colour_classes:
            pairs_u8.append(((fake * 255).round().byte(), (real * 255).round().byte()))
        if fid is not None:
            fake_feats.append(fid(fake))
            real_feats.append(fid(real))
        if segmenter is not None:
            labels = torch.stack(condition) if hd else segmenter.labels_of(condition)
            seg_fake.update(segmenter.predict(fake), labels.reshape(len(fake), *fake.shape[-2:]))
            seg_real.update(segmenter.predict(real), labels.reshape(len(fake), *fake.shape[-2:]))
        if stochastic:
            others = [batches.generate(items, seed=args.seed + start + 1000 * k)
                      for k in range(1, args.diversity_seeds)]
            outputs = [fake] + others
            pairs = [(i, j) for i in range(len(outputs)) for j in range(i + 1, len(outputs))]
            diversity += [float((outputs[i] - outputs[j]).abs().flatten(1).mean(1).mean()) for i, j in pairs]
        for k in range(len(items)):
            if len(grid_rows) < args.num_grid:
                shown = label_colors(condition[k][None], palette) if hd else condition[k:k + 1]
                grid_rows.append([shown, fake[k:k + 1], real[k:k + 1]])
        progress.update(len(items))
    progress.close()

    metrics = {k: float(np.mean(v)) for k, v in scores.items()}
    metrics["num_samples"] = len(batches)
    if fid is not None and len(batches) < 2:
        print(f"evaluate.py: FID left out: it needs at least 2 images, the split has {len(batches)}", file=sys.stderr)
    elif fid is not None:
        metrics["fid"] = frechet_distance(torch.cat(fake_feats), torch.cat(real_feats))
    if segmenter is not None:
        metrics["segmentation"] = {"generated": seg_fake.compute(), "real": seg_real.compute()}
    if stochastic:
        metrics["diversity_l1"] = float(np.mean(diversity))
    metrics["colourfulness"] = {k: float(np.mean(v)) for k, v in colourful.items()}
    if args.input_baseline:
        baseline = {k: float(np.mean(v)) for k, v in baseline_scores.items()}
        if "fid" in metrics:
            baseline["fid"] = frechet_distance(torch.cat(baseline_feats), torch.cat(real_feats))
        baseline["colourfulness"] = float(np.mean(baseline_colourful))
        metrics["input_baseline"] = baseline
    if args.colour_classes:
        metrics["colour_classes"] = colour_class_scores(pairs_u8, args.colour_classes, args.seed)
    result = {"model": args.model, "dataset": args.dataset, "split": args.split,
              "direction": None if hd else pipe.config.direction, "working_size": [h, w], "metrics": metrics}
    if args.card_dataset_id:
        result["card_dataset_id"] = args.card_dataset_id
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    if grid_rows:
        Image.fromarray(to_uint8_grid(grid_rows)).save(Path(args.out).with_suffix(".png"))
    print(json.dumps(result, indent=2))
    if args.update_model_card:
        update_model_card(Path(args.model) / "README.md", result)


def colour_class_scores(pairs: list[tuple[torch.Tensor, torch.Tensor]], k: int, seed: int) -> dict:
    """Per-pixel accuracy, per-class accuracy (the share of a class's target pixels rendered in its
    colour) and per-class IoU of outputs vs targets, both mapped to the nearest of k colours
    clustered from the targets."""
    fake = torch.cat([f for f, _ in pairs]).float() / 255
    real = torch.cat([r for _, r in pairs]).float() / 255
    centres = fit_palette(real, k, samples=20000, seed=seed)
    predicted, target = nearest_class(fake, centres), nearest_class(real, centres)
    iou = {}
    for c in range(len(centres)):
        union = ((predicted == c) | (target == c)).sum()
        name = "rgb(" + ",".join(str(int(v)) for v in (centres[c] * 255).round()) + ")"
        hits, size = ((predicted == c) & (target == c)).sum(), (target == c).sum()
        iou[name] = {"iou": float(hits / union) if union else float("nan"),
                     "accuracy": float(hits / size) if size else float("nan"),
                     "share_of_target": float((target == c).float().mean())}
    return {"pixel_accuracy": float((predicted == target).float().mean()),
            "class_accuracy": float(np.nanmean([v["accuracy"] for v in iou.values()])),
            "mean_iou": float(np.nanmean([v["iou"] for v in iou.values()])), "classes": iou}


def update_model_card(path: Path, result: dict) -> None:
    """Put the metrics in the card's `model-index` metadata (what the Hub displays; earlier scores of
    the same metrics on the same data and split are replaced) and an Evaluation table (replacing the
    previous one); the rest of the card, sections after the table included, is kept."""
    card = ModelCard.load(path) if path.exists() else make_card(card_data([]), "")
    m = result["metrics"]
    values = [("l1", "L1", m["l1"]), ("psnr", "PSNR", m["psnr"]), ("ssim", "SSIM", m["ssim"])]
    if "fid" in m:
        values.append(("fid", "FID", m["fid"]))
    if "segmentation" in m:
        g = m["segmentation"]["generated"]
        values += [("pixel_accuracy", "FCN-score pixel accuracy", g["pixel_accuracy"]),
                   ("class_accuracy", "FCN-score class accuracy", g["class_accuracy"]),
                   ("mean_iou", "FCN-score mean IoU", g["mean_iou"])]
    if "diversity_l1" in m:
        values.append(("diversity_l1", "diversity (mean pairwise L1)", m["diversity_l1"]))
    if "colour_classes" in m:
        values += [("map_colour_accuracy", "map-colour pixel accuracy", m["colour_classes"]["pixel_accuracy"]),
                   ("map_colour_class_accuracy", "map-colour class accuracy", m["colour_classes"]["class_accuracy"]),
                   ("map_colour_mean_iou", "map-colour mean IoU", m["colour_classes"]["mean_iou"])]
    if "colourfulness" in m:
        values += [("colourfulness", "colourfulness of outputs (Hasler-Suesstrunk)", m["colourfulness"]["generated"]),
                   ("colourfulness_real", "colourfulness of targets", m["colourfulness"]["real"])]
    dataset = result.get("card_dataset_id") or hub_dataset_id(result["dataset"]) or Path(result["dataset"]).name
    card.data.eval_results = merge_eval_results(card.data.eval_results,
                                                eval_results(values, dataset, result["split"]))
    card.data.model_name = card.data.model_name or Path(result["model"]).name
    marker = "\n## Evaluation\n"
    body, _, after = card.text.partition(marker)
    after = re.sub(r"^\n`train/evaluate\.py` on [^\n]*\n\n(\|[^\n]*\n?)*", "", after).lstrip("\n")  # less the old table
    table = ["| metric | value |", "|---|---:|"] + [f"| {n} | {v:.4f} |" for _, n, v in values]
    card.text = (f"{body.rstrip()}\n{marker}\n`train/evaluate.py` on `{dataset}` ({result['split']}, {m['num_samples']} "
                 f"examples, {result['working_size'][1]}x{result['working_size'][0]}):\n\n" + "\n".join(table) + "\n"
                 + (f"\n{after}" if after.strip() else ""))
    card.save(path)

if __name__ == "__main__":
    run_script(main)
