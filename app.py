"""p2p demo: `python app.py`. Tabs, models and limits come from spaces.yaml."""

import os
import time
from functools import lru_cache
from pathlib import Path

import gradio as gr
import yaml
from PIL import Image

from p2p_models import Pix2PixPipeline

ROOT = Path(__file__).resolve().parent
CONFIG = yaml.safe_load((ROOT / "spaces.yaml").read_text())


def offline() -> bool:
    return os.environ.get("P2P_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"


@lru_cache(maxsize=None)
def load_pipeline(tab: str) -> Pix2PixPipeline:
    """The tab's pipeline: from the Hub, else from its local folder. Loaded once, on first use."""
    spec = CONFIG["tabs"][tab]
    local = ROOT / spec["local"]
    errors = []
    if not offline():
        try:
            return Pix2PixPipeline.from_pretrained(spec["hub_id"])
        except Exception as e:  # unreachable Hub, missing repo: fall back to the local copy
            errors.append(f"{spec['hub_id']}: {type(e).__name__}")
    if (local / "model_index.json").exists():
        return Pix2PixPipeline.from_pretrained(local)
    errors.append(f"{spec['local']}: no pipeline folder")
    raise gr.Error(f"No weights for '{spec['title']}' ({'; '.join(errors)}).")


def translate(tab: str, image: Image.Image | None, seed: float, deterministic: bool):
    if image is None:
        raise gr.Error("Upload an image first.")
    limit = CONFIG["tabs"][tab]["max_side"]
    if max(image.size) > limit:
        raise gr.Error(f"The image is {image.width}x{image.height}; the largest side may be {limit} pixels.")
    pipe = load_pipeline(tab)
    start = time.perf_counter()
    try:
        out = pipe(image, seed=int(seed), deterministic=deterministic)
    except (TypeError, ValueError) as e:
        raise gr.Error(str(e))
    return out, f"{(time.perf_counter() - start) * 1000:.0f} ms on {pipe.device}"


def build_tab(tab: str, spec: dict) -> None:
    with gr.Tab(spec["title"]):
        gr.Markdown(spec["description"])
        with gr.Row():
            source = gr.Image(label="Input", type="pil", image_mode=None)
            result = gr.Image(label="Output", type="pil", format="png")
        with gr.Row():
            seed = gr.Number(label="Seed", value=0, precision=0)
            deterministic = gr.Checkbox(label="Deterministic (dropout off)", value=False)
        with gr.Row():
            run = gr.Button("Translate", variant="primary")
            again = gr.Button("Sample again")
        timing = gr.Markdown()
        inputs = [source, seed, deterministic]

        def run_tab(image, seed_value, deterministic_value):
            return translate(tab, image, seed_value, deterministic_value)

        run.click(run_tab, inputs, [result, timing], api_name=f"{tab}_translate")
        again.click(lambda s: int(s) + 1, seed, seed, api_name=False).then(run_tab, inputs, [result, timing],
                                                                          api_name=False)
        if spec["examples"]:
            gr.Examples(spec["examples"], inputs=[source])


def build_demo() -> gr.Blocks:
    with gr.Blocks(title=CONFIG["space"]["title"]) as demo:
        gr.Markdown(f"# {CONFIG['space']['title']}: {CONFIG['space']['short_description']}")
        for tab, spec in CONFIG["tabs"].items():
            build_tab(tab, spec)
    return demo


if __name__ == "__main__":
    build_demo().launch(show_error=True)
