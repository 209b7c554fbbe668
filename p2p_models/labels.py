"""Label and instance maps: one-hot encoding, instance boundary maps, per-instance averaging,
colour palettes."""

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage


def class_count(label_nc: int, contain_dontcare_label: bool = False) -> int:
    """The classes of a pix2pixHD label map: `label_nc`, plus the one id 255 (don't care) becomes if kept."""
    return label_nc + int(contain_dontcare_label)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 1, H, W) integer ids in [0, num_classes) -> (B, num_classes, H, W) float one-hot."""
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"label ids must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )
    return F.one_hot(labels[:, 0].long(), num_classes).permute(0, 3, 1, 2).float()


def instance_boundaries(instances: torch.Tensor) -> torch.Tensor:
    """pix2pixHD's boundary map: (B, 1, H, W) instance ids -> (B, 1, H, W) float, 1 where any
    4-neighbour inside the image has a different id, else 0."""
    t = instances
    edge = torch.zeros_like(t, dtype=torch.bool)
    horizontal = t[..., :, 1:] != t[..., :, :-1]
    vertical = t[..., 1:, :] != t[..., :-1, :]
    edge[..., :, 1:] |= horizontal
    edge[..., :, :-1] |= horizontal
    edge[..., 1:, :] |= vertical
    edge[..., :-1, :] |= vertical
    return edge.float()


def boundary_fraction(ids: np.ndarray) -> float:
    """The fraction of (H, W) ids on an `instance_boundaries` edge: ~0.05 for real label maps (at most
    0.18 on CamVid), close to 1 for noise."""
    return float(instance_boundaries(torch.from_numpy(ids)[None, None]).mean())


def instance_means(features: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
    """The mean feature of each of `count` instances, in one pass: (C, H, W) features, (H, W) each
    pixel's instance index in [0, count) (`torch.unique(ids, return_inverse=True)`'s) -> (count, C)."""
    flat = index.flatten()
    sums = torch.zeros(count, features.shape[0], dtype=features.dtype, device=features.device)
    sums.index_add_(0, flat, features.flatten(1).T)
    return sums / torch.bincount(flat, minlength=count).to(features.dtype)[:, None]


def instance_classes(labels: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
    """The majority class of each of `count` instances (the lowest id among equals), in one pass: (H, W)
    class ids, (H, W) each pixel's instance index in [0, count) -> (count,) int64."""
    classes = int(labels.max()) + 1
    votes = torch.bincount(index.flatten() * classes + labels.flatten(), minlength=count * classes)
    return votes.view(count, classes).argmax(1)


def instance_average(features: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
    """Replace every pixel's feature by the mean over its instance (pix2pixHD's instance-wise
    average pooling): (B, C, H, W), (B, 1, H, W) ids -> (B, C, H, W)."""
    out = torch.empty_like(features)
    for b in range(features.shape[0]):
        ids, index = torch.unique(instances[b, 0], return_inverse=True)
        out[b] = instance_means(features[b], index, len(ids))[index].permute(2, 0, 1)
    return out


def nearest_centres(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D) points, (K, D) centres (e.g. colours and a palette) -> the index of each point's nearest
    centre (the first of equals), and the squared distances to the nearest and to the second nearest
    (float32 for float32 inputs, else float64). One pass over the points per centre: memory O(N)."""
    dtype = np.result_type(points, centres, np.float32)
    n = len(points)
    index = np.zeros(n, np.min_scalar_type(max(len(centres) - 1, 0)))
    best, second = np.full(n, np.inf, dtype), np.full(n, np.inf, dtype)
    distance, term, closer = np.empty(n, dtype), np.empty(n, dtype), np.empty(n, bool)
    for k, centre in enumerate(np.asarray(centres, dtype)):
        distance.fill(0)
        for d, value in enumerate(centre):
            np.subtract(points[:, d], value, out=term)
            distance += np.square(term, out=term)
        np.less(distance, best, out=closer)
        np.minimum(second, distance, out=second)
        second[closer], best[closer], index[closer] = best[closer], distance[closer], k
    return index, best, second


@lru_cache(maxsize=8)
def palette_table(palette: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """The index of the nearest palette colour for each of the 2**24 RGB colours (indexed by
    r << 16 | g << 8 | b); 16 MB, built once per palette. The cube is cut into 4x4x4 cells: where,
    from a cell's centre, the nearest colour beats the second by more than the cell's diameter, it is
    the nearest for the whole cell; the colours of the other cells (near a boundary) are computed one
    by one."""
    colours = np.asarray(palette, np.float32)
    corners = np.stack(np.meshgrid(*[np.arange(0, 256, 4, dtype=np.float32)] * 3, indexing="ij"), -1).reshape(-1, 3)
    index, best, second = nearest_centres(corners + 1.5, colours)
    decided = np.sqrt(second) - np.sqrt(best) > 3 * 3 ** 0.5 + 1e-3
    table = np.empty((64, 4, 64, 4, 64, 4), index.dtype)
    table[:] = index.reshape(64, 1, 64, 1, 64, 1)
    offsets = np.stack(np.meshgrid(*[np.arange(4, dtype=np.float32)] * 3, indexing="ij"), -1).reshape(-1, 3)
    near = (corners[~decided][:, None] + offsets).reshape(-1, 3)
    packed = near.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
    table = table.reshape(-1)
    table[packed] = nearest_centres(near, colours)[0]
    return table


def nearest_palette(image: Image.Image, palette: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """RGB label image -> (H, W) int64 ids of the nearest palette colour and (H, W) float32 RGB
    distances to it. Time and memory are O(pixels), whatever the number of colours (`palette_table`)."""
    pixels = np.asarray(image.convert("RGB"))
    packed = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1].astype(np.int32) << 8) | pixels[..., 2]
    ids = palette_table(tuple(tuple(int(v) for v in c) for c in palette))[packed].astype(np.int64)
    del packed
    colours = np.asarray(palette, np.int32)
    squared = np.zeros(ids.shape, np.int32)
    for channel in range(3):
        squared += (pixels[..., channel] - colours[ids, channel]) ** 2
    return ids, np.sqrt(squared, dtype=np.float32)


def colors_to_ids(image: Image.Image, palette: list[list[int]]) -> np.ndarray:
    """RGB label image -> (H, W) int64 ids of the nearest palette colour (snaps JPEG/brush noise)."""
    return nearest_palette(image, palette)[0]


def connected_instances(labels: np.ndarray, countable: Sequence[int], max_per_class: int = 1000) -> np.ndarray:
    """An instance map for a dataset without one: (H, W) class ids -> (H, W) int32 instance ids.

    Each 4-connected region of a `countable` class becomes one instance, id = class * 1000 + k
    (the Cityscapes convention); every other pixel gets its class id. This approximates real
    instances: touching objects of one class merge, and an occluded object splits in two. More than
    `max_per_class` regions of a class would collide with the next class's ids: a ValueError.
    """
    out = labels.astype(np.int32).copy()
    for cls in countable:
        components, n = ndimage.label(labels == cls)
        if n > max_per_class:
            raise ValueError(f"class {cls} has {n} separate regions; at most {max_per_class} per class can be told "
                             "apart as instances (is the label map noisy?)")
        if n:
            out[components > 0] = cls * 1000 + components[components > 0] - 1
    return out


def relabel(ids: np.ndarray, lut: Sequence[int], instance_ids: np.ndarray | None = None,
            countable: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Another label set's (H, W) ids (and instance ids, class * 1000 + k for objects, as in
    Cityscapes) -> (H, W) int64 class ids `lut[ids]` and an (H, W) int32 instance map: the source's
    objects keep their own instances (ids class * 1000 + 500 + k), other regions of `countable`
    classes become connected components (`connected_instances`; at most 500 per class when objects
    come from an instance map, so the two never collide), every other pixel gets its class id."""
    lut = np.asarray(lut, dtype=np.int64)
    if ids.min() < 0 or ids.max() >= len(lut):
        raise ValueError(f"source label ids must lie in [0, {len(lut) - 1}], got [{ids.min()}, {ids.max()}]")
    labels = lut[ids]
    instances = connected_instances(labels, countable, max_per_class=500 if instance_ids is not None else 1000)
    if instance_ids is not None:
        if instance_ids.shape != ids.shape:
            raise ValueError(f"instance map {instance_ids.shape[::-1]} and label map {ids.shape[::-1]} "
                             "sizes differ (W, H)")
        objects = instance_ids >= 1000
        _, k = np.unique(instance_ids[objects], return_inverse=True)
        instances[objects] = labels[objects] * 1000 + 500 + k.reshape(-1)  # 500+: apart from components
    return labels, instances
