"""Train pix2pix (U-Net generator + PatchGAN, cGAN + lambda * L1) with accelerate.

    accelerate launch train/train_pix2pix.py --dataset ../shared/datasets/facades --direction BtoA \
        --output_dir runs/facades --num_epochs 100 --num_epochs_decay 100

The output directory ends up a `Pix2PixPipeline` folder (model_index.json, generator/, a model card)
plus `discriminator/`, `checkpoint-N/` folders, validation grids in `samples/` and
`validation_metrics.json`. `--resume_from_checkpoint latest` continues a stopped run.
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from common import (
    RealFakeDiscriminator,
    add_common_args,
    card_metadata,
    check_common_args,
    command_line,
    dataset_label,
    init_trackers,
    linear_decay,
    make_accelerator,
    mean_scores,
    public_config,
    readable,
    record_validation,
    resume,
    run_timing,
    save_checkpoint,
    save_grid,
    save_outputs,
    score,
    skip_bad_examples,
    to_uint8_grid,
    train_loader,
    validation_section,
    wall_time,
    warn_skipped,
    write_rank_report,
)
from data import PairedImageDataset, load_splits, train_val_split
from tqdm.auto import tqdm

from p2p_models import (
    GANLoss,
    PatchDiscriminator,
    Pix2PixPipeline,
    UNetGenerator,
    discriminator_loss,
    pix2pix_generator_loss,
)
from p2p_models.pipelines.hub import PIX2PIX_TAGS, make_card, public_path, usage

logger = get_logger(__name__)


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
    g.add_argument("--crop_size", type=int, default=256, help="random crop size = the model's working size")
    g.add_argument("--no_flip", action="store_true", help="no random horizontal flips")

    g = p.add_argument_group("model")
    g.add_argument("--num_downs", type=int, default=8, help="U-Net levels: 8 = unet_256, 7 = unet_128")
    g.add_argument("--ngf", type=int, default=64)
    g.add_argument("--ndf", type=int, default=64)
    g.add_argument("--n_layers_d", type=int, default=3, help="PatchGAN layers: 3 = 70x70, 1 = 16x16, 5 = 286x286")
    g.add_argument("--pixel_d", action="store_true", help="1x1 PixelGAN discriminator")
    g.add_argument("--norm", choices=["batch", "instance", "none"], default="batch")
    g.add_argument("--no_dropout", action="store_true")
    g.add_argument("--gan_mode", choices=["vanilla", "lsgan", "hinge"], default="vanilla")
    g.add_argument("--lambda_l1", type=float, default=100.0)
    g.add_argument("--no_gan", action="store_true", help="L1 only: no discriminator (the paper's L1 baseline)")
    args = p.parse_args(argv)
    check_common_args(p, args)
    if bool(args.image_column_a) != bool(args.image_column_b):
        p.error("--image_column_a and --image_column_b go together")
    if args.colorization and args.image_column_a:
        p.error("--colorization takes one --image_column, not --image_column_a/b")
    return args


def sample(generator, a: torch.Tensor, seed: int) -> torch.Tensor:
    """G's outputs as the pipeline samples them (dropout on, per-image BatchNorm statistics)."""
    pipe = Pix2PixPipeline(generator=generator, image_size=list(a.shape[-2:]), color_space="lab"
                           if generator.config.out_channels == 2 else "rgb")
    return pipe.generate(a, seeds=[seed + i for i in range(len(a))])


def validation_grid(generator, dataset: PairedImageDataset, n: int, device, step: int) -> np.ndarray | None:
    """input | output | target rows for the first `n` validation examples, unreadable ones left out:
    (H, W, 3) uint8, or None if none could be read."""
    skipped = []
    items = list(readable(dataset, range(min(n, len(dataset))), skipped))
    warn_skipped(skipped, step)
    if not items:
        return None
    a = torch.stack([it["A"] for it in items]).to(device)
    b = torch.stack([it["B"] for it in items]).to(device)
    fake = sample(generator, a, seed=0).float()
    return to_uint8_grid([[dataset.to_rgb(a[i:i + 1]), dataset.to_rgb(a[i:i + 1], fake[i:i + 1]),
                           dataset.to_rgb(a[i:i + 1], b[i:i + 1])] for i in range(len(items))])


def validation_metrics(generator, dataset: PairedImageDataset, limit: int | None, device, step: int) -> dict:
    """Mean L1 / PSNR / SSIM of sampled outputs vs targets, in RGB [0, 1] at the working size, over
    the readable examples among the first `limit`."""
    scores, skipped = {}, []
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, n, 8):
        items = list(readable(dataset, range(start, min(start + 8, n)), skipped))
        if not items:
            continue
        a = torch.stack([it["A"] for it in items]).to(device)
        b = torch.stack([it["B"] for it in items]).to(device)
        score(dataset.to_rgb(a, sample(generator, a, seed=start).float()), dataset.to_rgb(a, b), scores)
    warn_skipped(skipped, step)
    return mean_scores(scores, skipped)


def model_card(args, dataset_desc, val_desc, pipe, discriminator, steps, epochs, seconds, num_processes, metrics):
    g = dict(pipe.generator.config)
    d = dict(discriminator.config) if discriminator is not None else None
    objective = "L1 only (no discriminator)" if args.no_gan else f"cGAN ({args.gan_mode}) + {args.lambda_l1:g} * L1"
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
        f"- Validation: {val_desc}.",
        f"- Objective: {objective}; Adam lr {args.learning_rate:g}, betas ({args.adam_beta1}, {args.adam_beta2}); "
        f"{args.num_epochs} epochs constant + {args.num_epochs_decay} linear decay "
        f"(ran {steps} steps = {epochs:.2f} epochs).",
        f"- Augmentation: {resize}, random crop {args.crop_size}"
        f"{'' if args.no_flip else ', random horizontal flip'}; batch size {args.train_batch_size} x "
        f"{num_processes} process(es); seed {args.seed}.",
        f"- Generator: `UNetGenerator` {json.dumps(public_config(g))}.",
        f"- Discriminator: {'none' if d is None else '`PatchDiscriminator` ' + json.dumps(public_config(d))}.",
        f"- Wall time: {wall_time(seconds, metrics)}.",
        f"- Command: `{command_line('train/train_pix2pix.py')}`", "",
        *validation_section(metrics, "Sampled outputs (dropout on, seed per image)",
                            f"at {args.crop_size}x{args.crop_size}, RGB in [0, 1]"),
    ]
    return str(make_card(card_metadata(args, PIX2PIX_TAGS, metrics), "\n".join(lines)))


def main(argv=None):
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    accelerator = make_accelerator(args)
    set_seed(args.seed, device_specific=True)  # rank 0's seed is `seed`; DDP broadcasts its weights

    # Data
    layout = "paired" if args.image_column_a else "colorization" if args.colorization else "aligned"
    with accelerator.main_process_first():
        splits = load_splits(args.dataset, cache_dir=args.cache_dir)
    train_hf, val_hf, val_desc = train_val_split(
        splits, args.train_split, args.validation_split, args.validation_fraction, args.seed
    )
    if args.max_train_samples:
        train_hf = train_hf.select(range(min(args.max_train_samples, len(train_hf))))
    common = dict(layout=layout, image_column=args.image_column, image_column_a=args.image_column_a,
                  image_column_b=args.image_column_b, direction=args.direction, load_size=args.load_size,
                  crop_size=args.crop_size, flip=not args.no_flip, seed=args.seed)
    train_set = PairedImageDataset(train_hf, train=True, max_load_size=args.max_load_size, **common)
    val_set = PairedImageDataset(val_hf, train=False, **common)
    if args.skip_bad_images:
        skip_bad_examples(args, training=train_set, validation=val_set)
    dataset_desc = f"{len(train_set)} training examples, layout {layout}"
    loader = train_loader(train_set, args)

    # Models, losses, optimisers
    in_ch, out_ch = train_set.channels
    generator = UNetGenerator(in_ch, out_ch, num_downs=args.num_downs, ngf=args.ngf, norm=args.norm,
                              use_dropout=not args.no_dropout)
    size_factor = 2**args.num_downs
    if args.crop_size % size_factor:
        raise ValueError(f"--crop_size {args.crop_size} must be divisible by 2**num_downs = {size_factor}")
    lr_lambda = linear_decay(args.num_epochs, args.num_epochs_decay)
    betas = (args.adam_beta1, args.adam_beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=args.learning_rate, betas=betas)
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lr_lambda)
    gan_loss = GANLoss(args.gan_mode)
    if args.no_gan:
        discriminator = None
        generator, opt_g, sched_g, loader = accelerator.prepare(generator, opt_g, sched_g, loader)
    else:
        discriminator = PatchDiscriminator(in_ch + out_ch, ndf=args.ndf, n_layers=args.n_layers_d, norm=args.norm,
                                           pixel=args.pixel_d)
        d_pair = RealFakeDiscriminator(discriminator)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=args.learning_rate, betas=betas)
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lr_lambda)
        generator, d_pair, opt_g, opt_d, sched_g, sched_d, loader = accelerator.prepare(
            generator, d_pair, opt_g, opt_d, sched_g, sched_d, loader
        )
    schedulers = [sched_g] if args.no_gan else [sched_g, sched_d]

    steps_per_epoch = len(loader)
    total_epochs = args.num_epochs + args.num_epochs_decay
    max_steps = min(args.max_train_steps or math.inf, total_epochs * steps_per_epoch)
    init_trackers(accelerator, "pix2pix", args)
    global_step = resume(accelerator, args, schedulers)
    first_epoch, resume_batches = divmod(global_step, steps_per_epoch)

    logger.info(f"{len(train_set)} training pairs, {len(val_set)} validation; {steps_per_epoch} steps/epoch per "
                f"process x {accelerator.num_processes} processes; {max_steps} steps")
    seen = []
    progress = tqdm(total=max_steps, initial=global_step, disable=not accelerator.is_local_main_process,
                    desc="steps")
    start_time, start_step = time.time(), global_step
    unwrapped_d = None if args.no_gan else accelerator.unwrap_model(d_pair).discriminator
    for epoch in range(first_epoch, total_epochs):
        if global_step >= max_steps:
            break
        train_set.set_epoch(epoch)
        loader.set_epoch(epoch)
        generator.train()
        batches = loader
        if epoch == first_epoch and resume_batches:
            batches = accelerator.skip_first_batches(loader, resume_batches)
        for batch in batches:
            real_a, real_b = batch["A"], batch["B"]
            seen += batch["index"].tolist()
            with accelerator.autocast():
                fake_b = generator(real_a)
                logs = {}
                d_fake = None
                if not args.no_gan:
                    unwrapped_d.requires_grad_(True)
                    d_real, d_fake_detached = d_pair(real_a, real_b, fake_b.detach())
                    loss_d, logs = discriminator_loss(gan_loss, d_real, d_fake_detached)
                    opt_d.zero_grad(set_to_none=True)
                    accelerator.backward(loss_d)
                    opt_d.step()
                    unwrapped_d.requires_grad_(False)
                    d_fake = unwrapped_d(torch.cat([real_a, fake_b], 1))
                loss_g, parts = pix2pix_generator_loss(gan_loss, d_fake, fake_b, real_b, args.lambda_l1)
            opt_g.zero_grad(set_to_none=True)
            accelerator.backward(loss_g)
            opt_g.step()
            global_step += 1
            if global_step % steps_per_epoch == 0:  # the reference steps its schedulers once per epoch
                for scheduler in schedulers:
                    scheduler.step()
            logs = {k: v.item() for k, v in {**logs, **parts}.items()} | {"lr": opt_g.param_groups[0]["lr"]}
            progress.update(1)
            progress.set_postfix({k: f"{v:.3g}" for k, v in logs.items()})
            accelerator.log(logs, step=global_step)
            if global_step % args.checkpointing_steps == 0:
                save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit)
            if global_step % args.validation_steps == 0 and accelerator.is_main_process:
                log_grid(accelerator, generator, val_set, args, global_step)
            if global_step >= max_steps:
                break
    progress.close()
    seconds = time.time() - start_time
    accelerator.wait_for_everyone()

    if args.rank_report:
        write_rank_report(accelerator, generator, seen, output_dir)

    if accelerator.is_main_process:
        g = accelerator.unwrap_model(generator).eval()
        pipe = Pix2PixPipeline(generator=g, image_size=args.crop_size, direction=args.direction,
                               color_space="lab" if layout == "colorization" else "rgb")
        d = None if args.no_gan else accelerator.unwrap_model(d_pair).discriminator
        metrics = run_timing(global_step, start_step, seconds)
        card_args = (args, dataset_desc, val_desc, pipe, d, global_step, global_step / steps_per_epoch, seconds,
                     accelerator.num_processes)
        save_outputs(output_dir, pipe, d, model_card(*card_args, metrics))
        logger.info(f"pipeline saved to {output_dir}")
        log_grid(accelerator, generator, val_set, args, global_step)
        metrics |= validation_metrics(g, val_set, args.max_validation_samples, accelerator.device, global_step)
        record_validation(accelerator, output_dir, metrics, global_step)
        card = model_card(*card_args, metrics)
        (output_dir / "README.md").write_text(card)
        logger.info(f"validation {metrics}")
        if args.push_to_hub:
            pipe.push_to_hub(args.hub_model_id, token=args.hub_token, model_card=card,
                             commit_message=f"pix2pix, {global_step} steps")
            logger.info(f"pushed to {args.hub_model_id}")
    accelerator.end_training()


def log_grid(accelerator, generator, val_set, args, step):
    grid = validation_grid(accelerator.unwrap_model(generator), val_set, args.num_validation_images, accelerator.device,
                           step)
    save_grid(accelerator, grid, Path(args.output_dir), step)


if __name__ == "__main__":
    main()
