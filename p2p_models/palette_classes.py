"""Rendered targets as classification: images drawn from a few flat colours (map tiles: background,
roads, highways, water, parks, their edges).

A regression loss (L1) answers a pixel that could be highway orange or background grey with their
blend, and a road network the photo leaves uncertain with a faint, blotchy one. Predicting a
distribution over the targets' own colours keeps the choice: the generator predicts K logits per
pixel over a palette of K colours (k-means of the training targets' pixels), is trained with the
cross-entropy against each target pixel's nearest palette colour (optionally rebalanced by class
rarity, as Zhang et al. 2016 do for colour bins), and is decoded with the annealed mean of
`p2p_models.ab_classes`: the palette's mean under softmax(logits / T).
"""

import torch
import torch.nn.functional as F

from .style_bank import kmeans


def fit_palette(images: torch.Tensor, k: int, samples: int = 50000, seed: int = 0) -> torch.Tensor:
    """The K colours of rendered images (B, C, H, W) in [-1, 1]: k-means centres of `samples` random
    pixels -> (k, C), sorted by how many of those pixels they hold (most first)."""
    pixels = images.float().permute(0, 2, 3, 1).reshape(-1, images.shape[1])
    pick = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))[:samples]
    centres = kmeans(pixels[pick], k, seed=seed).float()
    counts = torch.bincount(nearest_class(pixels[pick].T[None, :, :, None], centres).flatten(), minlength=k)
    return centres[counts.argsort(descending=True)]


def nearest_class(images: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W) index of the nearest of the (K, C) palette colours (the first of
    equals). Memory: K distances per pixel."""
    x = images.float()
    distance = torch.stack([(x - c[:, None, None]).square().sum(1) for c in palette.to(x)], -1)
    return distance.argmin(-1)


def class_weights(images: torch.Tensor, palette: torch.Tensor, mix: float) -> torch.Tensor:
    """Per-class loss weights (K,) from the palette classes' frequencies p in `images` (B, C, H, W):
    w ~ ((1 - mix) * p + mix / K)^-1, normalised so that E_p[w] = 1 (Zhang et al.'s lambda is 0.5;
    mix = 1 weighs every class alike)."""
    k = len(palette)
    p = torch.bincount(nearest_class(images, palette).flatten(), minlength=k).float()
    p = p / p.sum()
    w = 1.0 / ((1 - mix) * p + mix / k)
    return w / (p * w).sum()


def palette_cross_entropy(logits: torch.Tensor, target: torch.Tensor, palette: torch.Tensor,
                          weights: torch.Tensor | None = None) -> torch.Tensor:
    """The cross-entropy of logits (B, K, H, W) against the nearest palette colour of each target
    pixel (B, C, H, W), classes weighted by `weights` (K,) if given. A scalar, in fp32."""
    index = nearest_class(target, palette)
    return F.cross_entropy(logits.float(), index, weight=None if weights is None else weights.to(logits.device))
