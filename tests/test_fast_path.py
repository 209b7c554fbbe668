"""The fast CPU path (packed oneDNN convolutions, BatchNorm folding) and the ONNX Runtime backend
give the plain PyTorch outputs: 1e-4 on the generator's [-1, 1] output, one 8-bit level on images."""

import numpy as np
import pytest
import torch
from conftest import seeded
from test_pipeline import arr, make_pipe, photo, pipe_sampling_with
from test_pix2pixhd import hd_pipe, scene

from p2p_models import UNetGenerator
from p2p_models.efficientnet import FrozenBatchNorm2d, SamePad
from p2p_models.optimize import PackedConv2d, fast_cpu_copy
from p2p_models.pipelines import eval_mode, sampling_mode

TOLERANCE = 1e-4  # max abs difference on [-1, 1] outputs


def random_generator():
    torch.manual_seed(0)
    g = UNetGenerator(num_downs=6, ngf=8)
    with torch.no_grad():
        for name, b in g.named_buffers():
            if "running" in name:
                b.uniform_(0.5, 2.0)
    return g.eval()


def test_fast_copy_matches_the_plain_generator_deterministic_and_sampling():
    g = random_generator()
    fast_eval, fast_sampling = fast_cpu_copy(g, deterministic=True), fast_cpu_copy(g, deterministic=False)
    assert any(isinstance(m, PackedConv2d) for m in fast_eval.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast_eval.modules())  # folded
    with torch.no_grad():
        for shape in [(1, 3, 64, 64), (2, 3, 128, 192), (1, 3, 64, 64)]:  # new shapes repack; old ones too
            x = torch.randn(shape)
            assert (fast_eval(x) - g(x)).abs().max() < TOLERANCE
            with sampling_mode(g), sampling_mode(fast_sampling):
                torch.manual_seed(7)
                expected = g(x)
                torch.manual_seed(7)  # the same dropout masks from the same seed
                assert (fast_sampling(x) - expected).abs().max() < TOLERANCE
    with torch.enable_grad():  # autograd runs the plain conv
        x = torch.randn(1, 3, 64, 64, requires_grad=True)
        fast_eval(x).sum().backward()
        assert x.grad is not None


@pytest.mark.parametrize("batch_statistics", [True, False])
def test_the_pretrained_encoders_norms_and_same_pads_go_into_its_convs_with_the_same_outputs(batch_statistics):
    """The EfficientNet encoder's FrozenBatchNorm2d (fixed statistics) is folded in every mode, its stride-1
    "SAME" pads become the convs' own padding; the outputs stay the plain generator's, sampled too."""
    torch.manual_seed(0)
    g = UNetGenerator(num_downs=6, ngf=8, encoder="efficientnet-lite0",
                      sample_with_batch_statistics=batch_statistics)
    with torch.no_grad():
        for name, b in g.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 2.0)
    g.eval()
    for deterministic in (True, False):
        fast = fast_cpu_copy(g, deterministic)
        assert not any(isinstance(m, FrozenBatchNorm2d) for m in fast.modules())
        assert not any(isinstance(m, SamePad) and m.stride == 1 for m in fast.modules())
        assert any(isinstance(m, SamePad) for m in fast.modules())  # stride 2: its pads depend on the size
        for shape in [(1, 3, 64, 64), (1, 3, 128, 64)]:
            x = torch.randn(shape)
            modes = (eval_mode(g), eval_mode(fast)) if deterministic else \
                (sampling_mode(g), sampling_mode(fast, batch_statistics))  # (the copy holds no config)
            with torch.no_grad(), modes[0], modes[1]:
                torch.manual_seed(3)
                expected = g(x)
                torch.manual_seed(3)
                assert (fast(x) - expected).abs().max() < TOLERANCE


def test_a_generator_sampling_with_running_statistics_has_them_folded_in_its_sampling_copy():
    g = UNetGenerator(num_downs=6, ngf=8, sample_with_batch_statistics=False)
    for dtype in (torch.float32, torch.bfloat16):
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast_cpu_copy(g, False, dtype).modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in fast_cpu_copy(random_generator(), False).modules())


@pytest.mark.parametrize("deterministic, batch_statistics", [(True, True), (False, True), (False, False)])
def test_pipeline_fast_backend_matches_torch(deterministic, batch_statistics):
    pipe = pipe_sampling_with(batch_statistics)
    images = [photo(90, 50), photo(200, 130, seed=1)]
    expected = [arr(o) for o in pipe(images, generator=[seeded(s) for s in (3, 4)], deterministic=deterministic).images]
    native = arr(pipe(images[1], generator=seeded(4), deterministic=deterministic, size_mode="native").images[0])
    pipe.set_backend("fast")
    got = [arr(o) for o in pipe(images, generator=[seeded(s) for s in (3, 4)], deterministic=deterministic).images]
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(got, expected))
    fast_native = arr(pipe(images[1], generator=seeded(4), deterministic=deterministic, size_mode="native").images[0])
    assert np.abs(fast_native - native).max() <= 1


def test_fast_backend_follows_weight_changes():
    pipe = make_pipe()
    pipe.set_backend("fast")
    image = photo()
    before = arr(pipe(image, deterministic=True).images[0])
    with torch.no_grad():
        pipe.generator.up_blocks[0].conv.bias.add_(0.5)  # in place, as an optimizer step
    after = arr(pipe(image, deterministic=True).images[0])
    pipe.set_backend("torch")
    assert np.abs(after - before).max() > 10
    assert np.abs(after - arr(pipe(image, deterministic=True).images[0])).max() <= 1


def test_hd_fast_backend_matches_torch():
    pipe = hd_pipe()
    labels, inst = scene()
    expected = np.asarray(pipe(labels, inst, generator=seeded(0)).images[0]).astype(int)
    pipe.set_backend("fast")
    assert np.abs(np.asarray(pipe(labels, inst, generator=seeded(0)).images[0]).astype(int) - expected).max() <= 1


@pytest.mark.parametrize("batch_statistics", [True, False])
def test_onnxruntime_backend_matches_torch_in_both_modes(tmp_path, batch_statistics):
    pipe = pipe_sampling_with(batch_statistics)
    image = photo(150, 97)
    expected = arr(pipe(image, deterministic=True).images[0])
    expected_native = arr(pipe(image, deterministic=True, size_mode="native").images[0])
    sampled = [arr(pipe(image, generator=seeded(s), size_mode=m).images[0]) for s in (0, 1) for m in ("resize", "native")]
    torch.manual_seed(5)
    sampled_global = arr(pipe(image).images[0])
    pipe.set_backend("onnxruntime")
    assert np.abs(arr(pipe(image, deterministic=True).images[0]) - expected).max() <= 1
    assert np.abs(arr(pipe(image, deterministic=True, size_mode="native").images[0]) - expected_native).max() <= 1
    # sampled: batch or running statistics in the graph, the masks drawn as the torch dropout draws them
    # (same seeds, same image)
    got = [arr(pipe(image, generator=seeded(s), size_mode=m).images[0]) for s in (0, 1) for m in ("resize", "native")]
    assert all(np.abs(g - e).max() <= 1 for g, e in zip(got, sampled))
    assert np.abs(got[0] - got[2]).max() > 10  # and the seed matters
    torch.manual_seed(5)
    assert np.abs(arr(pipe(image).images[0]) - sampled_global).max() <= 1
    with pytest.raises(ValueError, match="backend must be one of"):
        pipe.set_backend("tensorrt")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="junk.onnx: could not be loaded by ONNX Runtime"):
        pipe.set_backend("onnxruntime", tmp_path / "junk.onnx")


def test_optimize_for_inference_on_a_cpu_uses_the_auto_backend():
    pipe = make_pipe().optimize_for_inference("cpu")
    assert pipe.backend == "auto" and pipe.device.type == "cpu" and pipe.generator.dtype == torch.float32
