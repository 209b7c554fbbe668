"""Inference modes of a generator: plain eval mode, and the sampling mode (dropout on; BatchNorm with
the batch's own statistics, as pix2pix's paper test, or with the running statistics). A mode is set on
the module itself, so a module runs in one mode at a time: a thread that enters a mode waits for any
other thread using the same module to leave its own."""

import contextlib
import threading
import weakref

from torch import nn

_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_lock = threading.Lock()


def module_lock(model: nn.Module) -> threading.RLock:
    """The lock a module's modes hold (re-entrant: one thread may nest modes)."""
    with _locks_lock:
        return _locks.setdefault(model, threading.RLock())


def samples_with_batch_statistics(model: nn.Module) -> bool:
    """Whether `model` samples with each image's own BatchNorm statistics: its config's
    `sample_with_batch_statistics` (a `UNetGenerator`'s), True for modules without one."""
    config = getattr(model, "config", None) or {}
    return bool(config.get("sample_with_batch_statistics", True))


@contextlib.contextmanager
def sampling_mode(model: nn.Module, batch_statistics: bool | None = None):
    """Run `model` with dropout on. With `batch_statistics` (default: `samples_with_batch_statistics(model)`),
    BatchNorm normalises with the batch's own statistics, as pix2pix's reference test script does (no
    `--eval`), running statistics neither used nor updated; without, BatchNorm uses its running
    statistics (eval mode), as for a net trained on batches of several images."""
    if batch_statistics is None:
        batch_statistics = samples_with_batch_statistics(model)
    with module_lock(model):
        saved = [(m, m.training, getattr(m, "track_running_stats", None)) for m in model.modules()]
        try:
            for m in model.modules():
                if isinstance(m, nn.Dropout):
                    m.train()
                elif isinstance(m, nn.modules.batchnorm._BatchNorm) and batch_statistics:
                    m.train()
                    m.track_running_stats = False
                else:
                    m.eval()
            yield
        finally:
            for m, training, track in saved:
                m.train(training)
                if track is not None:
                    m.track_running_stats = track


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Plain eval mode (dropout off, BatchNorm running statistics), restored afterwards."""
    with module_lock(model):
        saved = [(m, m.training) for m in model.modules()]
        try:
            model.eval()
            yield
        finally:
            for m, training in saved:
                m.train(training)
