"""The CamVid label set (SegNet's 11 classes + void) and a mapping from Cityscapes label ids to it.

CamVid has no instance maps; `connected_instances` (labels.py) builds approximate ones from the
countable classes. The Cityscapes mapping lets Cityscapes label/instance maps drive a model trained
on CamVid.
"""

import numpy as np

from .labels import connected_instances

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


def from_cityscapes(label_ids: np.ndarray, instance_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cityscapes (H, W) label ids (and instance ids, class * 1000 + k for objects) -> CamVid
    (H, W) class ids and an instance map in the CamVid model's convention (`camvid_instances`)."""
    lut = np.array([CITYSCAPES_TO_CAMVID[i] for i in range(len(CITYSCAPES_TO_CAMVID))], dtype=np.int64)
    if label_ids.min() < 0 or label_ids.max() >= len(lut):
        raise ValueError(f"Cityscapes label ids must lie in [0, 33], got [{label_ids.min()}, {label_ids.max()}]")
    labels = lut[label_ids]
    return labels, camvid_instances(labels, instance_ids)


def is_cityscapes_instances(instance_ids: np.ndarray) -> bool:
    """Whether an instance map is in Cityscapes' convention (stuff: Cityscapes label ids up to 33;
    objects: 24000-33999) rather than the CamVid model's (stuff: CamVid ids up to 11; objects below
    11000)."""
    stuff = instance_ids[instance_ids < 1000]
    return bool(instance_ids.max() >= 11000 or (stuff.size and stuff.max() > VOID))


def camvid_instances(labels: np.ndarray, instance_ids: np.ndarray | None = None) -> np.ndarray:
    """CamVid (H, W) class ids (+ a Cityscapes instance map) -> instances in the CamVid model's
    convention: Cityscapes objects keep their own instances, other countable regions (poles, signs)
    become connected components."""
    # objects from the instance map take ids from class * 1000 + 500: components must stay below that
    instances = connected_instances(labels, COUNTABLE, max_per_class=500 if instance_ids is not None else 1000)
    if instance_ids is not None:
        if instance_ids.shape != labels.shape:
            raise ValueError(f"instance map {instance_ids.shape[::-1]} and label map {labels.shape[::-1]} "
                             "sizes differ (W, H)")
        objects = instance_ids >= 1000
        _, k = np.unique(instance_ids[objects], return_inverse=True)
        instances[objects] = labels[objects] * 1000 + 500 + k.reshape(-1)  # 500+: apart from components
    return instances
