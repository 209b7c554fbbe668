"""Build a pix2pixHD pipeline's style bank from its trained feature encoder.

    python train/encode_features.py --model runs/hd --dataset ../shared/datasets/cityscapes_samples \
        [--n_clusters 10] [--label_feat] [--output_dir runs/hd]

Encodes every training image, takes one feature per instance (instances covering at least 1/64 of
the image, as the reference), K-means them per class and saves the pipeline with the bank.
"""

import argparse
import logging

import torch
from tqdm.auto import tqdm

from p2p_models import Pix2PixHDPipeline, StyleBank
from p2p_models.style_bank import instance_features
from train.common import check_exists, readable, run_script
from train.data import LabelImageDataset, load_label_splits

logger = logging.getLogger(__name__)


@torch.no_grad()
def build_style_bank(encoder, dataset: LabelImageDataset, num_classes: int, k: int = 10, label_feat: bool = False,
                     seed: int = 0, device="cpu") -> StyleBank:
    """K-means centres of the encoder's per-instance features over `dataset`, per class."""
    samples, skipped = [], []
    was_training = encoder.training
    encoder.eval()
    for item in tqdm(readable(dataset, range(len(dataset)), skipped), total=len(dataset), desc="encoding",
                     leave=False):
        labels, instances = item["label"][None].to(device), item["instance"][None].to(device)
        regions = labels if label_feat else instances
        features = encoder(item["image"][None].to(device, encoder.dtype), regions)[0].float()
        samples += instance_features(features, regions[0, 0], labels[0, 0])
    encoder.train(was_training)
    if skipped:
        logger.warning(f"style bank: skipped {len(skipped)} unreadable example(s): " + "; ".join(skipped))
    bank = StyleBank(num_classes=num_classes, feat_num=encoder.config.feat_num, k=k)
    return bank.fit(samples, seed=seed)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a Pix2PixHDPipeline folder with an encoder")
    p.add_argument("--dataset_name", "--dataset", dest="dataset", required=True,
                   help="the training data (Hub id or local path)")
    p.add_argument("--split", default="train")
    p.add_argument("--label_column", default="label")
    p.add_argument("--image_column", default="image")
    p.add_argument("--instance_column", default="instance",
                   help="'none' (or absent from the data): the pipeline's countable classes' regions, else the "
                        "label regions")
    p.add_argument("--n_clusters", type=int, default=10)
    p.add_argument("--label_feat", action="store_true", help="one feature per label region, not per instance")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", default=None, help="default: overwrite --model")
    args = p.parse_args(argv)
    check_exists(p, "--dataset", args.dataset, hub=True)
    pipe = Pix2PixHDPipeline.from_pretrained(args.model)
    if pipe.encoder is None:
        raise ValueError(f"{args.model} has no encoder: train with --instance_feat or --label_feat")
    split = load_label_splits(args.dataset)[args.split]
    instance = args.instance_column if args.instance_column in split.column_names else None
    h, w = pipe.working_size
    dataset = LabelImageDataset(split, args.label_column, args.image_column, instance, load_size=w, train=False,
                                size_factor=1, countable=pipe.config.countable_classes)
    bank = build_style_bank(pipe.encoder, dataset, pipe.num_classes, args.n_clusters, args.label_feat, args.seed)
    pipe.register_modules(style_bank=bank)
    pipe.save_pretrained(args.output_dir or args.model)
    print(f"style bank: {int((bank.counts > 0).sum())} classes, {int(bank.counts.sum())} centres")


if __name__ == "__main__":
    run_script(main)
