"""Inference modes of a generator: plain eval mode, and pix2pix's paper test mode (dropout on, batch
statistics). A mode is set on the module itself, so a module runs in one mode at a time: a thread
that enters a mode waits for any other thread using the same module to leave its own."""

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


@contextlib.contextmanager
def paper_test_mode(model: nn.Module):
    """Run `model` as pix2pix's reference test script does (no `--eval`): dropout on, BatchNorm
    normalising with the batch's own statistics. Running statistics are neither used nor updated."""
    with module_lock(model):
        saved = [(m, m.training, getattr(m, "track_running_stats", None)) for m in model.modules()]
        try:
            for m in model.modules():
                if isinstance(m, nn.Dropout):
                    m.train()
                elif isinstance(m, nn.modules.batchnorm._BatchNorm):
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
