"""Colorization as classification (Zhang et al., "Colorful Image Colorization", ECCV 2016).

A regression loss on ab (L1, L2) answers a pixel whose colour could be red or blue with their
average, a grey; predicting a distribution over quantised ab values keeps both. The ab plane
(model space: Lab ab / 110) is cut into a grid of 10-unit bins; the network predicts Q logits per
pixel, is trained with the cross-entropy against each true colour soft-encoded over its 5 nearest
bins (a Gaussian of 5 units), and decodes the distribution with the annealed mean: the mean of the
bin centres under softmax(logits / T), T = 0.38 (T = 1 is the mean, T -> 0 the mode).
"""

from functools import lru_cache

import torch
import torch.nn.functional as F

from .rebalancing import AB_RANGE, ColorRebalancing

BIN_SIZE = 10.0


@lru_cache
def bin_centres(bin_size: float = BIN_SIZE) -> torch.Tensor:
    """The centres of the bins of the ab grid over [-110, 110]^2 in model space -> (Q, 2), Q = 22**2.
    Bin (i, j) holds a in [-110 + i * size, -110 + (i + 1) * size), b likewise, as
    `ColorRebalancing.bin_index` numbers them (i * n + j). Built once and shared: read-only."""
    n = int(round(2 * AB_RANGE / bin_size))
    axis = (-AB_RANGE + bin_size * (torch.arange(n, dtype=torch.float32) + 0.5)) / AB_RANGE
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([a.flatten(), b.flatten()], dim=1)


def soft_encode(ab: torch.Tensor, neighbours: int = 5, sigma: float = 5.0, bin_size: float = BIN_SIZE) -> torch.Tensor:
    """True colours (B, 2, H, W) in model space -> target distributions (B, Q, H, W) over the bins of
    `bin_centres`: weights on the `neighbours` (at most 9) nearest bin centres, Gaussian in their
    distance (`sigma` Lab units), summing to 1. The nearest ones are among the colour's own bin and
    its 8 neighbours on the grid, so only those 9 are measured (in a corner bin of the grid, far out
    of the Lab gamut, the 4 of them on the grid)."""
    b, _, h, w = ab.shape
    n = int(round(2 * AB_RANGE / bin_size))
    lab = ab.float().permute(0, 2, 3, 1).reshape(-1, 1, 2) * AB_RANGE  # (P, 1, 2) in Lab units
    own = ((lab + AB_RANGE) / bin_size).floor().clamp(0, n - 1)
    steps = torch.tensor([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=torch.float32, device=ab.device)
    grid = own + steps  # (P, 9, 2) bin coordinates around the colour's own
    distance = (lab - (-AB_RANGE + bin_size * (grid + 0.5))).norm(dim=2)
    distance = distance.masked_fill(((grid < 0) | (grid > n - 1)).any(dim=2), float("inf"))  # off the grid
    distance, nearest = distance.topk(neighbours, dim=1, largest=False)
    index = grid.gather(1, nearest[..., None].expand(-1, -1, 2)).clamp(0, n - 1).long()  # off the grid: weight 0
    weights = torch.softmax(-distance**2 / (2 * sigma**2), dim=1)
    target = torch.zeros(len(lab), n * n, device=ab.device)
    target.scatter_add_(1, index[..., 0] * n + index[..., 1], weights)
    return target.view(b, h, w, -1).permute(0, 3, 1, 2)


def annealed_mean(logits: torch.Tensor, centres: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits (B, Q, H, W) -> ab (B, 2, H, W) in model space: the centres' mean under
    softmax(logits / temperature). Channels-last logits (the fast CPU paths' convolutions give them) are
    decoded along their contiguous last dimension, 4-5x faster than the strided softmax over dim 1."""
    if logits.is_contiguous(memory_format=torch.channels_last):
        probabilities = torch.softmax(logits.permute(0, 2, 3, 1).float() / temperature, dim=-1)
        return (probabilities @ centres.to(probabilities)).permute(0, 3, 1, 2)
    probabilities = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", probabilities, centres.to(probabilities))


def ab_cross_entropy(logits: torch.Tensor, ab: torch.Tensor, rebalancing: ColorRebalancing | None = None
                     ) -> torch.Tensor:
    """The multinomial cross-entropy of logits (B, Q, h, w) against the true colours `ab`
    (B, 2, H, W), average-pooled to (h, w) first, each pixel weighted by the class rebalancing of
    its colour if given (Zhang et al.'s loss). A scalar, in fp32."""
    pooled = F.adaptive_avg_pool2d(ab.float(), logits.shape[-2:])
    target = soft_encode(pooled)
    loss = -(target * torch.log_softmax(logits.float(), dim=1)).sum(1, keepdim=True)
    return (loss * rebalancing.weights(pooled)).mean() if rebalancing is not None else loss.mean()
