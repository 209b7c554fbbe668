"""Model cards for pipeline folders and Hub repos, written with huggingface_hub's `ModelCard`,
`ModelCardData` and `EvalResult`, and the rules that keep local paths out of them."""

import json
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .hub_utils import HUB_ID

TASK = "image-to-image"
TASK_NAME = "Image-to-Image"
PIX2PIX_TAGS = ["pix2pix", "image-to-image", "p2p"]
PIX2PIXHD_TAGS = ["pix2pixhd", "image-to-image", "p2p"]


def card_data(tags: list[str], datasets: list[str] | None = None, license: str | None = None,
              model_name: str | None = None, eval_results: list[EvalResult] | None = None) -> ModelCardData:
    """A p2p card's metadata: a diffusers image-to-image pipeline, its tags, the Hub ids of its
    training data and its evaluation results (written as the Hub's `model-index`)."""
    return ModelCardData(library_name="diffusers", pipeline_tag=TASK, tags=tags, datasets=datasets or None,
                         license=license, model_name=model_name, eval_results=eval_results or None)


def make_card(data: ModelCardData, body: str) -> ModelCard:
    """A card from its metadata and its markdown body."""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")


def eval_results(scores: list[tuple[str, str, float]], dataset: str, split: str | None = None,
                 dataset_name: str | None = None) -> list[EvalResult]:
    """`EvalResult`s for (metric id, metric name, value) scores measured on `dataset` (a Hub id, or a
    plain name for local data), values rounded to 4 decimals."""
    return [EvalResult(task_type=TASK, task_name=TASK_NAME, dataset_type=dataset, dataset_name=dataset_name or dataset,
                       dataset_split=split, metric_type=metric, metric_name=name, metric_value=round(float(value), 4))
            for metric, name, value in scores]


def merge_eval_results(old: list[EvalResult] | None, new: list[EvalResult]) -> list[EvalResult]:
    """`old` with every metric that `new` measures again (same task, dataset, split) replaced."""
    measured = {(r.unique_identifier, r.metric_type) for r in new}
    return [r for r in old or [] if (r.unique_identifier, r.metric_type) not in measured] + new


def hub_dataset_id(dataset: str | os.PathLike) -> str | None:
    """`dataset` if it names a Hub dataset ("owner/name" or "name"), None if it is local data."""
    name = str(dataset)
    if Path(name).exists() or not HUB_ID.fullmatch(name):
        return None
    return name


def public_path(path: str | os.PathLike) -> str:
    """A path as a card may show it: relative ones inside the working folder as they are, others
    (absolute, `~`, or reaching up with `..`) by their last component, so no machine's layout shows."""
    text = str(path)
    if os.path.isabs(text) or text.startswith("~") or ".." in Path(text).parts:
        return Path(text).name
    return text


def public_command(argv: list[str]) -> list[str]:
    """A command line with `public_path` applied to every argument (and `--flag=value` value)."""
    out = []
    for token in argv:
        flag, eq, value = token.partition("=") if token.startswith("--") and "=" in token else ("", "", token)
        out.append(flag + eq + public_path(value) if value else token)
    return out


def updated_card(text: str, tags: list[str], repo_id: str | None = None) -> str:
    """An existing card as a pipeline writes it again: its body, license, datasets and evaluation
    results kept, the metadata p2p owns (library, task, `tags` added) brought up to date and, for a
    push to `repo_id`, its usage code loading that repo instead of the one it named."""
    card = ModelCard(text)
    card.data.library_name, card.data.pipeline_tag = "diffusers", TASK
    card.data.tags = list(card.data.tags or []) + [t for t in tags if t not in (card.data.tags or [])]
    text = str(card)
    named = set(re.findall(r'from_pretrained\("([^"]+)"', text))
    if repo_id and len(named) == 1:
        text = text.replace(f'from_pretrained("{named.pop()}"', f'from_pretrained("{repo_id}"')
    return text


def config_section(pipeline_config: dict, components: dict[str, tuple[str, dict]]) -> str:
    """The card's record of a pipeline's config: model_index.json's settings and each component's
    class and config, as JSON."""
    lines = ["## Config", "", f"Pipeline: `{json.dumps(pipeline_config, sort_keys=True)}`", ""]
    lines += [f"- `{name}`: `{cls}` `{json.dumps(config, sort_keys=True)}`"
              for name, (cls, config) in components.items()]
    return "\n".join(lines)


def usage(pipeline_class: str, repo: str, call: str, setup: str = "") -> str:
    """The card's usage snippet: load `repo` with p2p's pipeline class (or diffusers'
    `DiffusionPipeline` with the repo's code) and `call` it with a seeded generator."""
    return f"""```python
import torch
from PIL import Image
from p2p_models import {pipeline_class}

pipe = {pipeline_class}.from_pretrained("{repo}")
{setup}image = {call}
```

With diffusers' own loader: `DiffusionPipeline.from_pretrained("{repo}", trust_remote_code=True)`."""


def pix2pix_card(repo: str, size: str, direction: str, color_space: str, generator: str, config: str) -> ModelCard:
    """The card `Pix2PixPipeline.save_pretrained` / `push_to_hub` write for a pipeline that has none:
    titled by its generator, size and direction, with its `config` section."""
    data_in = "a grey (or colour) photo" if color_space == "lab" else "an image"
    body = f"""# pix2pix {generator}, {size}, {direction}

A pix2pix pipeline (Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks",
CVPR 2017) in the diffusers layout: `model_index.json` plus a `generator/` folder (`UNetGenerator`,
safetensors).

{usage("Pix2PixPipeline", repo, 'pipe(Image.open("input.png"), generator=torch.Generator().manual_seed(0)).images[0]')}

Input: {data_in} of any size. Working size {size} (width x height), direction {direction}, colour space {color_space},
generator: {generator}.

{config}
"""
    return make_card(card_data(PIX2PIX_TAGS), body)


def pix2pixhd_card(repo: str, size: str, generator: str, classes: int, styles: bool, config: str) -> ModelCard:
    """The card `Pix2PixHDPipeline.save_pretrained` / `push_to_hub` write for a pipeline that has none:
    titled by its generator, classes and size, with its `config` section."""
    setup = 'label_map = Image.open("labels.png")  # class ids, or the colours of the pipeline\'s palette\n'
    style = ", with a feature encoder and a style bank for per-class and per-instance styles" if styles else ""
    body = f"""# pix2pixHD {generator}, {classes} classes, {size}

A pix2pixHD pipeline (Wang et al., "High-Resolution Image Synthesis and Semantic Manipulation with
Conditional GANs", CVPR 2018) in the diffusers layout: a semantic label map (and optionally an
instance map, `instance_map=`) -> photo.

{usage("Pix2PixHDPipeline", repo, "pipe(label_map, generator=torch.Generator().manual_seed(0)).images[0]", setup)}

Generator `{generator}`{style}; {classes} label classes; working size {size} (width x height).

{config}
"""
    return make_card(card_data(PIX2PIXHD_TAGS), body)
