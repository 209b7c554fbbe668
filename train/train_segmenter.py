"""Train the segmentation network for the FCN-score (`train/evaluate.py --segmenter`).

    # colour-coded label maps beside photos (facades: photo A left, labels B right; 12 classes)
    accelerate launch train/train_segmenter.py --dataset ../shared/datasets/facades --photo_side A \
        --num_classes 12 --output_dir runs/facades_segmenter
    # label-id maps + photos (Cityscapes-style folders or label/image columns)
    accelerate launch train/train_segmenter.py --dataset ../shared/datasets/camvid_hd --label_maps \
        --num_classes 12 --output_dir runs/camvid_segmenter

It learns on the *real* photos of the training split (the validation split held out as the pix2pix
scripts do: same `--validation_fraction` and `--seed`) and records its own accuracy on validation.
Colour-coded labels are turned into ids with a palette recovered from the training label maps.
"""

import argparse
import json
import math

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from p2p_models import UNetGenerator
from p2p_models.labels import nearest_centres
from train.common import check_exists, dataset_label, run_script
from train.data import (
    LabelImageDataset,
    PairedImageDataset,
    load_label_splits,
    load_splits,
    recover_palette,
    train_val_split,
)
from train.segmenter import Segmenter


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset_name", "--dataset", dest="dataset", required=True, help="Hub dataset id or local path")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--num_classes", type=int, required=True)
    p.add_argument("--label_maps", action="store_true", help="label-id maps + photos (else aligned colour labels)")
    p.add_argument("--photo_side", choices=["A", "B"], default="A", help="aligned data: which half is the photo")
    p.add_argument("--size", "--resolution", type=int, default=256, help="training size (width for label maps)")
    p.add_argument("--num_downs", type=int, default=8)
    p.add_argument("--ngf", type=int, default=32)
    p.add_argument("--num_train_epochs", "--num_epochs", dest="num_epochs", type=int, default=30)
    p.add_argument("--max_train_steps", type=int, default=None)
    p.add_argument("--train_batch_size", "--batch_size", dest="batch_size", type=int, default=4)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--validation_fraction", type=float, default=0.1)
    p.add_argument("--max_train_samples", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    check_exists(p, "--dataset", args.dataset, hub=True)
    return args


class ColourLabels(torch.utils.data.Dataset):
    """Aligned photo | colour-label pairs -> {"image": (3, H, W) in [-1, 1], "label": (H, W) ids}."""

    def __init__(self, pairs: PairedImageDataset, photo_side: str, palette):
        self.pairs, self.photo_side = pairs, photo_side
        self.palette = np.asarray(palette, np.float32)

    def __len__(self):
        return len(self.pairs)

    def set_epoch(self, epoch):
        self.pairs.set_epoch(epoch)

    def __getitem__(self, i):
        item = self.pairs[i]
        photo, labels = (item["A"], item["B"]) if self.photo_side == "A" else (item["B"], item["A"])
        pixels = ((labels.permute(1, 2, 0) + 1) * 127.5).reshape(-1, 3).numpy()
        ids = nearest_centres(pixels, self.palette)[0].astype(np.int64)
        return {"image": photo, "label": torch.from_numpy(ids).view(labels.shape[1:])}


def datasets_for(args):
    """(train set, validation set, palette or None), both yielding image + label ids."""
    if args.label_maps:
        splits = load_label_splits(args.dataset)
        train, val, _ = train_val_split(splits, "train", None, args.validation_fraction, args.seed)
        if args.max_train_samples:
            train = train.select(range(min(args.max_train_samples, len(train))))
        instance = None
        make = lambda split, training: LabelImageDataset(split, instance_column=instance, load_size=args.size,  # noqa: E731
                                                         train=training, seed=args.seed,
                                                         size_factor=2**args.num_downs)
        return make(train, True), make(val, False), None
    splits = load_splits(args.dataset)
    train, val, _ = train_val_split(splits, "train", None, args.validation_fraction, args.seed)
    if args.max_train_samples:
        train = train.select(range(min(args.max_train_samples, len(train))))
    plain = PairedImageDataset(train, load_size=args.size, crop_size=args.size, train=False)
    label_side = 1 if args.photo_side == "A" else 0
    maps = [plain.pair(i)[label_side] for i in range(0, len(plain), max(1, len(plain) // 100))]
    palette = recover_palette(maps, args.num_classes, sample_every=2)
    pairs = dict(load_size=int(args.size * 286 / 256), crop_size=args.size, seed=args.seed)
    return (ColourLabels(PairedImageDataset(train, train=True, **pairs), args.photo_side, palette),
            ColourLabels(PairedImageDataset(val, train=False, **pairs), args.photo_side, palette), palette)


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator()
    set_seed(args.seed)
    train_set, val_set, palette = datasets_for(args)
    model = UNetGenerator(3, args.num_classes, num_downs=args.num_downs, ngf=args.ngf, use_dropout=False,
                          output_activation="none")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(args.seed))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps = min(args.max_train_steps or math.inf, args.num_epochs * len(loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    progress = tqdm(total=steps, disable=not accelerator.is_local_main_process, desc="segmenter")
    step = 0
    while step < steps:
        train_set.set_epoch(step // len(loader))
        for batch in loader:
            loss = F.cross_entropy(model(batch["image"]), batch["label"].reshape(len(batch["image"]), *batch["image"]
                                                                                  .shape[-2:]).long())
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            schedule.step()
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
            if step >= steps:
                break
    progress.close()
    if accelerator.is_main_process:
        segmenter = Segmenter(accelerator.unwrap_model(model), {
            "num_classes": args.num_classes, "palette": palette, "size": args.size,
            "dataset": dataset_label(args.dataset), "validation_fraction": args.validation_fraction, "seed": args.seed,
            "steps": step})
        scores = segmenter.scores()
        for i in range(len(val_set)):
            item = val_set[i]
            scores.update(segmenter.predict((item["image"][None] + 1) / 2)[0], item["label"].reshape(
                item["image"].shape[-2:]))
        segmenter.info["validation"] = scores.compute()
        segmenter.save_pretrained(args.output_dir)
        print(json.dumps(segmenter.info["validation"]))


if __name__ == "__main__":
    run_script(main)
