"""Train pix2pixHD (global generator, local enhancer, multiscale D, feature matching, VGG loss,
instance maps, feature encoder) with accelerate.

Coarse to fine, as the paper:

    accelerate launch train/train_pix2pixhd.py --dataset ../shared/datasets/cityscapes_samples \
        --label_nc 35 --netG global --load_size 1024 --output_dir runs/hd_global --lambda_perceptual 10
    accelerate launch train/train_pix2pixhd.py ... --netG local --ngf 32 --load_size 2048 \
        --load_pretrain runs/hd_global --niter_fix_global 10 --output_dir runs/hd_local

The output directory ends up a `Pix2PixHDPipeline` folder (generator/, encoder/ and style_bank/
with --instance_feat) plus `discriminator/` (and `projected_discriminator/`), checkpoints,
validation grids and a model card.
"""

import argparse
import json
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed

from p2p_models import (
    FeatureEncoder,
    GANLoss,
    GlobalGenerator,
    LocalEnhancer,
    MultiscaleDiscriminator,
    Pix2PixHDPipeline,
    VGGLoss,
    feature_matching_loss,
    load_vgg19,
    multiscale_gan_loss,
)
from p2p_models.labels import class_count, instance_boundaries, one_hot
from p2p_models.losses import summed_gan_loss
from p2p_models.perceptual import EfficientNetPerceptualLoss
from p2p_models.pix2pixhd import UPSAMPLINGS
from p2p_models.pipelines.model_cards import PIX2PIXHD_TAGS, make_card, public_path, usage
from p2p_models.projected import ProjectedDiscriminator
from p2p_models.vgg import NO_WEIGHTS
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
    label_colors,
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
from train.data import LabelImageDataset, load_label_splits, train_val_split
from train.encode_features import build_style_bank
from train.loop import GANTrainer, train_loop

logger = get_logger(__name__)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    g = p.add_argument_group("label maps")
    g.add_argument("--label_column", default="label")
    g.add_argument("--image_column", default="image")
    g.add_argument("--instance_column", default="instance")
    g.add_argument("--label_nc", type=int, default=35, help="number of label classes")
    g.add_argument("--contain_dontcare_label", action="store_true", help="id 255 becomes an extra class")
    g.add_argument("--no_instance", action="store_true", help="no instance maps (no boundary channel)")
    g.add_argument("--countable_classes", type=int, nargs="+", default=None,
                   help="for data without instance maps: connected regions of these classes are the instances "
                        "(an approximation; stored with the pipeline, which does the same at inference)")
    g.add_argument("--label_info", default=None,
                   help='JSON {"names": [...], "colors": [[r, g, b], ...]} stored with the pipeline')
    g.add_argument("--load_size", "--resolution", type=int, default=1024,
                   help="resize to this width (aspect kept) = the model's working width")
    g.add_argument("--crop_size", type=int, default=None, help="random square crop for training")
    add_flip_args(g)

    g = p.add_argument_group("model")
    g.add_argument("--netG", choices=["global", "local"], default="global")
    g.add_argument("--ngf", type=int, default=64)
    g.add_argument("--n_downsample_global", type=int, default=4)
    g.add_argument("--n_blocks_global", type=int, default=9)
    g.add_argument("--n_local_enhancers", type=int, default=1)
    g.add_argument("--n_blocks_local", type=int, default=3)
    g.add_argument("--niter_fix_global", type=int, default=0, help="epochs training only the local enhancer")
    g.add_argument("--load_pretrain", default=None,
                   help="a trained global pipeline (or generator) folder for G2, or a local one to fine-tune; the "
                        "discriminators too where it is a training run's output (which keeps them)")
    g.add_argument("--norm", choices=["instance", "batch", "none"], default="instance")
    g.add_argument("--upsampling", choices=UPSAMPLINGS, default="transposed",
                   help="the generators' x2 upsampling: the reference's transposed conv, or nearest + 3x3 conv "
                        "(resize-convolution: no checkerboard artefacts)")
    g.add_argument("--ndf", type=int, default=64)
    g.add_argument("--n_layers_D", type=int, default=3)
    g.add_argument("--num_D", type=int, default=3)
    g.add_argument("--no_lsgan", action="store_true", help="vanilla GAN loss instead of least squares")
    g.add_argument("--lambda_feat", type=float, default=10.0)
    g.add_argument("--no_ganFeat_loss", action="store_true")
    g.add_argument("--no_vgg_loss", action="store_true")
    g.add_argument("--vgg_weights", default=None, help="VGG19 ImageNet weights: safetensors file or Hub repo")
    g.add_argument("--instance_feat", action="store_true", help="encoder features pooled per instance")
    g.add_argument("--label_feat", action="store_true", help="encoder features pooled per label region")
    g.add_argument("--feat_num", type=int, default=3)
    g.add_argument("--nef", type=int, default=16)
    g.add_argument("--n_downsample_E", type=int, default=4)
    g.add_argument("--n_clusters", type=int, default=10)
    g = p.add_argument_group("ImageNet features and augmentation")
    add_imagenet_args(g)
    args = p.parse_args(argv)
    check_common_args(p, args)
    check_imagenet_args(p, args)
    if args.lambda_perceptual and args.vgg_weights is None:
        args.no_vgg_loss = True  # the perceptual loss stands in for the VGG loss, whose weights aren't here
    if not args.no_vgg_loss:
        if args.vgg_weights is None:
            p.error(NO_WEIGHTS + " (or --lambda_perceptual W for the offline EfficientNet stand-in)")
        check_exists(p, "--vgg_weights", args.vgg_weights, hub=True)
    check_exists(p, "--load_pretrain", args.load_pretrain)
    check_exists(p, "--label_info", args.label_info)
    if args.load_pretrain and args.netG != "local":
        p.error("--load_pretrain loads a global generator into --netG local")
    return args


def load_pretrained(source: Path, generator: LocalEnhancer, encoder: FeatureEncoder | None) -> None:
    """Start a local-enhancer run from `source`: a global pipeline (or generator) folder gives G1
    (coarse to fine); a local-enhancer pipeline gives G1 and G2, and its encoder if both have one
    (fine-tuning)."""
    folder = generator_folder(source)
    if json.loads((folder / "config.json").read_text()).get("_class_name") != "LocalEnhancer":
        generator.load_global(GlobalGenerator.from_pretrained(folder))
        logger.info(f"G1 weights loaded from {source}")
        return
    load_pretrained_weights(generator, LocalEnhancer.from_pretrained(folder), source)
    if encoder is not None and (source / "encoder").is_dir():
        load_pretrained_weights(encoder, FeatureEncoder.from_pretrained(source / "encoder"), source)


def hd_linear_decay(num_epochs: int, num_epochs_decay: int):
    """pix2pixHD's schedule: `num_epochs` at lr0, then lr0 again for the first decay epoch and
    lr -= lr0 / num_epochs_decay after each decay epoch (the reference lowers the rate at the end
    of every epoch past `niter`, so the last epoch runs at lr0 / num_epochs_decay)."""
    if num_epochs_decay == 0:
        return lambda epoch: 1.0
    return lambda epoch: 1.0 - max(0, epoch - num_epochs) / float(num_epochs_decay)


class Inputs:
    """Turns a batch into the generator's input: one-hot labels, boundary map, encoder features."""

    def __init__(self, args):
        self.classes = class_count(args.label_nc, args.contain_dontcare_label)
        self.dontcare, self.label_nc = args.contain_dontcare_label, args.label_nc
        self.use_instance, self.label_feat = not args.no_instance, args.label_feat

    def labels(self, batch):
        labels = batch["label"]
        return torch.where(labels == 255, self.label_nc, labels) if self.dontcare else labels

    def condition(self, batch):
        parts = [one_hot(self.labels(batch), self.classes)]
        if self.use_instance:
            parts.append(instance_boundaries(batch["instance"]))
        return torch.cat(parts, 1)

    def regions(self, batch):
        return self.labels(batch) if self.label_feat else batch["instance"]


@torch.no_grad()
def validate(pipeline, inputs: Inputs, dataset, n_grid, limit, palette, step):
    """(grid (H, W, 3) uint8 of label | output | target rows or None, metrics) over the readable
    examples among the first `limit`, each synthesised in eval mode by `pipeline(image_size)` (a
    `Pix2PixHDPipeline` around the modules being trained) at its own size (`size_mode="native"`).
    With an encoder, the target photo is the `style_image` (reconstruction, as the reference's test),
    its features pooled over the training's regions (`inputs.regions`: the instances, or with
    --label_feat the label regions, which then also give the boundary map)."""
    rows, scores, skipped = [], {}, []
    n = len(dataset) if limit is None else min(limit, len(dataset))
    items = readable(dataset, range(n), skipped)
    first = next(items, None)
    if first is not None:
        pipe = pipeline(list(first["label"].shape[-2:]))
        modules = [m for m in (pipe.generator, pipe.encoder) if m is not None]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        for item in chain([first], items):
            batch = {k: v[None] for k, v in item.items() if k != "index"}
            real = (batch["image"] + 1) / 2
            style = real[0] if pipe.encoder is not None else None
            fake = pipe(item["label"], instance_map=inputs.regions(batch), style_image=style, size_mode="native",
                        output_type="pt").images
            score(fake, real, scores)
            if len(rows) < n_grid:
                rows.append([label_colors(inputs.labels(batch), palette), fake, real])
        for m, mode in zip(modules, modes):
            m.train(mode)
    warn_skipped(skipped, step)
    return to_uint8_grid(rows) if rows else None, mean_scores(scores, skipped)


class Pix2PixHDTrainer(GANTrainer):
    """pix2pixHD's half of the training loop: G (and the encoder) on GAN + feature matching + VGG
    through the current D, then D on the real and detached fake pairs (the reference's order), with
    G1 held fixed for the first --niter_fix_global epochs of a local-enhancer run."""

    title = "pix2pixHD"

    def __init__(self, accelerator, args):
        self.accelerator, self.args = accelerator, args
        self.vgg_loss = None if args.no_vgg_loss else VGGLoss(load_vgg19(args.vgg_weights)).to(accelerator.device)
        self.perceptual = EfficientNetPerceptualLoss().to(accelerator.device) if args.lambda_perceptual else None
        self.info = json.loads(Path(args.label_info).read_text()) if args.label_info else {}
        self.classes = class_count(args.label_nc, args.contain_dontcare_label)
        self.palette = np.asarray(self.info.get("colors") or
                                  np.random.default_rng(0).integers(0, 256, (self.classes, 3)), np.uint8)

        # Data
        with accelerator.main_process_first():
            splits = load_label_splits(args.dataset, cache_dir=args.cache_dir)
        self.train_hf, val_hf, self.val_desc = train_val_split(
            splits, args.train_split, args.validation_split, args.validation_fraction, args.seed
        )
        if args.max_train_samples:
            self.train_hf = self.train_hf.select(range(min(args.max_train_samples, len(self.train_hf))))
        factor = 2 ** (args.n_downsample_global + (args.n_local_enhancers if args.netG == "local" else 0))
        instance_column = None if args.no_instance or args.instance_column == "none" else args.instance_column
        if instance_column and instance_column not in self.train_hf.column_names:
            if not args.countable_classes:
                raise ValueError(f"no {instance_column!r} column in {args.dataset}: pass --no_instance, "
                                 "--instance_column or --countable_classes")
            instance_column = None
        self.common = dict(label_column=args.label_column, image_column=args.image_column,
                           instance_column=instance_column, load_size=args.load_size, flip=not args.no_flip,
                           seed=args.seed, size_factor=factor, countable=args.countable_classes,
                           label_nc=args.label_nc, contain_dontcare_label=args.contain_dontcare_label)
        self.train_set = LabelImageDataset(self.train_hf, crop_size=args.crop_size, train=True, **self.common)
        self.val_set = LabelImageDataset(val_hf, train=False, **self.common)
        if args.skip_bad_images:
            skip_bad_examples(args, training=self.train_set, validation=self.val_set)
        decoded_once(accelerator, args, self.train_set, self.val_set)
        loader = train_loader(self.train_set, args)

        # Models
        self.inputs = Inputs(args)
        use_features = args.instance_feat or args.label_feat
        g_in = self.classes + int(not args.no_instance) + (args.feat_num if use_features else 0)
        if args.netG == "global":
            generator = GlobalGenerator(g_in, 3, args.ngf, args.n_downsample_global, args.n_blocks_global, args.norm,
                                        args.upsampling)
        else:
            generator = LocalEnhancer(g_in, 3, args.ngf, args.n_downsample_global, args.n_blocks_global,
                                      args.n_local_enhancers, args.n_blocks_local, args.norm, args.upsampling)
        encoder = FeatureEncoder(3, args.feat_num, args.nef, args.n_downsample_E, args.norm) if use_features else None
        if args.load_pretrain:
            load_pretrained(Path(args.load_pretrain), generator, encoder)
        d_in = self.classes + int(not args.no_instance) + 3
        multiscale = projected = None
        if args.discriminator != "projected":
            multiscale = MultiscaleDiscriminator(d_in, args.ndf, args.n_layers_D, args.num_D, args.norm)
        if args.discriminator != "patch":
            projected = ProjectedDiscriminator(d_in, image_channels=3, ndf=args.ndf).load_imagenet_backbone()
        d_pair = RealFakeDiscriminator(multiscale, projected, diffaugment(accelerator, args))
        if args.load_pretrain:
            d_pair.load_pretrained(Path(args.load_pretrain))
        self.ema_modules = [generator] + ([encoder] if encoder is not None else [])
        for network in self.ema_modules + [d_pair]:
            network.to(memory_format=args.memory_format)
        g_params = [p for network in self.ema_modules for p in network.parameters()]
        betas, lr = (args.adam_beta1, args.adam_beta2), scaled_learning_rate(args, accelerator.num_processes)
        opt_g = torch.optim.Adam(g_params, lr=lr, betas=betas)
        opt_d = torch.optim.Adam([p for p in d_pair.parameters() if p.requires_grad], lr=lr, betas=betas)
        decay = hd_linear_decay(args.num_epochs, args.num_epochs_decay)
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, decay)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, decay)
        models = [generator, d_pair] + ([encoder] if encoder is not None else [])
        prepared = accelerator.prepare(*models, opt_g, opt_d, sched_g, sched_d, loader)
        self.generator, self.d_pair = prepared[0], prepared[1]
        self.encoder = prepared[2] if encoder is not None else None
        opt_g, opt_d, sched_g, sched_d, self.loader = prepared[len(models):]
        self.optimizers, self.schedulers = [opt_g, opt_d], [sched_g, sched_d]
        self.discriminators = accelerator.unwrap_model(self.d_pair)
        autocast_in_steps_only(accelerator, self.generator, self.d_pair, self.encoder)
        self.global_params = (list(accelerator.unwrap_model(self.generator).global_layers.parameters())
                              if args.netG == "local" else [])
        self.gan_loss = GANLoss("vanilla" if args.no_lsgan else "lsgan")
        self.fix_global = False
        logger.info(f"G input {g_in} channels")

    def start_epoch(self, epoch):
        self.fix_global = epoch < self.args.niter_fix_global

    def training_step(self, batch):
        accelerator, args, inputs = self.accelerator, self.args, self.inputs
        opt_g, opt_d = self.optimizers
        real = batch["image"]
        with accelerator.autocast():
            condition = inputs.condition(batch)
            g_input = condition
            if self.encoder is not None:
                g_input = torch.cat([condition, self.encoder(real, inputs.regions(batch))], 1)
            fake = self.generator(g_input)
            # D on real and (detached) fake pairs, with the current D (loss applied after G's step)
            self.discriminators.requires_grad_(True)
            pred_real, pred_fake_d = self.d_pair(condition, real, fake.detach())
            loss_d_real = self.gan_terms(pred_real, True)
            loss_d_fake = self.gan_terms(pred_fake_d, False)
            # G: GAN + feature matching + VGG, through a frozen D
            self.discriminators.requires_grad_(False)
            pred_fake = self.discriminators.pair(condition, fake)
            losses = {"g_gan": self.gan_terms(pred_fake, True, for_discriminator=False)}
            if not args.no_ganFeat_loss and "patch" in pred_fake:  # the multi-scale D's features
                losses["g_feat"] = feature_matching_loss(pred_fake["patch"], pred_real["patch"], args.lambda_feat)
            if self.vgg_loss is not None:
                losses["g_vgg"] = self.vgg_loss(fake.float(), real.float()) * args.lambda_feat
            if self.perceptual is not None:
                losses["g_perceptual"] = self.perceptual(fake, real) * args.lambda_perceptual
            loss_g = sum(losses.values())
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(loss_g)
        if self.fix_global:  # coarse-to-fine: G1 stays as loaded for the first --niter_fix_global epochs
            for p in self.global_params:
                p.grad = None
        opt_g.step()
        self.discriminators.requires_grad_(True)
        loss_d = 0.5 * (loss_d_real + loss_d_fake)
        opt_d.zero_grad(set_to_none=True)
        accelerator.backward(loss_d)
        opt_d.step()
        return {**losses, "d_real": loss_d_real, "d_fake": loss_d_fake}

    def gan_terms(self, outputs: dict, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        """The GAN loss summed over the multi-scale D's scales and the projected D's."""
        terms = []
        if "patch" in outputs:
            terms.append(multiscale_gan_loss(self.gan_loss, outputs["patch"], target_is_real, for_discriminator))
        if "projected" in outputs:
            terms.append(summed_gan_loss(self.gan_loss, outputs["projected"], target_is_real, for_discriminator))
        return sum(terms[1:], terms[0])

    def pipeline(self, image_size: list[int], **config) -> Pix2PixHDPipeline:
        """A pipeline around the generator and encoder being trained (validation encodes the target
        photos, so no style bank unless `config` gives one, as the final pipeline does)."""
        args, unwrap = self.args, self.accelerator.unwrap_model
        pipe = Pix2PixHDPipeline(generator=unwrap(self.generator), encoder=self.encoder and unwrap(self.encoder),
                                 label_nc=args.label_nc, contain_dontcare_label=args.contain_dontcare_label,
                                 use_instance=not args.no_instance, image_size=image_size,
                                 countable_classes=args.countable_classes, **config)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _validate(self, limit, step):
        return validate(self.pipeline, self.inputs, self.val_set, self.args.num_validation_images, limit,
                        self.palette, step)

    def validation_grid(self, step):
        return self._validate(self.args.num_validation_images, step)[0]

    def final_pipeline(self):
        args, unwrap = self.args, self.accelerator.unwrap_model
        unwrap(self.generator).eval()
        e = unwrap(self.encoder).eval() if self.encoder is not None else None
        bank_set = LabelImageDataset(self.train_hf, train=False, **self.common)
        bank_set.indices = self.train_set.indices  # without the examples --skip_bad_images dropped
        bank = None
        if e is not None:
            bank = build_style_bank(e, bank_set, self.classes, args.n_clusters, args.label_feat, args.seed,
                                    self.accelerator.device)
        # the working size: the full-size shape of a readable example (validation, else training)
        sample = next(chain(readable(self.val_set, range(len(self.val_set)), []),
                            readable(bank_set, range(len(bank_set)), [])))
        names = self.info.get("names")
        pipe = self.pipeline(list(sample["label"].shape[-2:]), style_bank=bank,
                                        palette=self.palette.tolist(),
                                        id2label=dict(enumerate(names)) if names else None)
        return pipe, self.discriminators.folders()

    def validate(self, step):
        return self._validate(self.args.max_validation_samples, step)

    def model_card(self, pipe, discriminators, run, metrics):
        return model_card(self.args, pipe, discriminators, self.val_desc, len(self.train_set), run.steps, run.epochs,
                          run.seconds, run.num_processes, metrics)


def main(argv=None):
    args = parse_args(argv)
    with removed_if_left_empty(args.output_dir):
        accelerator = make_accelerator(args)
        set_seed(args.seed, device_specific=True)
        train_loop(accelerator, args, Pix2PixHDTrainer(accelerator, args))


def model_card(args, pipe, discriminators, val_desc, n_train, steps, epochs, seconds, num_processes, metrics):
    losses = ["LSGAN" if not args.no_lsgan else "vanilla GAN"]
    if not args.no_ganFeat_loss and args.discriminator != "projected":
        losses.append(f"{args.lambda_feat:g} * feature matching")
    losses.append("no VGG loss" if args.no_vgg_loss else f"{args.lambda_feat:g} * VGG19 ({args.vgg_weights})")
    h, w = pipe.working_size
    instances_desc = ("" if args.no_instance else
                      f", instances = connected regions of classes {args.countable_classes} (the data has no instance "
                      "maps; an approximation)" if args.countable_classes else ", instance maps")
    repo = args.hub_model_id or public_path(args.output_dir)
    call = "pipe(label_map, instance_map=instance_map, generator=torch.Generator().manual_seed(0)).images[0]"
    lines = [
        f"# pix2pixHD: {Path(args.output_dir).name}", "",
        "A pix2pixHD pipeline (Wang et al., CVPR 2018) trained with p2p's `train/train_pix2pixhd.py`.", "",
        usage("Pix2PixHDPipeline", repo, call, 'label_map = Image.open("labels.png")  # class ids\n'
              "instance_map = None  # or an image of instance ids\n"), "",
        "## Training", "",
        f"- Data: `{dataset_label(args.dataset)}` ({n_train} training examples, {args.label_nc} classes"
        f"{instances_desc}); validation: {val_desc}.",
        f"- Working size {w}x{h} (width resized to {args.load_size}"
        f"{f', random {args.crop_size} crops' if args.crop_size else ''}).",
        f"- Losses: {', '.join(losses)}; Adam lr {args.learning_rate:g}, betas ({args.adam_beta1}, {args.adam_beta2}); "
        f"{args.num_epochs} epochs + {args.num_epochs_decay} decay (ran {steps} steps = {epochs:.2f} epochs"
        f"{f', G1 fixed for {args.niter_fix_global} epoch' + 's' * (args.niter_fix_global > 1) if args.niter_fix_global else ''}).",
        f"- Generator: `{type(pipe.generator).__name__}` {json.dumps(public_config(pipe.generator.config))}.",
        "- Discriminator: " + ", ".join(f"`{type(d).__name__}` {json.dumps(public_config(d.config))}"
                                         for d in discriminators.values()) + ".",
        imagenet_setup(args),
        f"- Encoder / style bank: {'none' if pipe.encoder is None else json.dumps(public_config(pipe.encoder.config))}"
        f"{'' if pipe.style_bank is None else f', k = {args.n_clusters} clusters per class'}.",
        f"- Batch size {args.train_batch_size} x {num_processes} process(es); seed {args.seed}; "
        f"wall time {wall_time(seconds, metrics)}.",
        speed_setup(args, num_processes),
        f"- Command: `{command_line('train/train_pix2pixhd.py')}`", "",
        *validation_section(metrics, "Reconstructions (encoder features from the target photo)",
                            f"at {w}x{h}, RGB in [0, 1]"),
    ]
    return str(make_card(card_metadata(args, PIX2PIXHD_TAGS, metrics), "\n".join(lines)))


if __name__ == "__main__":
    run_script(main)
