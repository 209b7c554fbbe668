"""Inference modes of a generator: plain eval mode, and pix2pix's paper test mode (dropout on, batch
statistics)."""

import contextlib

from torch import nn


@contextlib.contextmanager
def paper_test_mode(model: nn.Module):
    """Run `model` as pix2pix's reference test script does (no `--eval`): dropout on, BatchNorm
    normalising with the batch's own statistics. Running statistics are neither used nor updated."""
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
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, training in saved:
            m.train(training)
