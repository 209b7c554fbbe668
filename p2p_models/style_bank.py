"""pix2pixHD's style bank: K-means centres of the feature encoder's per-instance features, per class."""

import numpy as np
import torch
from diffusers import ModelMixin  # noqa: F401  diffusers' loader finds a component's base class in its module
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .labels import instance_classes, instance_means, nearest_centres
from .modeling_utils import P2PModelMixin


def kmeans(x: torch.Tensor, k: int, seed: int = 0, iterations: int = 100, init: torch.Tensor | None = None
           ) -> torch.Tensor:
    """K-means of (N, D) points -> (k, D) centres: from k-means++ seeding (reproducible for a seed; k
    at most N) or from the (k, D) centres `init`, at most `iterations` Lloyd iterations."""
    x = x.detach().cpu().double()
    points = x.numpy()
    if init is None:
        k = min(k, len(x))
        g = torch.Generator().manual_seed(seed)
        centres = x[torch.randint(len(x), (1,), generator=g)]
        for _ in range(1, k):
            d2 = torch.from_numpy(nearest_centres(points, centres.numpy())[1])
            pick = torch.multinomial(d2, 1, generator=g) if d2.sum() > 0 else torch.randint(len(x), (1,), generator=g)
            centres = torch.cat([centres, x[pick]])
    else:
        centres, k = init.detach().cpu().double(), len(init)
    for _ in range(iterations):
        assign = torch.from_numpy(nearest_centres(points, centres.numpy())[0].astype(np.int64))
        new = torch.stack([x[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(k)])
        if torch.allclose(new, centres):
            break
        centres = new
    return centres.float()


def instance_features(
    features: torch.Tensor, instances: torch.Tensor, labels: torch.Tensor, min_area: float = 1 / 64
) -> list[tuple[int, torch.Tensor]]:
    """(class, mean feature) for every instance of one image covering at least `min_area` of it
    (the reference keeps instances over half of 1/32 of the image). `features`: (C, H, W);
    `instances`, `labels`: (H, W). An instance's class is its majority label."""
    ids, index = torch.unique(instances, return_inverse=True)
    large = torch.bincount(index.flatten(), minlength=len(ids)) >= min_area * instances.numel()
    means, classes = instance_means(features, index, len(ids)), instance_classes(labels, index, len(ids))
    return [(int(c), m) for c, m, keep in zip(classes, means, large) if keep]


class StyleBank(P2PModelMixin, ConfigMixin):
    """Up to `k` feature centres per class (`centers`: (num_classes, k, feat_num); `counts`: how
    many of a class's rows are valid)."""

    @register_to_config
    def __init__(self, num_classes: int = 35, feat_num: int = 3, k: int = 10):
        super().__init__()
        self.register_buffer("centers", torch.zeros(num_classes, k, feat_num))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))

    def fit(self, samples: list[tuple[int, torch.Tensor]], seed: int = 0) -> "StyleBank":
        """K-means per class of (class, feature) samples (k = 10 per class, as the reference)."""
        by_class: dict[int, list[torch.Tensor]] = {}
        for cls, feature in samples:
            by_class.setdefault(cls, []).append(feature.detach().cpu())
        self.counts.zero_()
        self.centers.zero_()
        for cls, feats in by_class.items():
            centres = kmeans(torch.stack(feats), self.config.k, seed=seed + cls)
            self.centers[cls, : len(centres)] = centres.to(self.centers)
            self.counts[cls] = len(centres)
        return self

    def style(self, cls: int, choice, rng: np.random.Generator) -> torch.Tensor | None:
        """A feature for class `cls`: cluster `choice` (int), or a random cluster (`None` or
        "random"); `None` if the bank has no feature for the class."""
        n = int(self.counts[cls]) if cls < len(self.counts) else 0
        if n == 0:
            return None
        if choice is None or choice == "random":
            choice = int(rng.integers(n))
        if not 0 <= int(choice) < n:
            raise ValueError(f"style cluster {choice} for class {cls}: the bank has clusters 0..{n - 1}")
        return self.centers[cls, int(choice)]
