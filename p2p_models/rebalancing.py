"""Class rebalancing for colorization (Zhang et al., "Colorful Image Colorization", ECCV 2016).

Natural photos are dominated by desaturated ab values, so a plain L1 on ab pulls every pixel
towards them (sepia). Rebalancing weights each pixel's loss by the rarity of its true colour:
w(q) ~ ((1 - lambda) * p~(q) + lambda / Q)^-1 over the ab bins q of a 10-unit grid, with p~ the
training photos' Gaussian-smoothed bin distribution over the Q bins they use, normalised so that
E_p~[w] = 1.
"""

import torch
import torch.nn.functional as F
from torch import nn

AB_RANGE = 110.0  # model-space ab is Lab ab / 110 (`p2p_models.color`)


class ColorRebalancing(nn.Module):
    """Per-pixel loss weights from a prior over ab bins.

    Build with `ColorRebalancing.from_ab(ab)` on training targets `ab` (N, 2, H, W) in model space;
    call `weights(ab)` on targets (B, 2, H, W) -> (B, 1, H, W).
    """

    def __init__(self, bin_weights: torch.Tensor, bin_size: float = 10.0):
        super().__init__()
        self.register_buffer("bin_weights", bin_weights.float())
        self.bin_size = bin_size

    @property
    def bins_per_axis(self) -> int:
        return self.bin_weights.shape[0]

    def bin_index(self, ab: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) model-space ab -> (B, H, W) flat bin indices."""
        n = self.bins_per_axis
        q = ((ab.float() * AB_RANGE + AB_RANGE) / self.bin_size).floor().long().clamp(0, n - 1)
        return q[:, 0] * n + q[:, 1]

    def weights(self, ab: torch.Tensor) -> torch.Tensor:
        return self.bin_weights.flatten()[self.bin_index(ab)].unsqueeze(1)

    @classmethod
    def from_ab(cls, ab: torch.Tensor, mix: float = 0.5, sigma: float = 5.0, bin_size: float = 10.0):
        """The weights of the bins seen in `ab` (N, 2, H, W): the empirical distribution smoothed by a
        Gaussian of `sigma` Lab units, mixed with the uniform one by `mix` (the paper's lambda, 0.5)."""
        n = int(round(2 * AB_RANGE / bin_size))
        rebalancing = cls(torch.zeros(n, n), bin_size)
        counts = torch.bincount(rebalancing.bin_index(ab).flatten(), minlength=n * n).float().view(1, 1, n, n)
        radius = max(1, int(round(3 * sigma / bin_size)))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32) * bin_size
        kernel = torch.exp(-x**2 / (2 * sigma**2))
        kernel = (kernel[:, None] * kernel[None, :]) / kernel.sum() ** 2
        prior = F.conv2d(counts, kernel[None, None], padding=radius)[0, 0]
        seen = counts[0, 0] > 0
        prior = prior * seen / (prior * seen).sum()
        weights = torch.where(seen, 1.0 / ((1 - mix) * prior + mix / seen.sum()), 0.0)
        weights = weights / (prior * weights).sum()
        rebalancing.bin_weights.copy_(torch.where(seen, weights, weights.max()))  # unseen bins: the rarest
        return rebalancing
