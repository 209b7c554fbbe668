"""Hub round trips over real HTTP: downloads from olah (a self-hosted Hub server), uploads to
tests/upload_server.py (olah takes no uploads; the real Hub can't be reached from here)."""

import json

import numpy as np
import torch
from conftest import git_commit_folder, run_python, seeded
from PIL import Image

from p2p_models import Pix2PixPipeline, UNetGenerator


def tiny_pipe():
    torch.manual_seed(0)
    return Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=8), image_size=32, direction="BtoA")


def test_from_pretrained_a_hub_id(olah_hub, tmp_path):
    endpoint, repos = olah_hub
    repo = repos / "models" / "p2p-test" / "facades-tiny"
    tiny_pipe().save_pretrained(repo)
    git_commit_folder(repo)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    image.save(tmp_path / "in.png")
    code = (
        "import torch\n"
        "from PIL import Image\n"
        "from p2p_models import Pix2PixPipeline\n"
        "pipe = Pix2PixPipeline.from_pretrained('p2p-test/facades-tiny')\n"
        "assert pipe.config._name_or_path == 'p2p-test/facades-tiny', pipe.config._name_or_path\n"
        "assert pipe.config.direction == 'BtoA' and not pipe.generator.training\n"
        "pipe(Image.open('in.png'), generator=torch.Generator().manual_seed(4)).images[0].save('out.png')\n"
    )
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    run_python(code, env, cwd=tmp_path)
    expected = tiny_pipe()(image, generator=seeded(4)).images[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(expected))
    # now cached: loads with the Hub switched off
    run_python(code, {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}, cwd=tmp_path)


def test_push_to_hub_uploads_what_save_pretrained_writes(upload_hub, tmp_path):
    endpoint, uploaded = upload_hub
    local = tmp_path / "local"
    tiny_pipe().save_pretrained(local)
    code = (
        "import torch\n"
        "from p2p_models import Pix2PixPipeline, UNetGenerator\n"
        "torch.manual_seed(0)\n"
        "pipe = Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=8), image_size=32, direction='BtoA')\n"
        "print(pipe.push_to_hub('someone/p2p-facades', commit_message='first'))\n"
    )
    out = run_python(code, {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_test"}, cwd=tmp_path)
    assert "someone/p2p-facades" in out
    repo = uploaded / "someone" / "p2p-facades"
    files = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert json.loads((uploaded / "someone" / "p2p-facades.commit.json").read_text())["summary"] == "first"
    for name in ("model_index.json", "generator/config.json", "generator/diffusion_pytorch_model.safetensors"):
        assert (repo / name).read_bytes() == (local / name).read_bytes(), name
    card = (repo / "README.md").read_text()
    assert card.startswith("---\n") and 'from_pretrained("someone/p2p-facades")' in card
    pulled = Pix2PixPipeline.from_pretrained(repo)
    image = Image.new("RGB", (30, 20), (200, 30, 90))
    expected = tiny_pipe()(image, generator=seeded(1)).images[0]
    assert np.array_equal(np.asarray(pulled(image, generator=seeded(1)).images[0]), np.asarray(expected))
