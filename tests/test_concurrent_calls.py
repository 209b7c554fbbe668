"""Pipelines called from several threads at once give each call the output it gives alone: sampling
draws only from the caller's `torch.Generator`, never from torch's process-wide RNG (issue 36)."""

import functools
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline import make_pipe, photo
from test_pix2pixhd import hd_pipe, scene

from p2p_models import Pix2PixPipeline
from p2p_models.blocks import Dropout

SEEDS = range(6)
ROUNDS = 3


def facades_like():
    """A label-map pipeline (a palette, inputs snapped to it), as the facades one."""
    palette = [[0, 0, 170], [0, 85, 255], [255, 170, 0], [170, 0, 0]]
    pipe = Pix2PixPipeline(generator=make_pipe().generator, image_size=64, palette=palette)
    rng = np.random.default_rng(3)
    labels = np.asarray(palette, np.uint8)[rng.integers(0, 4, (8, 12))]
    return pipe, lambda g: pipe(Image.fromarray(labels).resize((96, 64), Image.NEAREST), generator=g)


def maps_like():
    pipe = make_pipe()
    return pipe, lambda g: pipe(photo(80, 80, seed=2), generator=g)


def hd_like():
    pipe = hd_pipe()
    labels, instances = scene()
    return pipe, lambda g: pipe(labels, instances, generator=g)


def outputs(call, seeds, rounds=1):
    return [np.asarray(call(torch.Generator().manual_seed(s)).images[0]) for _ in range(rounds) for s in seeds]


def differing_on_threads(calls) -> list[int]:
    """Each call (a generator -> pipeline output) over SEEDS, ROUNDS times, on its own thread, all at
    once: per call, how many outputs differ from the same calls made one after another."""
    expected = [outputs(call, SEEDS) * ROUNDS for call in calls]
    got = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def work(i):
        barrier.wait()
        got[i] = outputs(calls[i], SEEDS, ROUNDS)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [sum(not np.array_equal(a, b) for a, b in zip(g, e)) for g, e in zip(got, expected)]


@pytest.mark.parametrize("backend", ["torch", "fast"])
def test_concurrent_calls_give_the_sequential_outputs(backend):
    calls = []
    for pipe, call in (facades_like(), maps_like(), hd_like()):
        pipe.set_backend(backend)
        pipe.set_progress_bar_config(disable=True)
        calls.append(call)
    distinct = [len({o.tobytes() for o in outputs(call, SEEDS)}) for call in calls]
    assert distinct[:2] == [len(SEEDS)] * 2 and distinct[2] > 1  # the seeds matter: dropout, HD's random styles
    differing = differing_on_threads(calls)
    assert differing == [0] * len(calls), f"outputs differing from the sequential ones (facades, maps, HD): {differing}"


@pytest.mark.parametrize("backend", ["torch", "fast"])
def test_one_pipeline_on_several_threads_sampling_and_deterministic(backend):
    """Calls on one pipeline wait for each other's mode (dropout on or off) to end."""
    pipe, _ = maps_like()
    pipe.set_backend(backend)
    pipe.set_progress_bar_config(disable=True)
    image = photo(80, 80, seed=2)
    calls = [functools.partial(lambda g, d: pipe(image, generator=g, deterministic=d), d=d)
             for d in (False, True, False)]
    differing = differing_on_threads(calls)
    assert differing == [0] * len(calls), f"outputs differing from the sequential ones: {differing}"


def test_dropout_draws_from_the_generator_it_is_given_and_else_from_the_global_rng():
    x = torch.randn(2, 8, 16, 16)
    dropout = Dropout(0.5).train()
    kept = torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) < 0.5  # one uniform per element
    expected = torch.where(kept, 2 * x, 0)
    state = torch.get_rng_state()
    assert torch.equal(dropout(x, torch.Generator().manual_seed(5)), expected)
    assert torch.equal(dropout(x.to(memory_format=torch.channels_last), torch.Generator().manual_seed(5)), expected)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from the global RNG
    assert not torch.equal(dropout(x, torch.Generator().manual_seed(6)), expected)
    torch.manual_seed(5)
    assert torch.equal(dropout(x), expected)  # no generator: the global RNG in that state, whatever the layout
    torch.manual_seed(5)
    assert torch.equal(dropout(x.to(memory_format=torch.channels_last)), expected)
    assert 0.45 < kept.float().mean() < 0.55
    assert torch.equal(Dropout(0.25).train()(x, torch.Generator().manual_seed(5)),
                       torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) < 0.75, x * (1 / 0.75), 0))
    assert torch.equal(dropout.eval()(x, torch.Generator()), x)
