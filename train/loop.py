"""The training loop both training scripts run: epochs over the seeded loader, resume, schedulers
stepped once per epoch, checkpoints, validation grids, and at the end the pipeline saved, validated,
described in its model card and pushed. Each script supplies a `GANTrainer` with its data, models
and the per-model steps, as the reference's models supply `set_input` / `optimize_parameters`."""

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from train.common import (
    init_trackers,
    record_validation,
    resume,
    run_timing,
    save_checkpoint,
    save_grid,
    save_outputs,
    write_rank_report,
)

logger = get_logger(__name__)


@dataclass
class RunSummary:
    """What a model card says about the run: steps reached, epochs, this run's seconds, processes."""

    steps: int
    epochs: float
    seconds: float
    num_processes: int


class GANTrainer:
    """The per-model half of `train_loop`. A subclass builds, in `__init__`, everything
    `accelerator.prepare` returns and sets these attributes:

    - `title`: the model's name ("pix2pix"): tracker project (lower-cased) and Hub commit message;
    - `train_set`, `val_set`: the datasets (`train_set.set_epoch` seeds each epoch's augmentation);
    - `loader`: the prepared training DataLoader;
    - `generator`: the prepared generator (its weights are hashed for `--rank_report`);
    - `optimizers`, `schedulers`: prepared; the first optimizer's rate is logged, the schedulers
      are stepped once per epoch and restored on resume;
    - `ema_modules`: the unwrapped networks whose weights `--ema_decay` averages (the generator,
      and pix2pixHD's encoder), also put back into the contiguous memory format before saving.
    """

    title: str
    ema_modules: list[torch.nn.Module]

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch's first batch."""

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One optimisation step of every network on `batch`; returns the losses to log."""
        raise NotImplementedError

    def validation_grid(self, step: int) -> np.ndarray | None:
        """The input | output | target grid of the first `--num_validation_images` validation examples."""
        raise NotImplementedError

    def final_pipeline(self):
        """The trained pipeline and the discriminators to save beside it ({folder name: model})."""
        raise NotImplementedError

    def validate(self, step: int) -> tuple[np.ndarray | None, dict]:
        """After `final_pipeline`: the validation grid and the scores (`mean_scores`)."""
        raise NotImplementedError

    def model_card(self, pipe, discriminators: dict, run: RunSummary, metrics: dict) -> str:
        raise NotImplementedError


def train_loop(accelerator: Accelerator, args, trainer: GANTrainer) -> None:
    """Train for `--num_epochs` + `--num_epochs_decay` epochs (or `--max_train_steps`), resuming
    from `--resume_from_checkpoint`, then save the pipeline (before the final validation, so a
    failing validation never costs the model), validate, write the card and push it if asked."""
    output_dir = Path(args.output_dir)
    loader = trainer.loader
    steps_per_epoch = len(loader)
    total_epochs = args.num_epochs + args.num_epochs_decay
    max_steps = min(args.max_train_steps or math.inf, total_epochs * steps_per_epoch)
    init_trackers(accelerator, trainer.title.lower(), args)
    ema_params = [p for module in trainer.ema_modules for p in module.parameters()]
    ema = EMAModel(ema_params, decay=args.ema_decay) if args.ema_decay else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    global_step = resume(accelerator, args, trainer.schedulers)
    first_epoch, resume_batches = divmod(global_step, steps_per_epoch)
    logger.info(f"{len(trainer.train_set)} training examples, {len(trainer.val_set)} validation; {steps_per_epoch} "
                f"steps/epoch per process x {accelerator.num_processes} processes; {max_steps} steps")

    @contextlib.contextmanager
    def averaged_weights():
        """The EMA weights in the networks for a validation, the trained ones back afterwards."""
        if ema is None:
            yield
            return
        ema.store(ema_params)
        ema.copy_to(ema_params)
        try:
            yield
        finally:
            ema.restore(ema_params)

    seen = []
    progress = tqdm(total=max_steps, initial=global_step, disable=not accelerator.is_local_main_process, desc="steps")
    start_time, start_step = time.time(), global_step
    stopped_early = False
    for epoch in range(first_epoch, total_epochs):
        if global_step >= max_steps:
            break
        trainer.train_set.set_epoch(epoch)
        loader.set_epoch(epoch)
        trainer.start_epoch(epoch)
        batches = loader
        if epoch == first_epoch and resume_batches:
            batches = accelerator.skip_first_batches(loader, resume_batches)
        for batch in batches:
            seen += batch["index"].tolist()
            batch = {k: v.contiguous(memory_format=args.memory_format) if v.dim() == 4 else v for k, v in batch.items()}
            losses = trainer.training_step(batch)
            if ema is not None:
                ema.step(ema_params)
            global_step += 1
            if global_step % steps_per_epoch == 0:  # the reference steps its schedulers once per epoch
                for scheduler in trainer.schedulers:
                    scheduler.step()
            logs = {k: v.item() for k, v in losses.items()} | {"lr": trainer.optimizers[0].param_groups[0]["lr"]}
            progress.update(1)
            progress.set_postfix({k: f"{v:.3g}" for k, v in logs.items()})
            accelerator.log(logs, step=global_step)
            if args.max_train_minutes is not None:  # the check is a collective op under DDP: only when asked
                if time.time() - start_time >= args.max_train_minutes * 60:
                    accelerator.set_trigger()  # any process out of time stops them all, at the same step
                stopped_early = accelerator.check_trigger() and global_step < max_steps
            if global_step % args.checkpointing_steps == 0 or stopped_early:
                save_checkpoint(accelerator, output_dir, global_step, args.checkpoints_total_limit)
            if global_step % args.validation_steps == 0 and accelerator.is_main_process:
                with averaged_weights():
                    save_grid(accelerator, trainer.validation_grid(global_step), output_dir, global_step)
            if global_step >= max_steps or stopped_early:
                break
        if stopped_early:
            logger.info(f"--max_train_minutes {args.max_train_minutes:g} reached at step {global_step} of "
                        f"{max_steps}: checkpoint saved; continue with --resume_from_checkpoint latest")
            break
    progress.close()
    seconds = time.time() - start_time
    accelerator.wait_for_everyone()
    if args.rank_report:
        write_rank_report(accelerator, trainer.generator, seen, output_dir)

    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(ema_params)  # the run ends here (a resumed run restores the trained weights)
        for module in trainer.ema_modules:
            module.to(memory_format=torch.contiguous_format)
        pipe, discriminators = trainer.final_pipeline()
        run = RunSummary(global_step, global_step / steps_per_epoch, seconds, accelerator.num_processes)
        metrics = run_timing(global_step, start_step, seconds, max_steps)
        save_outputs(output_dir, pipe, discriminators, trainer.model_card(pipe, discriminators, run, metrics))
        logger.info(f"pipeline saved to {output_dir}")
        grid, scores = trainer.validate(global_step)
        save_grid(accelerator, grid, output_dir, global_step)
        metrics |= scores
        record_validation(accelerator, output_dir, metrics, global_step)
        card = trainer.model_card(pipe, discriminators, run, metrics)
        (output_dir / "README.md").write_text(card)
        logger.info(f"validation {metrics}")
        if args.push_to_hub:
            pipe.push_to_hub(args.hub_model_id, token=args.hub_token, model_card=card,
                             commit_message=f"{trainer.title}, {global_step} steps")
            logger.info(f"pushed to {args.hub_model_id}")
    accelerator.end_training()
