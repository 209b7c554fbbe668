"""`LabelMapProcessor`: one place for label maps in and out of a pipeline: class ids from id images,
arrays or colour-coded maps (snapped to the palette), source label sets mapped to the model's
classes, instance maps and their checks, and ids back to colours."""

import warnings

import numpy as np
import torch
from PIL import Image

from ..labels import boundary_fraction, connected_instances, nearest_palette, relabel
from .image_processor import MAX_PIXELS, check_size

ID_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")  # PIL modes whose pixel values are ids



def class_names_of(id2label: dict | None, num_classes: int) -> list[str] | None:
    """A config's `id2label` ({class id: name}, keys as ints or their strings, as transformers'
    configs store them) -> one name per class, or None; a clear error for missing ids or bad names."""
    if id2label is None:
        return None
    try:
        names = {int(k): v for k, v in id2label.items()}
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"id2label must map class ids to names, e.g. {{\"0\": \"sky\"}}, got {id2label!r}") from None
    missing = [c for c in range(num_classes) if not isinstance(names.get(c), str)]
    if missing:
        raise ValueError(f"id2label has no name for class id(s) {missing[:10]} of {num_classes} classes")
    return [names[c] for c in range(num_classes)]


class LabelMapProcessor:
    """Label-map pre- and post-processing for a pipeline whose input is a semantic label map.

    Built by the pipeline from its config (`pipe.label_processor`). A label map is an (H, W) integer
    array or tensor, an id image (modes L, P, I, I;16), or a colour-coded RGB image in `palette`,
    whose pixels are snapped to the nearest colour.

    Args:
        num_classes: the model's classes; ids lie in [0, num_classes).
        palette: an RGB colour per class (at least `num_classes`), for colour-coded maps.
        class_names: a name per class (at least `num_classes`).
        countable_classes: classes whose connected regions are the instances when no instance map
            is given (else every class region is one instance).
        dontcare_class: the class that id 255 becomes (pix2pixHD's `contain_dontcare_label`), or None.
        label_mappings: {source name: [class of source id 0, 1, ...]}: an id map whose ids exceed
            the model's classes but lie within a source's table is mapped to the model's classes
            (e.g. Cityscapes label ids for a CamVid model; see `map_ids`).

    Checks, settable on an instance: a colour map with more than `max_off_palette` of its pixels
    farther than `off_palette_distance` (RGB) from every palette colour is refused as a photo; one
    with more than `max_boundary_fraction` of its pixels on a class boundary as noise (None: no
    check); maps with more than `max_instances` instances are refused.
    """

    def __init__(
        self,
        num_classes: int,
        palette: list[list[int]] | None = None,
        class_names: list[str] | None = None,
        countable_classes: list[int] | None = None,
        dontcare_class: int | None = None,
        label_mappings: dict[str, list[int]] | None = None,
        off_palette_distance: float = 20,
        max_off_palette: float = 0.4,
        max_boundary_fraction: float | None = 0.35,
        max_instances: int = 2000,
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if palette is not None:
            if len(palette) < num_classes:
                raise ValueError(f"palette has {len(palette)} colours for {num_classes} classes")
            if any(len(c) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette):
                raise ValueError("palette: every colour must be three integers in [0, 255]")
        if class_names is not None and len(class_names) < num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        if countable_classes and not all(0 <= c < num_classes for c in countable_classes):
            raise ValueError(f"countable_classes {countable_classes} must be class ids in [0, {num_classes})")
        for name, table in (label_mappings or {}).items():
            if not isinstance(table, (list, tuple)) or not all(
                    isinstance(c, int) and 0 <= c < num_classes for c in table):
                raise ValueError(f"label_mappings[{name!r}]: must be a list of class ids in [0, {num_classes}), one "
                                 f"per source id, got {table!r}")
            if len(table) <= num_classes:
                raise ValueError(f"label_mappings[{name!r}]: maps ids 0-{len(table) - 1}, but ids below {num_classes} "
                                 "are read as the model's own classes, so it would never apply")
        self.num_classes, self.palette, self.class_names = num_classes, palette, class_names
        self.countable_classes, self.dontcare_class = list(countable_classes or []), dontcare_class
        self.label_mappings = dict(label_mappings or {})
        self.off_palette_distance, self.max_off_palette = off_palette_distance, max_off_palette
        self.max_boundary_fraction, self.max_instances = max_boundary_fraction, max_instances

    # --- ids in ---------------------------------------------------------------------------------

    def ids(self, label_map, what: str = "label_map", max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
        """A label map -> (H, W) int64 ids: an (H, W) integer array or tensor, an id image, or a colour
        image snapped to the palette (`color_ids`), including one stored indexed (`indexed_colors`).
        The size is checked against `max_pixels` before an image is decoded."""
        if isinstance(label_map, Image.Image) and label_map.mode in ("RGB", "RGBA", "P"):
            check_size(label_map.width, label_map.height, max_pixels, what)
            if label_map.mode == "P" and not self.indexed_colors(label_map):
                return self.integer_ids(label_map, what, max_pixels)
            if self.palette is None:
                raise ValueError(f"{what}: a colour image needs the pipeline's palette, and this pipeline has none; "
                                 "pass class ids (mode L or P, or an integer array)")
            return self.color_ids(label_map, what)
        return self.integer_ids(label_map, what, max_pixels)

    @staticmethod
    def integer_ids(label_map, what: str = "label_map", max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
        """An (H, W) integer array or tensor, or an id image (modes L, P, I, I;16) -> (H, W) int64."""
        if isinstance(label_map, torch.Tensor):
            label_map = label_map.cpu().numpy()
        if isinstance(label_map, np.ndarray):
            if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
                raise ValueError(f"{what}: an array must be (H, W) integers, got {label_map.shape} {label_map.dtype}")
            check_size(label_map.shape[1], label_map.shape[0], max_pixels, what)
            return label_map.astype(np.int64)
        if not isinstance(label_map, Image.Image):
            raise TypeError(f"{what}: expected a PIL image or an (H, W) integer array, got {type(label_map).__name__}")
        check_size(label_map.width, label_map.height, max_pixels, what)
        if label_map.mode not in ID_MODES:
            raise ValueError(f"{what}: mode {label_map.mode} is not an id map (expected L, P, I or I;16)")
        return np.asarray(label_map).astype(np.int64)

    def instance_ids(self, instance_map, what: str = "instance_map", max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
        """An instance map (an id image or an (H, W) integer array or tensor) -> (H, W) int64
        non-negative instance ids."""
        if isinstance(instance_map, Image.Image) and instance_map.mode not in ID_MODES:
            raise ValueError(f"{what}: mode {instance_map.mode} is not an instance map; it must be a single-channel "
                             "image of instance ids (an 8- or 16-bit PNG, like Cityscapes' *_instanceIds.png)")
        instances = self.integer_ids(instance_map, what, max_pixels)
        if instances.size and instances.min() < 0:
            raise ValueError(f"{what}: ids must be non-negative, found {instances.min()}")
        return instances

    def indexed_colors(self, image: Image.Image) -> bool:
        """Whether a palette-mode (P) image is a colour-coded map stored indexed, as editors and PNG
        optimisers save one: every colour it uses is one of the pipeline's palette colours, so its
        indices are not class ids. Other P images (ids with a grey or a dataset's palette) hold ids."""
        if image.mode != "P" or self.palette is None:
            return False
        used = np.flatnonzero(np.bincount(np.asarray(image).ravel(), minlength=256))
        colours = np.asarray(image.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
        own = {tuple(c) for c in self.palette}
        return used.max() < len(colours) and all(tuple(c) in own for c in colours[used].tolist())

    def color_ids(self, image, what: str = "label_map") -> np.ndarray:
        """A colour-coded map (PIL image, or (H, W, 3) uint8 array) -> (H, W) int64 ids of the nearest
        palette colour; a ValueError if more than `max_off_palette` of its pixels are farther than
        `off_palette_distance` from every colour (a photo, or a map in other colours)."""
        image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        ids, distance = nearest_palette(image, self.palette)
        off = (distance > self.off_palette_distance).mean()
        if off > self.max_off_palette:
            raise ValueError(f"{what}: {off:.0%} of its pixels are far from every class colour in the palette, so it "
                             "looks like a photo, not a label map; colour-coded label maps must use the palette's "
                             "colours")
        return ids

    def snap(self, image, what: str = "label_map") -> Image.Image:
        """A colour-coded map -> the same map in exact palette colours (see `color_ids`)."""
        return self.label_image(self.color_ids(image, what))

    def map_ids(self, labels: np.ndarray, instances: np.ndarray | None = None,
                what: str = "label_map") -> tuple[np.ndarray, np.ndarray | None]:
        """(labels, instances) in the model's classes: id 255 becomes `dontcare_class` (if set); ids
        beyond the model's classes that lie within a `label_mappings` table (the first that fits)
        are mapped through it, with the instances `relabel` gives (the source's objects from
        `instances`, else connected regions of `countable_classes`). Any other id is a ValueError."""
        if self.dontcare_class is not None:
            labels = np.where(labels == 255, self.dontcare_class, labels)
        if instances is not None:
            self.check_same_size(labels, instances)
        low, high = int(labels.min()), int(labels.max())
        if low >= 0 and high < self.num_classes:
            return labels, instances
        for table in self.label_mappings.values():
            if low >= 0 and high < len(table):
                labels, instances = relabel(labels, table, instances, self.countable_classes)
                return labels, instances.astype(np.int64)
        mapped = "".join(f" or [0, {len(t)}) ({name} ids, mapped to these classes)"
                         for name, t in self.label_mappings.items())
        found = f"ids up to {high}" if low >= 0 else f"ids from {low} to {high}"
        raise ValueError(f"{what}: ids must lie in [0, {self.num_classes}) (the model's classes){mapped}; "
                         f"found {found}")

    @staticmethod
    def check_same_size(labels: np.ndarray, instances: np.ndarray) -> None:
        if instances.shape != labels.shape:
            (h, w), (height, width) = instances.shape, labels.shape
            raise ValueError(f"instance_map is {w}x{h} but label_map is {width}x{height}: they must have the same size")

    def label_and_instance_ids(self, label_map, instance_map=None,
                               max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
        """(labels, instances): checked (H, W) int64 ids at the label map's own size (`ids`,
        `instance_ids`, `map_ids`). Without an instance map, the connected regions of
        `countable_classes` are the instances, or each class region is one instance. Maps that
        don't look like label maps, or hold more than `max_instances` instances, are a ValueError."""
        labels = self.ids(label_map, "label_map", max_pixels)
        instances = None if instance_map is None else self.instance_ids(instance_map, "instance_map", max_pixels)
        labels, instances = self.map_ids(labels, instances)
        self.check_regions(labels, "label_map", "a class boundary")
        if instances is not None:
            self.check_regions(instances, "instance_map", "an instance boundary")
        else:
            instances = (connected_instances(labels, self.countable_classes).astype(np.int64)
                         if self.countable_classes else labels)
        count = len(np.unique(instances))
        if count > self.max_instances:
            raise ValueError(f"the maps hold {count} instances, more than this pipeline's limit of "
                             f"{self.max_instances} (`label_processor.max_instances`): a label map has at most a few "
                             "hundred objects")
        return labels, instances

    def check_regions(self, ids: np.ndarray, what: str, boundary: str) -> None:
        """A ValueError if more than `max_boundary_fraction` of the map's pixels lie on a boundary
        between its regions: noise or a photo, not a label or instance map."""
        fragmented = boundary_fraction(ids)
        if self.max_boundary_fraction is not None and fragmented > self.max_boundary_fraction:
            kind = what.replace("_", " ")
            raise ValueError(f"{what}: {fragmented:.0%} of its pixels lie on {boundary} ({kind}s are made of regions: "
                             f"below {self.max_boundary_fraction:.0%}), so it looks like noise or a photo")

    @staticmethod
    def resize(ids: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """(H, W) ids -> (1, 1, height, width) int64, nearest-neighbour; on compact indices, so any id
        survives the float interpolation exactly."""
        values, index = np.unique(ids, return_inverse=True)
        t = torch.from_numpy(index.reshape(ids.shape))[None, None].float()
        resized = torch.nn.functional.interpolate(t, size=size, mode="nearest").long()
        return torch.from_numpy(values)[resized]

    @staticmethod
    def map_list(maps, what: str) -> list:
        """Label or instance maps as a list of single maps (PIL images or (H, W) integer arrays): a PIL
        image, an (H, W) integer array or tensor, a (B, H, W) or (B, 1, H, W) batch of them, or a list of
        any of these."""
        items = list(maps) if isinstance(maps, (list, tuple)) else [maps]
        out = []
        for item in items:
            if isinstance(item, torch.Tensor):
                if item.is_floating_point() or item.is_complex():
                    raise ValueError(f"{what}: a tensor must hold integer ids, got {item.dtype}")
                item = item.detach().cpu().numpy()
            if isinstance(item, np.ndarray) and item.ndim in (3, 4):
                if item.ndim == 4 and item.shape[1] != 1:
                    raise ValueError(f"{what}: a 4-d batch must be (B, 1, H, W), got {item.shape}")
                out += list(item.reshape(-1, *item.shape[-2:]))
            else:
                out.append(item)
        if not out:
            raise ValueError(f"{what}: got an empty list")
        return out

    def colour_ids(self, image, what: str = "label_map") -> np.ndarray:
        """Deprecated spelling of `color_ids`."""
        warnings.warn("LabelMapProcessor.colour_ids is deprecated: use color_ids", FutureWarning, stacklevel=2)
        return self.color_ids(image, what)

    def indexed_colours(self, image: Image.Image) -> bool:
        """Deprecated spelling of `indexed_colors`."""
        warnings.warn("LabelMapProcessor.indexed_colours is deprecated: use indexed_colors", FutureWarning,
                      stacklevel=2)
        return self.indexed_colors(image)

    # --- ids out --------------------------------------------------------------------------------

    def label_image(self, labels: np.ndarray) -> Image.Image:
        """(H, W) class ids -> an RGB image in the palette."""
        if self.palette is None:
            raise ValueError("this pipeline has no palette to draw label maps with")
        return Image.fromarray(np.asarray(self.palette, dtype=np.uint8)[labels])
