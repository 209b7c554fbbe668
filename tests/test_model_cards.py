"""Model cards: the shipped ones, the ones pipelines, training and evaluation write, read back with
huggingface_hub's `ModelCard` (diffusers metadata, Hub dataset ids, model-index, no local paths)."""

import json
import os
import re
import stat
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, environment, run_python
from huggingface_hub import EvalResult, ModelCard
from PIL import Image

from p2p_models import (
    GlobalGenerator,
    MultiscaleDiscriminator,
    P2PPipeline,
    Pix2PixHDPipeline,
    Pix2PixPipeline,
    UNetGenerator,
)
from p2p_models.pipelines.model_cards import hub_dataset_id, public_command, public_path
from train import evaluate, train_pix2pix, train_pix2pixhd

PRETRAINED = ROOT / "pretrained"
PIPELINES = sorted(p.parent for p in PRETRAINED.glob("*/model_index.json"))
LOCAL = re.compile(r"/work/|\.\./|/home/|/tmp/|/private/|[A-Z]:\\")
FACADES = ROOT / "tests" / "fixtures" / "facades"
SEEDED_CALL = "generator=torch.Generator().manual_seed(0)).images[0]"


def check_card(card: ModelCard, tag: str) -> None:
    """The metadata every p2p card carries, and nothing local in it."""
    data = card.data
    assert data.library_name == "diffusers" and data.pipeline_tag == "image-to-image"
    assert {tag, "image-to-image", "p2p"} <= set(data.tags)
    for dataset in data.datasets or []:
        assert hub_dataset_id(dataset) == dataset and not dataset.startswith((".", "/")), dataset
    for result in data.eval_results or []:
        assert isinstance(result, EvalResult) and result.task_type == "image-to-image"
        assert not LOCAL.search(result.dataset_type) and not result.dataset_type.startswith((".", "/"))
    assert not LOCAL.search(str(card)), LOCAL.search(str(card))
    assert SEEDED_CALL in card.text and "trust_remote_code=True" in card.text


def test_every_shipped_folder_is_free_of_local_paths():
    assert len(PIPELINES) == 5
    texts = [f for f in PRETRAINED.rglob("*") if f.suffix in (".md", ".json")]
    assert {f.name for f in texts} >= {"README.md", "model_index.json", "config.json", "segmenter.json"}
    for f in texts:
        found = LOCAL.search(f.read_text())
        assert not found, f"{f.relative_to(ROOT)}: local path {found.group()!r}"


@pytest.mark.parametrize("folder", PIPELINES, ids=lambda p: p.name)
def test_shipped_card_metadata_and_eval_results(folder):
    card = ModelCard.load(folder / "README.md")
    hd = json.loads((folder / "model_index.json").read_text())["_class_name"][-1] == "Pix2PixHDPipeline"
    check_card(card, "pix2pixhd" if hd else "pix2pix")
    results = card.data.eval_results
    assert card.data.model_name and len(results) >= 4
    assert {r.metric_type for r in results} >= {"l1", "psnr", "ssim", "fid"}
    # every number in the model-index is the one in the card's Evaluation table
    evaluation = card.text.split("\n## Evaluation\n")[1]
    for r in results:
        assert f"| {r.metric_name} | {r.metric_value:.4f} |" in evaluation, r.metric_type
        if card.data.datasets:
            assert r.dataset_type in card.data.datasets


EXAMPLES = ROOT / "examples"
CARD_INPUTS = {  # the inputs each shipped card's snippet names, from the demo's examples
    "colorization": {"photo": EXAMPLES / "colorization" / "101085.jpg"},
    "maps_aerial2map": {"aerial_photo": EXAMPLES / "maps" / "aerial_100.jpg"},
    "maps_map2aerial": {"map_tile": EXAMPLES / "maps" / "map_1002.png"},
    "facades": {"image": EXAMPLES / "facades" / "103.png"},
    "camvid_hd": {"label_map": EXAMPLES / "hd" / "camvid_0016E5_07997.png"},
}


@pytest.mark.parametrize("folder", PIPELINES, ids=lambda p: p.name)
def test_shipped_card_snippets_run(folder):
    """Each card's code, as a Hub user would run it, with its Hub id pointing at the shipped folder."""
    text = (folder / "README.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    repos = set(re.findall(r'from_pretrained\("([^"]+)"', text))
    (repo,) = repos
    assert repo.startswith("p2p-models/"), repo
    code = code.replace(repo, str(folder))
    scope = {name: Image.open(path).convert("RGB") for name, path in CARD_INPUTS[folder.name].items()}
    exec(code, scope)
    outputs = set(re.findall(r"^(\w+) = pipe\(", code, re.M))
    (given,) = [scope[name] for name in CARD_INPUTS[folder.name]]
    assert outputs
    for name in outputs:
        assert isinstance(scope[name], Image.Image) and scope[name].size == given.size, name


def test_shipped_cards_name_the_hub_datasets_they_come_from():
    datasets = {f.name: ModelCard.load(f / "README.md").data.datasets for f in PIPELINES}
    assert datasets["facades"] == ["huggan/facades"]
    assert datasets["maps_aerial2map"] == datasets["maps_map2aerial"] == ["huggan/maps"]
    assert ModelCard.load(PRETRAINED / "camvid_hd" / "README.md").data.license == "cc-by-nc-4.0"


@pytest.mark.parametrize("card", sorted(PRETRAINED.glob("*/README.md")), ids=lambda p: p.parent.name)
def test_every_shipped_card_names_its_license_and_its_datasets_terms(card):
    """Pipelines and segmenters alike: a license in the metadata, and a section naming the license and
    the terms of the data the card says it was trained on (its `datasets/<name>` and Hub ids)."""
    loaded = ModelCard.load(card)
    assert loaded.data.license, "no license in the metadata block"
    section = loaded.text.split("\n## License and terms\n")[1]
    assert loaded.data.license.replace("-", " ").upper() in section.replace("-", " ").upper()  # cc-by-nc-4.0
    assert "terms" in section
    names = {"facades": "Facade", "maps": "maps", "photos": "BSDS500", "camvid": "CamVid"}
    for source in set(re.findall(r"`datasets/(\w+)`", loaded.text)):
        assert names[source] in section, source
    for hub_id in loaded.data.datasets or []:
        assert f"`{hub_id}`" in section, hub_id


def test_pipelines_write_cards_on_save(tmp_path):
    torch.manual_seed(0)
    pix2pix = Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=8), image_size=[32, 64], direction="BtoA")
    pix2pix.save_pretrained(tmp_path / "p")
    card = ModelCard.load(tmp_path / "p" / "README.md")
    check_card(card, "pix2pix")
    assert "Working size 64x32" in card.text and 'from_pretrained("path/to/pipeline")' in card.text
    assert 'from_pretrained("someone/model")' in ModelCard(pix2pix.model_card("someone/model")).text
    # titled and recorded by its config, not by a placeholder path
    title = card.text.strip().splitlines()[0]
    assert title.startswith("# pix2pix UNetGenerator(num_downs=5, ngf=8") and "64x32" in title and "BtoA" in title
    generator = json.loads((tmp_path / "p" / "generator" / "config.json").read_text())
    recorded = json.loads(re.search(r"`generator`: `UNetGenerator` `(.*)`", card.text).group(1))
    assert recorded == {k: v for k, v in generator.items() if not k.startswith("_")}
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    settings = json.loads(re.search(r"Pipeline: `(.*)`", card.text).group(1))
    assert settings == {k: v for k, v in index.items() if not k.startswith("_") and k != "generator"}

    hd = Pix2PixHDPipeline(generator=GlobalGenerator(36, 3, ngf=4, n_downsampling=2, n_blocks=1), label_nc=35,
                           image_size=[64, 128])
    hd.save_pretrained(tmp_path / "hd")
    card = ModelCard.load(tmp_path / "hd" / "README.md")
    check_card(card, "pix2pixhd")
    assert "`GlobalGenerator`; 35 label classes; working size 128x64" in card.text
    assert card.text.strip().startswith("# pix2pixHD GlobalGenerator, 35 classes, 128x64")
    assert '"label_nc": 35' in card.text and "`generator`: `GlobalGenerator` `{" in card.text


@pytest.mark.parametrize("folder", PIPELINES, ids=lambda p: p.name)
def test_a_loaded_pipeline_keeps_its_card_on_save(folder, tmp_path):
    """Re-saving a shipped pipeline writes its own card again (evaluation results, datasets, license,
    body), not a generic one; the weights are as readable as the other files."""
    shipped = (folder / "README.md").read_text()
    P2PPipeline.from_pretrained(folder).save_pretrained(tmp_path / "saved")
    saved = (tmp_path / "saved" / "README.md").read_text()
    assert saved == shipped
    mode = 0o666 & ~_umask()
    for f in (tmp_path / "saved").rglob("*"):
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == mode, f"{f.relative_to(tmp_path)}: {oct(f.stat().st_mode)}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_push_to_hub_publishes_the_loaded_card(upload_hub, tmp_path):
    endpoint, uploaded = upload_hub
    code = (f"from p2p_models import P2PPipeline\n"
            f"P2PPipeline.from_pretrained({str(PRETRAINED / 'facades')!r}).push_to_hub('someone/my-facades')\n")
    run_python(code, {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_test"}, cwd=tmp_path)
    card = ModelCard.load(uploaded / "someone" / "my-facades" / "README.md")
    shipped = ModelCard.load(PRETRAINED / "facades" / "README.md")
    check_card(card, "pix2pix")
    assert card.data.datasets == shipped.data.datasets and card.data.eval_results == shipped.data.eval_results
    assert card.text.split("```")[0] == shipped.text.split("```")[0]  # title and description
    assert set(re.findall(r'from_pretrained\("([^"]+)"', card.text)) == {"someone/my-facades"}


@pytest.mark.parametrize("folder", PIPELINES, ids=lambda p: p.name)
def test_a_loaded_and_saved_pipeline_names_no_local_path(folder, tmp_path):
    """from_pretrained records the folder in `_name_or_path`; save_pretrained leaves it out."""
    pipe = P2PPipeline.from_pretrained(folder)
    assert pipe.config._name_or_path == str(folder)
    pipe.save_pretrained(tmp_path / "saved")
    for f in (tmp_path / "saved").rglob("*.json"):
        assert str(folder) not in f.read_text() and "_name_or_path" not in json.loads(f.read_text()), f


def test_public_paths_hide_the_machine_layout():
    assert public_path("/tmp/x/run") == "run" and public_path("../shared/datasets/facades") == "facades"
    assert public_path("runs/facades") == "runs/facades" and public_path("huggan/facades") == "huggan/facades"
    assert public_command(["--dataset=/data/maps", "--output_dir", "/home/me/out", "--seed", "0"]) == [
        "--dataset=maps", "--output_dir", "out", "--seed", "0"]
    assert hub_dataset_id("huggan/facades") == "huggan/facades" and hub_dataset_id("beans") == "beans"
    for local in (str(FACADES), "../shared/datasets/facades", "/data/x", "a/b/c", "./facades"):
        assert hub_dataset_id(local) is None, local


def card_args(script, *extra):
    args = script.parse_args(["--dataset", *extra, "--output_dir", "/tmp/somewhere/facades-run"])
    args.mixed_precision, args.memory_format = "no", torch.contiguous_format  # as make_accelerator resolves them
    return args


@pytest.mark.parametrize("dataset, hub_ids", [("huggan/facades", ["huggan/facades"]), (str(FACADES), None)])
def test_training_cards(monkeypatch, dataset, hub_ids):

    monkeypatch.setattr(sys, "argv", ["train.py", "--dataset", dataset, "--output_dir", "/tmp/somewhere/facades-run"])
    metrics = {"steps": 4, "steps_this_run": 4, "seconds_per_step": 0.1, "planned_steps": 4, "num_samples": 3,
               "num_skipped": 0, "l1": 0.25, "psnr": 11.5, "ssim": 0.125}
    torch.manual_seed(0)
    pipe = Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=8), image_size=32)
    text = train_pix2pix.model_card(card_args(train_pix2pix, dataset), "9 training examples, layout aligned",
                                    "1 example held out", pipe, {}, 4, 2.0, 1.0, 1, metrics)
    hd = Pix2PixHDPipeline(generator=GlobalGenerator(36, 3, ngf=4, n_downsampling=2, n_blocks=1), label_nc=35,
                           image_size=[64, 128])
    hd_text = train_pix2pixhd.model_card(card_args(train_pix2pixhd, dataset, "--no_vgg_loss"), hd,
                                         {"discriminator": MultiscaleDiscriminator(36)},
                                         "1 example held out", 9, 4, 2.0, 1.0, 1, metrics)
    for text, tag in ((text, "pix2pix"), (hd_text, "pix2pixhd")):
        card = ModelCard(text)
        check_card(card, tag)
        assert card.data.datasets == hub_ids and card.data.model_name == "facades-run"
        assert {(r.metric_type, r.metric_value, r.dataset_split) for r in card.data.eval_results} == {
            ("l1", 0.25, "validation"), ("psnr", 11.5, "validation"), ("ssim", 0.125, "validation")}
        assert {r.dataset_type for r in card.data.eval_results} == {hub_ids[0] if hub_ids else "facades"}
        assert "--output_dir facades-run" in card.text and "ran 4 steps = 2.00 epochs" in card.text

    unmeasured = train_pix2pix.model_card(card_args(train_pix2pix, dataset), "", "", pipe, {}, 4, 2.0, 1.0, 1,
                                          {"steps": 4, "steps_this_run": 4, "seconds_per_step": 0.1,
                                           "planned_steps": 4})
    assert ModelCard(unmeasured).data.eval_results is None and "Not measured" in unmeasured


def test_a_trained_pipeline_card(tmp_path):
    """A real (tiny) training run's card: absolute data and output paths stay out of it."""
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(ROOT / "train" / "train_pix2pix.py"), "--dataset", str(FACADES), "--direction", "BtoA",
         "--load_size", "36", "--crop_size", "32", "--num_downs", "5", "--ngf", "4", "--ndf", "4",
         "--max_train_steps", "2", "--max_validation_samples", "1", "--output_dir", str(out)],
        env=environment(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    card = ModelCard.load(out / "README.md")
    check_card(card, "pix2pix")
    assert card.data.datasets is None and {r.dataset_type for r in card.data.eval_results} == {"facades"}
    assert "--dataset facades --direction BtoA" in card.text and "--output_dir run" in card.text
    metrics = json.loads((out / "validation_metrics.json").read_text())
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["l1"] == round(metrics["l1"], 4)


def test_evaluation_results_merge_into_the_card(tmp_path):

    torch.manual_seed(0)
    folder = tmp_path / "model"
    Pix2PixPipeline(generator=UNetGenerator(num_downs=5, ngf=8), image_size=32).save_pretrained(folder)
    before = ModelCard.load(folder / "README.md")
    before.data.model_name = "mine"
    before.data.eval_results = [  # training's validation scores on the same data, and a score elsewhere
        EvalResult("image-to-image", "huggan/facades", "huggan/facades", "l1", 0.5, dataset_split="validation"),
        EvalResult("image-to-image", "huggan/facades", "huggan/facades", "psnr", 9.0, dataset_split="validation"),
        EvalResult("image-to-image", "huggan/maps", "huggan/maps", "l1", 0.75, dataset_split="validation")]
    before.text += ("\n## Evaluation\n\n`train/evaluate.py` on `old` (validation, 2 examples, 32x32):\n\n"
                    "| metric | value |\n|---|---:|\n| L1 | 0.9000 |\n\nA note.\n\n## License and terms\n\nOurs.\n")
    before.save(folder / "README.md")
    result = {"model": str(folder), "dataset": "huggan/facades", "split": "validation", "working_size": [32, 32],
              "metrics": {"l1": 0.25, "psnr": 12.0, "ssim": 0.5, "num_samples": 3}}
    for _ in range(2):  # a second run replaces the first's table and scores
        evaluate.update_model_card(folder / "README.md", result)
    card = ModelCard.load(folder / "README.md")
    check_card(card, "pix2pix")
    scores = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert scores == {("huggan/facades", "l1"): 0.25, ("huggan/facades", "psnr"): 12.0,
                      ("huggan/facades", "ssim"): 0.5, ("huggan/maps", "l1"): 0.75}
    assert card.data.model_name == "mine" and card.text.count("## Evaluation") == 1
    assert card.text.startswith(before.text.split("## Evaluation")[0]) and "| L1 | 0.2500 |" in card.text
    assert card.text.count("| metric | value |") == 1 and card.text.count("## License and terms\n\nOurs.\n") == 1
    assert "0.9000" not in card.text and card.text.count("A note.") == 1  # sections after the table are kept
    assert card.text.index("| L1 | 0.2500 |") < card.text.index("A note.") < card.text.index("## License and terms")

    result |= {"dataset": str(FACADES), "model": str(tmp_path / "fresh")}
    evaluate.update_model_card(tmp_path / "fresh" / "README.md", result)  # no card yet: a new one
    card = ModelCard.load(tmp_path / "fresh" / "README.md")
    assert card.data.library_name == "diffusers" and card.data.model_name == "fresh"
    assert {r.dataset_type for r in card.data.eval_results} == {"facades"} and not LOCAL.search(str(card))
    # a local copy of a Hub dataset, named by its id: its scores replace that dataset's
    evaluate.update_model_card(folder / "README.md", result | {"model": str(folder), "card_dataset_id": "huggan/maps"})
    results = ModelCard.load(folder / "README.md").data.eval_results
    scores = {(r.dataset_type, r.metric_type): r.metric_value for r in results}
    assert scores[("huggan/maps", "l1")] == 0.25 and not any(d == "facades" for d, _ in scores)
