"""Model-card templates for pipeline folders and Hub repos."""

MODEL_CARD = """---
library_name: p2p
pipeline_tag: image-to-image
tags:
- pix2pix
- image-to-image
- p2p
---

# {name}

A pix2pix pipeline (Isola et al., "Image-to-Image Translation with Conditional Adversarial Networks",
CVPR 2017) in the p2p format: `model_index.json` plus a `generator/` folder
(`UNetGenerator`, safetensors).

```python
from PIL import Image
from p2p_models import Pix2PixPipeline

pipe = Pix2PixPipeline.from_pretrained("{repo}")
out = pipe(Image.open("input.png"), seed=0)
```

Working size {size}, direction {direction}, generator: {generator}.
"""


HD_MODEL_CARD = """---
library_name: p2p
pipeline_tag: image-to-image
tags:
- pix2pixhd
- image-to-image
- p2p
---

# {name}

A pix2pixHD pipeline (Wang et al., "High-Resolution Image Synthesis and Semantic Manipulation with
Conditional GANs", CVPR 2018) in the p2p format: {generator}, {classes} label classes.

```python
from p2p_models import Pix2PixHDPipeline

pipe = Pix2PixHDPipeline.from_pretrained("{repo}")
image = pipe(label_map, instance_map, seed=0)
```
"""
