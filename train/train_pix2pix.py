"""Train pix2pix (U-Net generator + PatchGAN, cGAN + lambda * L1) with accelerate.

    accelerate launch train/train_pix2pix.py --dataset ../shared/datasets/facades --direction BtoA \
        --output_dir runs/facades --num_epochs 100 --num_epochs_decay 100

The output directory ends up a `Pix2PixPipeline` folder (model_index.json, generator/, a model card)
plus `discriminator/` (and `projected_discriminator/`), `checkpoint-N/` folders, validation grids in
`samples/` and `validation_metrics.json`. `--resume_from_checkpoint latest` continues a stopped run.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed

from p2p_models import (
    GANLoss,
    PatchDiscriminator,
    Pix2PixPipeline,
    UNetGenerator,
    discriminator_loss,
    pix2pix_generator_loss,
)
from p2p_models.ab_classes import ab_cross_entropy
from p2p_models.palette_classes import class_weights, fit_palette, palette_cross_entropy
from p2p_models.perceptual import EfficientNetPerceptualLoss
from p2p_models.pipelines.model_cards import PIX2PIX_TAGS, make_card, public_path, usage
from p2p_models.projected import ProjectedDiscriminator
from p2p_models.rebalancing import ColorRebalancing
from train.common import (
    RealFakeDiscriminator,
    add_common_args,
    add_flip_args,
    add_imagenet_args,
    autocast_in_steps_only,
    card_metadata,
    check_common_args,
    check_exists,
    check_imagenet_args,
    command_line,
    dataset_label,
    decoded_once,
    diffaugment,
    generator_folder,
    imagenet_setup,
    linear_decay,
    load_pretrained_weights,
    make_accelerator,
    removed_if_left_empty,
    run_script,
    mean_scores,
    public_config,
    readable,
    scaled_learning_rate,
    score,
    skip_bad_examples,
    speed_setup,
    to_uint8_grid,
    train_loader,
    validation_section,
    wall_time,
    warn_skipped,
)
from train.data import PairedImageDataset, known_columns, load_splits, recover_palette, train_val_split
from train.loop import GANTrainer, train_loop


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    g = p.add_argument_group("pairs")
    g.add_argument("--image_column", default=None, help="the A|B (aligned) or colour-photo (colorization) column")
    g.add_argument("--image_column_a", default=None, help="A column of a two-column paired dataset")
    g.add_argument("--image_column_b", default=None, help="B column of a two-column paired dataset")
    g.add_argument("--colorization", action="store_true", help="A = L, B = ab of colour photos (Lab)")
    g.add_argument("--direction", choices=["AtoB", "BtoA"], default="AtoB")
    g.add_argument("--load_size", type=int, default=286, help="resize to this square size before cropping")
    g.add_argument("--max_load_size", type=int, default=None,
                   help="multi-scale: resize the short side to a random size in [load_size, max_load_size], "
                        "aspect kept, before cropping (for photos of any shape, e.g. colorization)")
    g.add_argument("--crop_size", "--resolution", type=int, default=256,
                   help="random crop size = the model's working size, unless --image_size says otherwise")
    g.add_argument("--image_size", type=int, default=None,
                   help="the pipeline's working size (validation, the saved pipeline); default --crop_size. Larger "
                        "trains on patches at the working scale, e.g. --load_size 256 --crop_size 128 "
                        "--image_size 256: a quarter of the pixels per step, whole images at test")
    add_flip_args(g)
    labels = g.add_mutually_exclusive_group()
    labels.add_argument("--label_colors", type=int, default=None, metavar="N",
                        help="the inputs are colour-coded label maps of N classes (facades: 12): their colours are "
                             "recovered from the training inputs and saved as the pipeline's palette, which then "
                             "snaps every input to them")
    labels.add_argument("--label_info", default=None,
                        help='the same with the classes given: JSON {"names": [...], "colors": [[r, g, b], ...]}')

    g = p.add_argument_group("model")
    g.add_argument("--num_downs", type=int, default=8, help="U-Net levels: 8 = unet_256, 7 = unet_128")
    g.add_argument("--ngf", type=int, default=64)
    g.add_argument("--ndf", type=int, default=64)
    g.add_argument("--n_layers_d", type=int, default=3, help="PatchGAN layers: 3 = 70x70, 1 = 16x16, 5 = 286x286")
    g.add_argument("--pixel_d", action="store_true", help="1x1 PixelGAN discriminator")
    g.add_argument("--norm", choices=["batch", "instance", "none"], default="batch")
    g.add_argument("--no_dropout", action="store_true")
    g.add_argument("--load_pretrain", default=None, metavar="PIPELINE",
                   help="start the generator from a trained pix2pix pipeline folder (fine-tuning), and D too where "
                        "the folder is a training run's output (it keeps D; a shipped pipeline doesn't: D starts anew)")
    g.add_argument("--gan_mode", choices=["vanilla", "lsgan", "hinge"], default="vanilla")
    g.add_argument("--lambda_l1", type=float, default=100.0)
    g.add_argument("--color_rebalance", type=float, default=0.0, metavar="LAMBDA",
                   help="colorization: weight the ab L1 per pixel by the rarity of its true colour (Zhang et al. "
                        "2016's class rebalancing; their lambda is 0.5), against sepia-averaged colours; 0 = off")
    g.add_argument("--color_classification", type=float, default=0.0, metavar="WEIGHT",
                   help="colorization as classification (Zhang et al. 2016): the generator predicts a distribution "
                        "over ab bins, decoded by its annealed mean, and is trained with WEIGHT times its "
                        "cross-entropy (rebalanced by --color_rebalance) beside the L1 and GAN terms on the decoded "
                        "colours (--lambda_l1 0 drops the L1); 0 = off (regression, the paper's)")
    g.add_argument("--palette_classes", type=int, default=0, metavar="K",
                   help="rendered targets (map tiles) as classification: the generator predicts a distribution over "
                        "K colours clustered from the training targets, decoded by its annealed mean, and is trained "
                        "with --palette_ce times its cross-entropy beside the L1 and GAN terms on the decoded image "
                        "(--lambda_l1 0 drops the L1); 0 = off (regression, the paper's)")
    g.add_argument("--palette_ce", type=float, default=1.0, metavar="WEIGHT",
                   help="with --palette_classes: the cross-entropy's weight")
    g.add_argument("--palette_rebalance", type=float, default=1.0, metavar="LAMBDA",
                   help="with --palette_classes: weight each class by ((1 - LAMBDA) * its frequency + LAMBDA / K)^-1, "
                        "against rare classes (highways) drawn as the common one; 1 (default) = all alike")
    g.add_argument("--no_gan", action="store_true", help="L1 only: no discriminator (the paper's L1 baseline)")
    g = p.add_argument_group("ImageNet features and augmentation")
    add_imagenet_args(g)
    g.add_argument("--pretrained_encoder", action="store_true",
                   help="the U-Net's first five levels are the ImageNet EfficientNet-Lite0 (fine-tuned; 1- or "
                        "3-channel inputs: photos, colorization's L), the rest ours")
    args = p.parse_args(argv)
    check_common_args(p, args)
    check_imagenet_args(p, args)
    if not (args.image_column or args.image_column_a or args.image_column_b or args.colorization):
        vars(args).update(known_columns(args.dataset))
    if bool(args.image_column_a) != bool(args.image_column_b):
        p.error("--image_column_a and --image_column_b go together")
    if args.colorization and args.image_column_a:
        p.error("--colorization takes one --image_column, not --image_column_a/b")
    if args.no_gan and (args.diffaugment or args.discriminator != "patch"):
        p.error("--diffaugment and --discriminator act on the discriminator, which --no_gan leaves out")
    check_exists(p, "--label_info", args.label_info)
    check_exists(p, "--load_pretrain", args.load_pretrain)
    if args.color_rebalance and not args.colorization:
        p.error("--color_rebalance weights colorization's ab loss; it needs --colorization")
    if args.color_classification and not args.colorization:
        p.error("--color_classification predicts colorization's ab; it needs --colorization")
    if args.color_classification < 0:
        p.error(f"--color_classification {args.color_classification}: the cross-entropy's weight, 0 or more")
    if args.palette_classes and args.colorization:
        p.error("--palette_classes predicts rendered colour targets; colorization has --color_classification")
    if args.palette_classes == 1 or not 0 <= args.palette_classes <= 256:
        p.error(f"--palette_classes {args.palette_classes}: the number of target colours, from 2 to 256 (0 = off)")
    if args.palette_ce < 0:
        p.error(f"--palette_ce {args.palette_ce}: the cross-entropy's weight, 0 or more")
    if not 0 <= args.palette_rebalance <= 1:
        p.error(f"--palette_rebalance {args.palette_rebalance}: the uniform share of the class weights, from 0 to 1")
    if not 0 <= args.color_rebalance <= 1:
        p.error(f"--color_rebalance {args.color_rebalance}: the uniform share of the prior, from 0 to 1")
    if (args.label_colors or args.label_info) and args.colorization:
        p.error("--label_colors / --label_info describe colour-coded label-map inputs; --colorization's are photos")
    if args.label_colors is not None and not 2 <= args.label_colors <= 256:
        p.error(f"--label_colors {args.label_colors}: the number of label classes, from 2 to 256")
    args.image_size = args.image_size or args.crop_size
    if args.image_size < args.crop_size:
        p.error(f"--image_size {args.image_size} is smaller than --crop_size {args.crop_size}: the pipeline would "
                "work on images smaller than the patches it was trained on")
    return args


def label_palette(args, train_set: PairedImageDataset) -> tuple[list | None, dict | None]:
    """The palette (and class names) of colour-coded label-map inputs, which the saved pipeline snaps
    its inputs to: --label_info's, or --label_colors N recovered from up to 100 training inputs
    (`data.recover_palette`); (None, None) for other inputs."""
    if args.label_info:
        info = json.loads(Path(args.label_info).read_text())
        colors, names = info.get("colors"), info.get("names")
        if not isinstance(colors, list) or not all(
                isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v < 256 for v in c)
                for c in colors):
            raise ValueError(f"--label_info {args.label_info}: \"colors\" must be a list of [r, g, b] (0-255)")
        if names is not None and len(names) != len(colors):
            raise ValueError(f"--label_info {args.label_info}: {len(names)} names for {len(colors)} colors")
        return colors, {str(i): name for i, name in enumerate(names)} if names else None
    if args.label_colors:
        step = max(1, len(train_set) // 100)
        inputs = [train_set.pair(i)[0] for i in range(0, len(train_set), step)]
        return recover_palette(inputs, args.label_colors, sample_every=2), None
    return None, None


def color_rebalancing(dataset: PairedImageDataset, mix: float, samples: int = 500) -> ColorRebalancing:
    """The class rebalancing of `dataset`'s ab targets: the prior from up to `samples` training
    examples spread over the set (epoch 0's crops, the same on every process), at 1/4 resolution."""
    step = max(1, len(dataset) // samples)
    ab = torch.stack([F.avg_pool2d(dataset[i]["B"], 4) for i in range(0, len(dataset), step)])
    return ColorRebalancing.from_ab(ab, mix=mix)


def target_palette(dataset: PairedImageDataset, k: int, mix: float, known: list | None = None, samples: int = 200
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`--palette_classes`' K colours (K, C) of `dataset`'s targets and their class weights (K,):
    k-means of the pixels of up to `samples` training targets spread over the set (epoch 0's crops,
    the same on every process), every 4th row and column (no blending: the colours stay pure); or the
    `known` palette (fine-tuning keeps the loaded generator's)."""
    step = max(1, len(dataset) // samples)
    targets = torch.stack([dataset[i]["B"][:, ::4, ::4] for i in range(0, len(dataset), step)])
    palette = fit_palette(targets, k) if known is None else torch.tensor(known, dtype=torch.float32)
    return palette, class_weights(targets, palette, mix)


def translate(pipe: Pix2PixPipeline, dataset: PairedImageDataset, a: torch.Tensor, seed: int) -> torch.Tensor:
    """The pipeline's sampled outputs (dropout on, per-image BatchNorm statistics) for a batch of
    model-space inputs `a` (B, C, H, W): the inputs as RGB images (`dataset.to_rgb`), image i drawing
    from a generator seeded with seed + i -> (B, C_out, H, W) RGB in [0, 1] on the CPU."""
    generators = [torch.Generator(pipe.device).manual_seed(seed + i) for i in range(len(a))]
    return pipe(dataset.to_rgb(a), generator=generators, output_type="pt").images


def validation_grid(pipe: Pix2PixPipeline, dataset: PairedImageDataset, n: int, step: int) -> np.ndarray | None:
    """input | output | target rows for the first `n` validation examples, unreadable ones left out:
    (H, W, 3) uint8, or None if none could be read."""
    skipped = []
    items = list(readable(dataset, range(min(n, len(dataset))), skipped))
    warn_skipped(skipped, step)
    if not items:
        return None
    a = torch.stack([it["A"] for it in items])
    b = torch.stack([it["B"] for it in items])
    fake = translate(pipe, dataset, a, seed=0)
    return to_uint8_grid([[dataset.to_rgb(a[i:i + 1]), fake[i:i + 1], dataset.to_rgb(a[i:i + 1], b[i:i + 1])]
                          for i in range(len(items))])


def validation_metrics(pipe: Pix2PixPipeline, dataset: PairedImageDataset, limit: int | None, step: int) -> dict:
    """Mean L1 / PSNR / SSIM of the pipeline's sampled outputs vs targets, in RGB [0, 1] at the
    working size, over the readable examples among the first `limit`."""
    scores, skipped = {}, []
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, n, 8):
        items = list(readable(dataset, range(start, min(start + 8, n)), skipped))
        if not items:
            continue
        a = torch.stack([it["A"] for it in items])
        b = torch.stack([it["B"] for it in items])
        score(translate(pipe, dataset, a, seed=start), dataset.to_rgb(a, b), scores)
    warn_skipped(skipped, step)
    return mean_scores(scores, skipped)


def model_card(args, dataset_desc, val_desc, pipe, discriminators, steps, epochs, seconds, num_processes, metrics):
    g = dict(pipe.generator.config)
    d = ", ".join(f"`{type(m).__name__}` {json.dumps(public_config(m.config))}" for m in discriminators.values())
    objective = "L1 only (no discriminator)" if args.no_gan else f"cGAN ({args.gan_mode}) + {args.lambda_l1:g} * L1"
    if args.color_classification:
        objective += (f" + {args.color_classification:g} * the cross-entropy over ab bins (colorization as "
                      "classification, Zhang et al. 2016)")
    if args.palette_classes:
        objective += (f" + {args.palette_ce:g} * the cross-entropy over the targets' {args.palette_classes} colours "
                      "(rendered targets as classification)")
        if args.palette_rebalance < 1:
            objective += f", class-rebalanced (lambda {args.palette_rebalance:g})"
    if args.color_rebalance:
        terms = "the L1 and the cross-entropy" if args.color_classification else "the L1"
        objective += f", {terms} class-rebalanced (Zhang et al. 2016, lambda {args.color_rebalance:g})"
    resize = (f"resize to {args.load_size}" if args.max_load_size is None else
              f"resize the short side to a random size in [{args.load_size}, {args.max_load_size}] (aspect kept)")
    repo = args.hub_model_id or public_path(args.output_dir)
    lines = [
        f"# pix2pix: {Path(args.output_dir).name}", "",
        "A pix2pix pipeline (Isola et al., CVPR 2017) trained with p2p's `train/train_pix2pix.py`.", "",
        usage("Pix2PixPipeline", repo,
              'pipe(Image.open("input.png"), generator=torch.Generator().manual_seed(0)).images[0]'), "",
        "## Training", "",
        f"- Data: `{dataset_label(args.dataset)}` ({dataset_desc}), direction {args.direction}.",
        *([f"- Inputs: colour-coded label maps of {len(pipe.config.palette)} classes, palette "
           f"{'from ' + public_path(args.label_info) if args.label_info else 'recovered from the training inputs'} "
           "(the pipeline snaps every input to it)."] if pipe.config.palette else []),
        f"- Validation: {val_desc}.",
        f"- Objective: {objective}; Adam lr {args.learning_rate:g}, betas ({args.adam_beta1}, {args.adam_beta2}); "
        f"{args.num_epochs} epochs constant + {args.num_epochs_decay} linear decay "
        f"(ran {steps} steps = {epochs:.2f} epochs).",
        f"- Augmentation: {resize}, random crop {args.crop_size}"
        f"{'' if args.image_size == args.crop_size else f' (patches; the pipeline works at {args.image_size})'}"
        f"{'' if args.no_flip else ', random horizontal flip'}; batch size {args.train_batch_size} x "
        f"{num_processes} process(es); seed {args.seed}.",
        f"- Generator: `UNetGenerator` {json.dumps(public_config(g))}.",
        f"- Discriminator: {d or 'none'}.",
        imagenet_setup(args),
        f"- Wall time: {wall_time(seconds, metrics)}.",
        speed_setup(args, num_processes),
        f"- Command: `{command_line('train/train_pix2pix.py')}`", "",
        *validation_section(metrics, "Sampled outputs (dropout on, seed per image)",
                            f"at {args.image_size}x{args.image_size}, RGB in [0, 1]"),
    ]
    return str(make_card(card_metadata(args, PIX2PIX_TAGS, metrics), "\n".join(lines)))


def logit_maps(outputs: dict) -> torch.Tensor | list[torch.Tensor]:
    """The PatchGAN's logits alone (the reference's loss, unchanged), or with / instead of them the
    projected discriminator's per-scale logits, as one list."""
    if "projected" not in outputs:
        return outputs["patch"]
    return ([outputs["patch"]] if "patch" in outputs else []) + outputs["projected"]


class Pix2PixTrainer(GANTrainer):
    """pix2pix's half of the training loop: the reference's D step (real and detached fake pairs)
    then G step (cGAN through the updated D + lambda * L1), or L1 alone with --no_gan."""

    title = "pix2pix"

    def __init__(self, accelerator, args):
        self.accelerator, self.args = accelerator, args
        # Data
        self.layout = "paired" if args.image_column_a else "colorization" if args.colorization else "aligned"
        with accelerator.main_process_first():
            splits = load_splits(args.dataset, cache_dir=args.cache_dir)
        train_hf, val_hf, self.val_desc = train_val_split(
            splits, args.train_split, args.validation_split, args.validation_fraction, args.seed
        )
        if args.max_train_samples:
            train_hf = train_hf.select(range(min(args.max_train_samples, len(train_hf))))
        common = dict(layout=self.layout, image_column=args.image_column, image_column_a=args.image_column_a,
                      image_column_b=args.image_column_b, direction=args.direction, load_size=args.load_size,
                      crop_size=args.crop_size, flip=not args.no_flip, seed=args.seed)
        self.train_set = PairedImageDataset(train_hf, train=True, max_load_size=args.max_load_size, **common)
        self.val_set = PairedImageDataset(val_hf, train=False, **{**common, "crop_size": args.image_size,
                                                                 "load_size": max(args.load_size, args.image_size)})
        if args.skip_bad_images:
            skip_bad_examples(args, training=self.train_set, validation=self.val_set)
        decoded_once(accelerator, args, self.train_set, self.val_set)
        self.dataset_desc = f"{len(self.train_set)} training examples, layout {self.layout}"
        self.palette, self.id2label = label_palette(args, self.train_set)
        loader = train_loader(self.train_set, args)

        # Models, losses, optimisers
        in_ch, out_ch = self.train_set.channels
        trained = UNetGenerator.from_pretrained(generator_folder(Path(args.load_pretrain))) \
            if args.load_pretrain else None
        self.palette_weights = None
        output = {"output_activation": "ab_classes"} if args.color_classification else {}
        if args.palette_classes:
            known = trained.config.output_palette if trained is not None else None
            colours, self.palette_weights = target_palette(self.train_set, args.palette_classes,
                                                           args.palette_rebalance, known)
            output = {"output_activation": "palette",
                      "output_palette": [[round(v, 4) for v in colour] for colour in colours.tolist()]}
        generator = UNetGenerator(in_ch, out_ch, num_downs=args.num_downs, ngf=args.ngf, norm=args.norm,
                                  use_dropout=not args.no_dropout,
                                  encoder="efficientnet-lite0" if args.pretrained_encoder else "unet",
                                  sample_with_batch_statistics=args.train_batch_size == 1, **output)
        if trained is not None:
            load_pretrained_weights(generator, trained, Path(args.load_pretrain))
        elif args.pretrained_encoder:
            generator.load_imagenet_encoder()
        generator.to(memory_format=args.memory_format)
        self.ema_modules = [generator]
        size_factor = 2**args.num_downs
        for name in ("crop_size", "image_size"):
            if getattr(args, name) % size_factor:
                raise ValueError(f"--{name} {getattr(args, name)} must be divisible by 2**num_downs = {size_factor}")
        lr_lambda = linear_decay(args.num_epochs, args.num_epochs_decay)
        betas, lr = (args.adam_beta1, args.adam_beta2), scaled_learning_rate(args, accelerator.num_processes)
        opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lr_lambda)
        self.gan_loss = GANLoss(args.gan_mode)
        self.perceptual = EfficientNetPerceptualLoss().to(accelerator.device) if args.lambda_perceptual else None
        self.rebalancing = color_rebalancing(self.train_set, args.color_rebalance).to(accelerator.device) \
            if args.color_rebalance else None
        if args.no_gan:
            self.d_pair = self.discriminators = None
            self.generator, opt_g, sched_g, self.loader = accelerator.prepare(generator, opt_g, sched_g, loader)
            self.optimizers, self.schedulers = [opt_g], [sched_g]
        else:
            patch = projected = None
            if args.discriminator != "projected":
                patch = PatchDiscriminator(in_ch + out_ch, ndf=args.ndf, n_layers=args.n_layers_d, norm=args.norm,
                                           pixel=args.pixel_d)
            if args.discriminator != "patch":
                projected = ProjectedDiscriminator(in_ch + out_ch, image_channels=out_ch, ndf=args.ndf)
                projected.load_imagenet_backbone()
            d_pair = RealFakeDiscriminator(patch, projected, diffaugment(accelerator, args))
            if args.load_pretrain:
                d_pair.load_pretrained(Path(args.load_pretrain))
            d_pair.to(memory_format=args.memory_format)
            opt_d = torch.optim.Adam([p for p in d_pair.parameters() if p.requires_grad], lr=lr, betas=betas)
            sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lr_lambda)
            self.generator, self.d_pair, opt_g, opt_d, sched_g, sched_d, self.loader = accelerator.prepare(
                generator, d_pair, opt_g, opt_d, sched_g, sched_d, loader
            )
            self.discriminators = accelerator.unwrap_model(self.d_pair)
            self.optimizers, self.schedulers = [opt_g, opt_d], [sched_g, sched_d]
        autocast_in_steps_only(accelerator, self.generator, self.d_pair)

    def start_epoch(self, epoch):
        self.generator.train()

    def training_step(self, batch):
        accelerator, args = self.accelerator, self.args
        opt_g = self.optimizers[0]
        real_a, real_b = batch["A"], batch["B"]
        with accelerator.autocast():
            if args.color_classification or args.palette_classes:
                fake_b, logits = self.generator(real_a, return_logits=True)
            else:
                fake_b = self.generator(real_a)
            logs = {}
            d_fake = None
            if self.d_pair is not None:  # D first, on real and detached fake pairs
                opt_d = self.optimizers[1]
                self.discriminators.requires_grad_(True)
                d_real, d_fake_detached = self.d_pair(real_a, real_b, fake_b.detach())
                loss_d, logs = discriminator_loss(self.gan_loss, logit_maps(d_real), logit_maps(d_fake_detached))
                opt_d.zero_grad(set_to_none=True)
                accelerator.backward(loss_d)
                opt_d.step()
                self.discriminators.requires_grad_(False)  # then G, through the updated, frozen D
                d_fake = logit_maps(self.discriminators.pair(real_a, fake_b))
            loss_g, parts = pix2pix_generator_loss(
                self.gan_loss, d_fake, fake_b, real_b, args.lambda_l1,
                l1_weights=self.rebalancing.weights(real_b) if self.rebalancing is not None else None)
            if args.color_classification:
                parts["g_ce"] = ab_cross_entropy(logits, real_b, self.rebalancing)
                loss_g = loss_g + args.color_classification * parts["g_ce"]
                parts["g_ce"] = parts["g_ce"].detach()
            if args.palette_classes:
                palette = accelerator.unwrap_model(self.generator).palette
                parts["g_ce"] = palette_cross_entropy(logits, real_b, palette, self.palette_weights)
                loss_g = loss_g + args.palette_ce * parts["g_ce"]
                parts["g_ce"] = parts["g_ce"].detach()
            if self.perceptual is not None:  # on RGB images (colorization: L with the ab)
                rgb = [self.train_set.to_rgb(real_a, b) * 2 - 1 for b in (fake_b, real_b)]
                parts["g_perceptual"] = self.perceptual(*rgb)
                loss_g = loss_g + args.lambda_perceptual * parts["g_perceptual"]
                parts["g_perceptual"] = parts["g_perceptual"].detach()
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(loss_g)
        opt_g.step()
        return {**logs, **parts}

    def pipeline(self, generator: UNetGenerator) -> Pix2PixPipeline:
        """A pipeline around `generator` (validation: the one being trained; at the end: the result)."""
        pipe = Pix2PixPipeline(generator=generator, image_size=self.args.image_size, direction=self.args.direction,
                               color_space="lab" if self.layout == "colorization" else "rgb", palette=self.palette,
                               id2label=self.id2label)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def validation_grid(self, step):
        pipe = self.pipeline(self.accelerator.unwrap_model(self.generator))
        return validation_grid(pipe, self.val_set, self.args.num_validation_images, step)

    def final_pipeline(self):
        discriminators = {} if self.discriminators is None else self.discriminators.folders()
        return self.pipeline(self.accelerator.unwrap_model(self.generator).eval()), discriminators

    def validate(self, step):
        pipe = self.pipeline(self.accelerator.unwrap_model(self.generator))
        return (validation_grid(pipe, self.val_set, self.args.num_validation_images, step),
                validation_metrics(pipe, self.val_set, self.args.max_validation_samples, step))

    def model_card(self, pipe, discriminators, run, metrics):
        return model_card(self.args, self.dataset_desc, self.val_desc, pipe, discriminators, run.steps, run.epochs,
                          run.seconds, run.num_processes, metrics)


def main(argv=None):
    args = parse_args(argv)
    with removed_if_left_empty(args.output_dir):
        accelerator = make_accelerator(args)
        set_seed(args.seed, device_specific=True)  # rank 0's seed is `seed`; DDP broadcasts its weights
        train_loop(accelerator, args, Pix2PixTrainer(accelerator, args))


if __name__ == "__main__":
    run_script(main)
