"""The CamVid label set (SegNet's 11 classes + void) and a mapping from Cityscapes label ids to it.

CamVid has no instance maps; `connected_instances` (labels.py) builds approximate ones from the
countable classes. The Cityscapes mapping lets Cityscapes label/instance maps drive a model trained
on CamVid.
"""

import numpy as np

from .labels import relabel

CLASS_NAMES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
               "Pedestrian", "Bicyclist", "Unlabelled"]
COLORS = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
          [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192], [0, 0, 0]]
VOID = 11
COUNTABLE = (2, 6, 8, 9, 10)  # pole, sign, car, pedestrian, bicyclist

# Cityscapes label id (its labels.py table, 0-33) -> CamVid class. Unlabelled, ego vehicle, borders,
# static/dynamic objects and ground go to void; parking and rail track to road; walls, bridges and
# tunnels to building; guard rails to fence; traffic lights to signs; terrain to tree (SegNet's
# "Tree" holds all vegetation); every vehicle but two-wheelers to car; riders, motorcycles and
# bicycles to bicyclist.
CITYSCAPES_TO_CAMVID = {
    0: VOID, 1: VOID, 2: VOID, 3: VOID, 4: VOID, 5: VOID, 6: VOID,
    7: 3, 8: 4, 9: 3, 10: 3, 11: 1, 12: 1, 13: 7, 14: 7, 15: 1, 16: 1, 17: 2, 18: 2, 19: 6, 20: 6,
    21: 5, 22: 5, 23: 0, 24: 9, 25: 10, 26: 8, 27: 8, 28: 8, 29: 8, 30: 8, 31: 8, 32: 10, 33: 10,
}
CITYSCAPES_LUT = [CITYSCAPES_TO_CAMVID[i] for i in range(len(CITYSCAPES_TO_CAMVID))]  # the CamVid class of id 0..33


def from_cityscapes(label_ids: np.ndarray, instance_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cityscapes (H, W) label ids (and instance ids, class * 1000 + k for objects) -> CamVid
    (H, W) class ids and an instance map in the CamVid model's convention: Cityscapes objects keep
    their own instances, other countable regions (poles, signs) become connected components (see
    `relabel`; the shipped CamVid pipeline applies this itself, from its `label_mappings` config)."""
    if label_ids.min() < 0 or label_ids.max() >= len(CITYSCAPES_TO_CAMVID):
        raise ValueError(f"Cityscapes label ids must lie in [0, 33], got [{label_ids.min()}, {label_ids.max()}]")
    return relabel(label_ids, CITYSCAPES_LUT, instance_ids, COUNTABLE)
