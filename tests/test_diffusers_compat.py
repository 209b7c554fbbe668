"""The pipelines as diffusers users load and call them: `DiffusionPipeline.from_pretrained(...,
trust_remote_code=True)` on folders and Hub repos, our own loader, `generator` / `output_type` /
`return_dict`, batched inputs of every kind, the progress bar."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, git_commit_folder, run_python, seeded
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils import dynamic_modules_utils
from PIL import Image
from test_pix2pixhd import hd_pipe, scene

from p2p_models import Pix2PixHDPipeline, Pix2PixPipeline, UNetGenerator
from p2p_models.pipelines import P2PPipeline
from p2p_models.pipelines.hub_utils import write_loader_code

SHIPPED = ["facades", "maps_aerial2map", "maps_map2aerial", "colorization", "camvid_hd"]


@pytest.fixture(autouse=True)
def modules_cache(monkeypatch, tmp_path):
    """diffusers copies a folder's pipeline code into HF_MODULES_CACHE before importing it: a private one."""
    monkeypatch.setattr(dynamic_modules_utils, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))


def tiny_pipe():
    torch.manual_seed(0)
    return Pix2PixPipeline(generator=UNetGenerator(num_downs=6, ngf=8), image_size=64)  # 6: has dropout


def photo(width=40, height=30, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def street():
    """CamVid ids (Sky, Building, Road, a Car), 96x128."""
    labels = np.zeros((96, 128), np.int64)
    labels[30:60] = 1
    labels[60:] = 3
    labels[64:84, 20:60] = 8
    return labels


def shipped_input(name):
    if name == "facades":  # a label map: the facades pipeline refuses photos
        return Image.open(ROOT / "examples" / "facades" / "103.png").convert("RGB")
    return street() if name == "camvid_hd" else photo(64, 48)


@pytest.mark.parametrize("name", SHIPPED)
def test_diffusion_pipeline_loads_the_shipped_folders_as_our_loader_does(name):
    folder = ROOT / "pretrained" / name
    class_name = json.loads((folder / "model_index.json").read_text())["_class_name"][1]
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    ours = P2PPipeline.from_pretrained(folder)
    assert type(pipe) is type(ours) and type(ours).__name__ == class_name
    assert type(pipe).__module__.startswith("p2p_models.")  # the installed class, not a copy
    assert type(pipe.generator) is type(ours.generator) and not pipe.generator.training
    a = pipe(shipped_input(name), generator=seeded(0), output_type="np").images
    b = ours(shipped_input(name), generator=seeded(0), output_type="np").images
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_loader_files_are_what_save_pretrained_writes(name, tmp_path):
    """The shipped folders' pipeline_p2p.py and <component>/<library>.py are remote code diffusers runs:
    a change to what `save_pretrained` writes must be written into them too."""
    folder = ROOT / "pretrained" / name
    shutil.copy(folder / "model_index.json", tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "_class_name": index["_class_name"][1]}))
    shipped = sorted(p.relative_to(folder) for p in folder.rglob("*.py"))
    for component in {p.parent for p in shipped if p.parent.name}:
        (tmp_path / component).mkdir()
    write_loader_code(tmp_path)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py")) == shipped
    for path in shipped:
        assert (tmp_path / path).read_text() == (folder / path).read_text(), path
    assert json.loads((tmp_path / "model_index.json").read_text()) == index


def test_without_trust_remote_code_or_p2p_the_errors_say_what_to_do(monkeypatch):
    folder = ROOT / "pretrained" / "facades"
    with pytest.raises(ValueError, match="(?s)contains custom code in pipeline_p2p.py .*trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(folder)
    monkeypatch.setitem(sys.modules, "p2p_models", None)  # as if p2p were not installed
    with pytest.raises(ImportError, match="needs the p2p package .*installed"):
        DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)


def test_diffusion_pipeline_and_our_loader_over_the_hub(olah_hub, tmp_path):
    endpoint, repos = olah_hub
    for name in ("facades", "camvid_hd"):
        shutil.copytree(ROOT / "pretrained" / name, repos / "models" / "p2p-test" / name)
        git_commit_folder(repos / "models" / "p2p-test" / name)
    np.save(tmp_path / "street.npy", street())
    # olah answers repo info only for an explicit revision (the Hub also without one).
    code = (
        "import numpy as np, torch\n"
        "from diffusers import DiffusionPipeline\n"
        "from PIL import Image\n"
        "from p2p_models.pipelines import P2PPipeline\n"
        "inputs = {'facades': Image.new('RGB', (64, 48), (200, 40, 90)), 'camvid_hd': np.load('street.npy')}\n"
        "for name, x in inputs.items():\n"
        "    repo = f'p2p-test/{name}'\n"
        "    pipe = DiffusionPipeline.from_pretrained(repo, trust_remote_code=True, revision='main')\n"
        "    ours = P2PPipeline.from_pretrained(repo, revision='main')\n"
        "    assert type(pipe) is type(ours), (type(pipe), type(ours))\n"
        "    a, b = (p(x, generator=torch.Generator().manual_seed(1), output_type='np').images for p in (pipe, ours))\n"
        "    assert np.array_equal(a, b)\n"
        "    print(name, type(pipe).__name__)\n"
    )
    out = run_python(code, {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}, tmp_path)
    assert "facades Pix2PixPipeline" in out and "camvid_hd Pix2PixHDPipeline" in out


@pytest.mark.parametrize("cls", [P2PPipeline, Pix2PixPipeline, Pix2PixHDPipeline])
def test_our_loaders_return_the_class_the_folder_names(cls, tmp_path):
    assert type(cls.from_pretrained(ROOT / "pretrained" / "facades")) is Pix2PixPipeline
    assert type(cls.from_pretrained(ROOT / "pretrained" / "camvid_hd")) is Pix2PixHDPipeline
    tiny_pipe().save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "_class_name": "Pix2PixPipeline"}))
    assert type(cls.from_pretrained(tmp_path)) is Pix2PixPipeline  # the plain string form too
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="names 'StableDiffusionPipeline', which is not a p2p pipeline"):
        cls.from_pretrained(tmp_path)


def test_a_subclass_of_the_folders_class_loads_as_itself(tmp_path):
    class MyPipeline(Pix2PixPipeline):
        pass

    tiny_pipe().save_pretrained(tmp_path)
    assert type(MyPipeline.from_pretrained(tmp_path)) is MyPipeline


@pytest.mark.parametrize("make", [tiny_pipe, hd_pipe])
def test_save_pretrained_round_trips_through_both_loaders(make, tmp_path):
    pipe = make()
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_p2p", type(pipe).__name__]
    x = photo() if make is tiny_pipe else scene()[0]
    expected = pipe(x, generator=seeded(3), output_type="np").images
    for loaded in (P2PPipeline.from_pretrained(tmp_path), DiffusionPipeline.from_pretrained(tmp_path,
                                                                                           trust_remote_code=True)):
        assert type(loaded) is type(pipe)
        assert np.array_equal(loaded(x, generator=seeded(3), output_type="np").images, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_dtype_and_to_round_trip(dtype, tmp_path):
    hd_pipe().save_pretrained(tmp_path)
    for loader, kwargs in ((P2PPipeline.from_pretrained, {}),
                           (DiffusionPipeline.from_pretrained, {"trust_remote_code": True})):
        pipe = loader(tmp_path, torch_dtype=dtype, **kwargs)
        assert {p.dtype for c in (pipe.generator, pipe.encoder, pipe.style_bank) for p in c.parameters()} == {dtype}
        pipe.to("cpu", torch.float32)
        assert pipe.dtype == torch.float32 and pipe.device.type == "cpu"
        reference = P2PPipeline.from_pretrained(tmp_path)
        for p, q in zip(pipe.generator.parameters(), reference.generator.parameters()):
            assert torch.equal(p, q.to(dtype).float())  # the dtype's rounding, then float32 again
        labels, inst = scene()
        assert pipe(labels, inst, generator=seeded(0)).images[0].size == (256, 64)


def test_output_types_agree_and_return_dict():
    pipe = tiny_pipe()
    images = [photo(40, 30), photo(40, 30, seed=1)]
    pil = pipe(images, generator=[seeded(s) for s in (1, 2)], keep_size=False).images
    out = pipe(images, generator=[seeded(s) for s in (1, 2)], keep_size=False, output_type="np")
    assert isinstance(out, ImagePipelineOutput)
    arr = out.images
    assert arr.shape == (2, 64, 64, 3) and arr.dtype == np.float32 and 0 <= arr.min() and arr.max() <= 1
    assert np.array_equal(np.round(arr * 255), np.stack([np.asarray(im) for im in pil]))  # no resize: exact
    (pt,) = pipe(images, generator=[seeded(s) for s in (1, 2)], keep_size=False, output_type="pt", return_dict=False)
    assert pt.shape == (2, 3, 64, 64) and pt.dtype == torch.float32 and pt.device.type == "cpu"
    assert np.array_equal(pt.permute(0, 2, 3, 1).numpy(), arr)
    # resized back to the inputs' sizes: PIL in 8 bits, np / pt in float32, within rounding
    kept = pipe(images, generator=[seeded(s) for s in (1, 2)], output_type="np").images
    assert kept.shape == (2, 30, 40, 3)
    pil = pipe(images, generator=[seeded(s) for s in (1, 2)]).images
    assert np.abs(kept * 255 - np.stack([np.asarray(im) for im in pil])).max() <= 2
    mixed = pipe([photo(40, 30), photo(20, 50)], generator=[seeded(s) for s in (1, 2)], output_type="pt").images
    assert isinstance(mixed, list) and [t.shape for t in mixed] == [(3, 30, 40), (3, 50, 20)]
    grey = Pix2PixPipeline(generator=UNetGenerator(1, 1, num_downs=5, ngf=8), image_size=32)
    assert grey(photo(), generator=seeded(0), output_type="np").images.shape == (1, 30, 40, 1)
    hd = hd_pipe()
    labels, inst = scene()
    hd_pil = hd(labels, inst, generator=seeded(0)).images[0]
    hd_np = hd(labels, inst, generator=seeded(0), output_type="np").images
    (hd_pt,) = hd(labels, inst, generator=seeded(0), output_type="pt", return_dict=False)
    assert hd_np.shape == (1, 64, 256, 3) and hd_pt.shape == (1, 3, 64, 256)
    assert np.array_equal(np.round(hd_np[0] * 255), np.asarray(hd_pil))
    assert np.array_equal(hd_pt.permute(0, 2, 3, 1).numpy(), hd_np)
    for call in (lambda: pipe(photo(), output_type="latent"), lambda: hd(labels, output_type="PIL")):
        with pytest.raises(ValueError, match="output_type must be one of \\('pil', 'np', 'pt'\\)"):
            call()


def test_batched_inputs_of_every_kind_equal_single_calls():
    pipe = tiny_pipe()
    images = [photo(40, 30, seed=i) for i in range(3)]
    singles = np.stack([pipe(im, generator=seeded(s), output_type="np").images[0] for im, s in zip(images, [4, 5, 6])])
    batch = np.stack([np.asarray(im) for im in images])  # (B, H, W, C) uint8
    tensor = torch.from_numpy(batch).permute(0, 3, 1, 2) / 255  # (B, C, H, W) in [0, 1]
    for inputs in (images, batch, batch / 255.0, batch.astype(np.float32) / 255, tensor, list(tensor),
                   [images[0], batch[1], tensor[2]]):
        assert np.array_equal(pipe(inputs, generator=[seeded(s) for s in (4, 5, 6)], output_type="np").images, singles)
    hd = hd_pipe()
    labels, inst = scene()
    flipped_labels, flipped_inst = labels[:, ::-1].copy(), inst[:, ::-1].copy()
    singles = np.concatenate([hd(a, b, generator=seeded(s), output_type="np").images
                              for a, b, s in ((labels, inst, 1), (flipped_labels, flipped_inst, 2))])
    stacked_labels, stacked_inst = np.stack([labels, flipped_labels]), np.stack([inst, flipped_inst])
    for maps in ((stacked_labels, stacked_inst), ([labels, flipped_labels], [inst, flipped_inst]),
                 (torch.from_numpy(stacked_labels)[:, None], torch.from_numpy(stacked_inst)),
                 ([Image.fromarray(labels.astype(np.uint8)), torch.from_numpy(flipped_labels)], stacked_inst)):
        assert np.array_equal(hd(*maps, generator=[seeded(s) for s in (1, 2)], output_type="np").images, singles)
    with pytest.raises(ValueError, match="instance_map: got 1 instance maps for 2 label maps"):
        hd(stacked_labels, inst)
    with pytest.raises(ValueError, match="label_map: a tensor must hold integer ids, got torch.float32"):
        hd(torch.zeros(64, 256))


def test_generators_seeds_and_their_errors():
    pipe = tiny_pipe()
    image = photo()
    a = pipe(image, generator=seeded(7)).images[0]
    assert np.array_equal(np.asarray(a), np.asarray(pipe(image, generator=seeded(7)).images[0]))
    reused = seeded(7)
    first, second = (np.asarray(pipe(image, generator=reused).images[0]).astype(int) for _ in range(2))
    assert np.array_equal(first, np.asarray(a)) and np.abs(first - second).mean() > 1  # a new sample
    shared = pipe([image, image], generator=seeded(7), output_type="np").images  # drawn in turn
    assert np.array_equal(shared[0], pipe(image, generator=seeded(7), output_type="np").images[0])
    assert not np.array_equal(shared[0], shared[1])
    listed = pipe([image, image], generator=[seeded(7), seeded(7)], output_type="np").images
    assert np.array_equal(listed[0], listed[1])
    hd = hd_pipe()
    labels, inst = scene()
    h = hd(labels, inst, generator=seeded(3), output_type="np").images
    assert np.array_equal(h, hd(labels, inst, generator=seeded(3), output_type="np").images)
    assert not all(np.array_equal(h, hd(labels, inst, generator=seeded(s), output_type="np").images)
                   for s in range(4, 8))
    for call in (pipe, lambda x, **k: hd(labels, **k)):
        with pytest.raises(ValueError, match="pass generator or seed, not both"):
            call(image, generator=seeded(1), seed=1)
        with pytest.raises(ValueError, match="generator: got a list of 3 generators for 1 images"):
            call(image, generator=[seeded(1)] * 3)
        with pytest.raises(TypeError, match="generator: expected a torch.Generator or a list of them, got int"):
            call(image, generator=5)


def test_the_progress_bar_runs_over_the_images_and_can_be_disabled(capsys):
    pipe = tiny_pipe()
    pipe([photo(), photo(seed=1)], generator=[seeded(s) for s in (0, 1)])
    assert "2/2" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    pipe([photo(), photo(seed=1)], generator=[seeded(s) for s in (0, 1)])
    assert capsys.readouterr().err == ""
    hd = hd_pipe()
    hd([scene()[0]] * 3, generator=seeded(0))
    assert "3/3" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["facades", "camvid_hd"])
def test_diffusers_step_arguments_and_offloading_say_what_they_do(name):
    """A one-step GAN pipeline: num_inference_steps is ignored with a warning (same image), a step
    callback and CPU offloading are refused with the reason (README: Use a pipeline)."""
    pipe = P2PPipeline.from_pretrained(ROOT / "pretrained" / name)
    pipe.set_progress_bar_config(disable=True)
    example = "facades/103.png" if name == "facades" else "hd/camvid_0016E5_07997.png"
    image = Image.open(ROOT / "examples" / example)
    expected = np.asarray(pipe(image, generator=torch.Generator().manual_seed(0)).images[0])
    with pytest.warns(UserWarning, match="num_inference_steps=50 is ignored: a GAN generator makes the image in one"):
        out = pipe(image, generator=torch.Generator().manual_seed(0), num_inference_steps=50).images[0]
    assert np.array_equal(np.asarray(out), expected)
    with pytest.raises(ValueError, match="callback_on_step_end: a GAN pipeline has no denoising steps"):
        pipe(image, callback_on_step_end=lambda *args: {})
    for offload in (pipe.enable_model_cpu_offload, pipe.enable_sequential_cpu_offload):
        with pytest.raises(NotImplementedError, match="offloading frees no accelerator memory; use pipe.to"):
            offload()


def test_loading_and_casting_print_no_float32_modules_warning(tmp_path):
    """diffusers' ModelMixin.to warned "modules ... should be kept in float32: []" on every cast to a dtype
    (the app's and the CLI's loads); in a fresh process, as a user sees it."""
    code = (
        "import torch\n"
        "from p2p_models import Pix2PixHDPipeline, Pix2PixPipeline\n"
        f"Pix2PixPipeline.from_pretrained({str(ROOT / 'pretrained' / 'facades')!r}).optimize_for_inference()\n"
        f"hd = Pix2PixHDPipeline.from_pretrained({str(ROOT / 'pretrained' / 'camvid_hd')!r},\n"
        "                                        torch_dtype=torch.float32)\n"
        "hd.to('cpu', torch.float16)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kept in float32" not in done.stderr, done.stderr[-3000:]
