"""Paired training data through Hugging Face `datasets`.

Sources (`load_splits`): a Hub dataset id; a local `save_to_disk` folder; parquet files; or an image
folder (`imagefolder`: e.g. the classic aligned `train/`, `val/`, `test/` folders of A|B jpgs).
Layouts (`PairedImageDataset`):
- `aligned`: one image column holding A and B side by side (A left);
- `paired`: two image columns, A and B;
- `colorization`: one column of colour photos; A is the L channel and B the ab channels in Lab,
  as the reference implementation's colorization mode.
"""

import io
import logging
import random
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

from p2p_models.color import model_lab_to_rgb, rgb_to_model_lab
from p2p_models.labels import connected_instances, nearest_centres
from p2p_models.pipelines import LabelMapProcessor
from p2p_models.style_bank import kmeans
from train.image_cache import ArrayCache, cache_key, file_stamps

logger = logging.getLogger(__name__)
LAYOUTS = ("aligned", "paired", "colorization")
VALIDATION_NAMES = ("validation", "val", "valid", "dev")


# The image columns of known Hub datasets, so that `--dataset_name <id>` needs no column flags:
# the pix2pix datasets as the HugGAN community uploaded them, A and B in two columns. Keyed on the
# Hub id, whichever endpoint serves it.
HUB_DATASET_COLUMNS = {
    "huggan/facades": {"image_column_a": "imageA", "image_column_b": "imageB"},
    "huggan/maps": {"image_column_a": "imageA", "image_column_b": "imageB"},
}


def known_columns(source: str) -> dict[str, str]:
    """The column flags (`image_column_a`, `image_column_b`) of a Hub dataset in
    `HUB_DATASET_COLUMNS`; none for other ids and for local paths."""
    return {} if Path(source).exists() else HUB_DATASET_COLUMNS.get(source, {})


class BadImageError(ValueError):
    """An example whose image can't be decoded, or whose A and B don't fit together."""


def load_splits(source: str, cache_dir: str | None = None) -> datasets.DatasetDict:
    """All splits of `source`: a Hub id, a `save_to_disk` folder, a parquet file/folder or an image folder."""
    path = Path(source)
    if path.is_dir():
        if any((path / f).exists() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
            loaded = datasets.load_from_disk(str(path))
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict(train=loaded)
        if any(path.rglob("*.parquet")):
            return datasets.load_dataset("parquet", data_dir=str(path), cache_dir=cache_dir)
        return datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache_dir)
    if path.suffix == ".parquet":
        return datasets.load_dataset("parquet", data_files=str(path), cache_dir=cache_dir)
    if path.exists():
        raise ValueError(f"--dataset_name {source}: a file that is not .parquet; expected a folder, parquet or Hub id")
    return datasets.load_dataset(source, cache_dir=cache_dir)


def train_val_split(
    splits: datasets.DatasetDict, train_split: str, validation_split: str | None, validation_fraction: float, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset, str]:
    """The training split and a validation split: the named one if the dataset has it, else a
    seeded `validation_fraction` held out of the training split. Returns a description too."""
    if train_split not in splits:
        raise ValueError(f"split {train_split!r} not found; the dataset has {sorted(splits)}")
    train = splits[train_split]
    names = [validation_split] if validation_split else list(VALIDATION_NAMES)
    for name in names:
        if name in splits:
            return train, splits[name], f"the dataset's `{name}` split ({len(splits[name])} examples)"
    if validation_split and validation_split not in VALIDATION_NAMES:
        raise ValueError(f"validation split {validation_split!r} not found; the dataset has {sorted(splits)}")
    n_val = max(1, round(len(train) * validation_fraction))
    if n_val >= len(train):
        raise ValueError(f"{len(train)} training examples are too few to hold out {n_val} for validation")
    order = np.random.default_rng(seed).permutation(len(train))
    held = train.select(sorted(order[:n_val].tolist()))
    kept = train.select(sorted(order[n_val:].tolist()))
    return kept, held, f"{n_val} examples held out of `{train_split}` (seed {seed}); no validation split exists"


def image_columns(dataset: datasets.Dataset) -> list[str]:
    return [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]


def decode(value, where: str) -> Image.Image:
    """An undecoded `datasets.Image` value ({'bytes', 'path'}) -> RGB PIL image, or a BadImageError naming it."""
    name = value.get("path") or where
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
        with Image.open(source) as image:
            return image.convert("RGB")
    except Exception as e:
        raise BadImageError(f"{name}: cannot be read as an image ({type(e).__name__}: {e})") from e


class PairedImageDataset(torch.utils.data.Dataset):
    """(A, B) tensor pairs in [-1, 1] with the paper's augmentation.

    Training (`train=True`): resize both to `load_size` (bicubic), one random `crop_size` crop and one
    random horizontal flip applied to both. With `max_load_size` (multi-scale, for photos of any
    aspect ratio) the short side is resized to a random size in [load_size, max_load_size] instead,
    keeping the aspect ratio, before the crop. Otherwise: resize to `crop_size`. The randomness of
    example i in epoch e depends only on (seed, e, i), so runs and resumed runs see the same data.

    Items: {"A": (C_A, crop, crop), "B": (C_B, crop, crop), "index": i}; C is 3 for RGB, or 1 (L)
    and 2 (ab) for colorization.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        layout: str = "aligned",
        image_column: str | None = None,
        image_column_a: str | None = None,
        image_column_b: str | None = None,
        direction: str = "AtoB",
        load_size: int = 286,
        crop_size: int = 256,
        flip: bool = True,
        train: bool = True,
        seed: int = 0,
        max_load_size: int | None = None,
    ):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be AtoB or BtoA, got {direction!r}")
        if load_size < crop_size:
            raise ValueError(f"load_size ({load_size}) must be >= crop_size ({crop_size})")
        if max_load_size is not None and max_load_size < load_size:
            raise ValueError(f"max_load_size ({max_load_size}) must be >= load_size ({load_size})")
        available = image_columns(dataset)
        if layout == "paired":
            columns = [image_column_a, image_column_b]
            if None in columns:
                raise ValueError("the paired layout needs --image_column_a and --image_column_b")
        else:
            columns = [image_column or (available[0] if len(available) == 1 else None)]
            if columns[0] is None:
                raise ValueError(
                    f"the dataset has image columns {available}: choose one with --image_column, or use "
                    "--image_column_a/--image_column_b for separate A and B columns"
                )
        for column in columns:
            if column not in available:
                raise ValueError(f"image column {column!r} not found; the dataset's image columns are {available}")
        self.dataset = dataset.cast_column(columns[0], datasets.Image(decode=False))
        for column in columns[1:]:
            self.dataset = self.dataset.cast_column(column, datasets.Image(decode=False))
        self.layout, self.columns, self.direction = layout, columns, direction
        self.load_size, self.crop_size, self.flip, self.train, self.seed = load_size, crop_size, flip, train, seed
        self.max_load_size = max_load_size
        self.indices = list(range(len(dataset)))
        self.epoch = 0
        self.cache = None

    def __len__(self):
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pair(self, i: int) -> tuple[Image.Image, Image.Image | None]:
        """Example i as PIL (A, B) before augmentation (B None for colorization)."""
        row = self.dataset[self.indices[i]]
        where = f"example {self.indices[i]}"
        images = [decode(row[c], f"{where}, column {c!r}") for c in self.columns]
        if self.layout == "colorization":
            return images[0], None
        if self.layout == "aligned":
            ab = images[0]
            if ab.width % 2:
                name = row[self.columns[0]].get("path") or where
                raise BadImageError(f"{name}: width {ab.width} is odd; an aligned A|B image must be two halves")
            half = ab.width // 2
            a, b = ab.crop((0, 0, half, ab.height)), ab.crop((half, 0, ab.width, ab.height))
        else:
            a, b = images
            if a.size != b.size:
                names = [row[c].get("path") or f"{where}, column {c!r}" for c in self.columns]
                raise BadImageError(f"A and B differ in size: {names[0]} is {a.size}, {names[1]} is {b.size}")
        return (b, a) if self.direction == "BtoA" else (a, b)

    def check_all(self) -> list[str]:
        """Decode every example; drop the bad ones from this dataset and return their errors."""
        good, errors = [], []
        for i in range(len(self.indices)):
            try:
                self.decoded(i)
                good.append(self.indices[i])
            except BadImageError as e:
                errors.append(str(e))
        self.indices = good
        self.cache = None  # indexed by position: rebuild it with `use_cache`
        return errors

    def fixed_size(self) -> tuple[int, int] | None:
        """The (W, H) every example is resized to before cropping, or None when it is random
        (multi-scale training)."""
        if not self.train:
            return self.crop_size, self.crop_size
        return (self.load_size, self.load_size) if self.max_load_size is None else None

    def decoded(self, i: int) -> tuple[np.ndarray, ...]:
        """Example i decoded and, where the size is fixed, resized (bicubic): (H, W, 3) uint8 arrays
        A and B, or the photo alone for colorization. From the cache if there is one."""
        if self.cache is not None:
            return self.cache[i]
        a, b = self.pair(i)
        size = self.fixed_size()
        return tuple(np.asarray(im.resize(size, Image.BICUBIC) if size else im) for im in (a, b) if im is not None)

    def use_cache(self, root: str | Path) -> None:
        """Decode (and resize) every example once into a memory-mapped cache under `root` (built on
        first use, reused by later runs on the same data and sizes); items are unchanged."""
        files = [file_stamps(self.dataset.select(self.indices)[c]) for c in self.columns]
        key = cache_key(type(self).__name__, self.dataset._fingerprint, self.indices, files, self.layout, self.columns,
                        self.direction, self.fixed_size())
        self.cache = None  # `decoded` builds it from the files
        self.cache = ArrayCache.build(Path(root) / key, len(self.indices), self.decoded, BadImageError)

    def augment(self, arrays: tuple[np.ndarray, ...], i: int) -> list[torch.Tensor]:
        """The paper's jitter (resize, random crop) and flip, drawn from (seed, epoch, example), on
        the `decoded` arrays -> (3, crop, crop) float tensors in [0, 1]."""
        h, w = arrays[0].shape[:2]
        size, x, y, flip = None, 0, 0, False
        if self.train:
            rng = random.Random(hash((self.seed, self.epoch, self.indices[i])))
            if self.max_load_size is not None:
                short = rng.randint(self.load_size, self.max_load_size)
                size = (max(short, round(short * w / h)), max(short, round(short * h / w)))
                w, h = size
            x = rng.randint(0, w - self.crop_size)
            y = rng.randint(0, h - self.crop_size)
            flip = self.flip and rng.random() < 0.5
        out = []
        for array in arrays:
            if size is not None:
                array = np.asarray(Image.fromarray(array).resize(size, Image.BICUBIC))
            array = array[y:y + self.crop_size, x:x + self.crop_size]
            if flip:
                array = array[:, ::-1]
            out.append(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / 255.0))
        return out

    def __getitem__(self, i):
        arrays = self.augment(self.decoded(i), i)
        if self.layout == "colorization":
            L, ab = rgb_to_model_lab(arrays[0])
            return {"A": L, "B": ab, "index": self.indices[i]}
        a, b = arrays
        return {"A": a * 2 - 1, "B": b * 2 - 1, "index": self.indices[i]}

    @property
    def channels(self) -> tuple[int, int]:
        return (1, 2) if self.layout == "colorization" else (3, 3)

    def to_rgb(self, A: torch.Tensor, B: torch.Tensor | None = None) -> torch.Tensor:
        """Batch tensors -> RGB in [0, 1]: A alone (the image a pipeline takes; colorization: the grey
        photo whose L is A), or B (real or generated) given its A."""
        if self.layout != "colorization":
            return ((B if B is not None else A) + 1) / 2
        return model_lab_to_rgb(A, torch.zeros_like(A).expand(-1, 2, -1, -1) if B is None else B)


def load_label_splits(source: str, cache_dir: str | None = None) -> datasets.DatasetDict:
    """pix2pixHD data as a `datasets.DatasetDict` with `label`, `image` (and `instance`) columns,
    files paired in sorted order: a Cityscapes-style folder (`<split>_label/`, `<split>_img/`,
    optional `<split>_inst/`), a SegNet/CamVid-style folder (`<split>/` photos, `<split>annot/`
    labels), or anything `load_splits` reads."""
    root = Path(source)
    layouts = {"label": "{}_label", "image": "{}_img", "instance": "{}_inst"}
    splits = sorted(p.name[: -len("_label")] for p in root.glob("*_label") if p.is_dir()) if root.is_dir() else []
    if not splits and root.is_dir():
        layouts = {"label": "{}annot", "image": "{}"}
        splits = sorted(p.name[: -len("annot")] for p in root.glob("*annot") if (root / p.name[:-5]).is_dir())
    if not splits:
        return load_splits(source, cache_dir)
    out = {}
    for split in splits:
        columns = {}
        for column, folder in layouts.items():
            directory = root / folder.format(split)
            if directory.is_dir():
                columns[column] = sorted(str(p) for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if "image" not in columns:
            continue  # labels only (a test split for inference): nothing to train or validate on
        counts = {k: len(v) for k, v in columns.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"{root}: the {split} folders hold different numbers of files: {counts}")
        dataset = datasets.Dataset.from_dict(columns)
        for column in columns:
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        out[split] = dataset
    if not out:
        raise ValueError(f"{root}: no label folder (<split>_label/ or <split>annot/) has a matching photo folder")
    return datasets.DatasetDict(out)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def decode_ids(value, where: str) -> np.ndarray:
    """An undecoded label/instance image -> (H, W) int64 ids (modes L, P, I, I;16)."""
    name = value.get("path") or where
    try:
        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
        with Image.open(source) as image:
            return LabelMapProcessor.integer_ids(image, name, max_pixels=None)
    except ValueError as e:  # not an id map
        raise BadImageError(str(e)) from e
    except Exception as e:
        raise BadImageError(f"{name}: cannot be read as an image ({type(e).__name__}: {e})") from e


class LabelImageDataset(torch.utils.data.Dataset):
    """(label ids, instance ids, photo) triples for pix2pixHD.

    Resizing follows the reference's `scale_width`: width `load_size`, height keeping the aspect
    ratio, both rounded to a multiple of `size_factor`; labels and instances nearest-neighbour,
    photos bicubic. Training adds a random `crop_size` square crop (if given) and a random flip,
    shared by the three and seeded by (seed, epoch, index). Without an instance column the
    instances are the connected regions of the `countable` classes (see `connected_instances`),
    or, with no `countable` classes, the label regions. With `label_nc`, label ids outside
    [0, label_nc) (255 allowed with `contain_dontcare_label`) make the example bad.

    Items: {"label": (1, H, W) int64, "instance": (1, H, W) int64, "image": (3, H, W) in [-1, 1], "index"}.
    """

    def __init__(self, dataset: datasets.Dataset, label_column: str = "label", image_column: str = "image",
                 instance_column: str | None = "instance", load_size: int = 1024, crop_size: int | None = None,
                 flip: bool = True, train: bool = True, seed: int = 0, size_factor: int = 32,
                 countable: list[int] | None = None, label_nc: int | None = None,
                 contain_dontcare_label: bool = False):
        for column in (label_column, image_column, instance_column):
            if column is not None and column not in dataset.column_names:
                raise ValueError(f"column {column!r} not found; the dataset has {dataset.column_names}")
        if crop_size is not None and crop_size % size_factor:
            raise ValueError(f"crop_size {crop_size} must be divisible by {size_factor}")
        self.dataset = dataset
        for column in (label_column, image_column, instance_column):
            if column is not None:
                self.dataset = self.dataset.cast_column(column, datasets.Image(decode=False))
        self.label_column, self.image_column, self.instance_column = label_column, image_column, instance_column
        self.load_size, self.crop_size, self.flip, self.train = load_size, crop_size, flip, train
        self.seed, self.size_factor, self.countable = seed, size_factor, countable
        self.label_nc, self.dontcare = label_nc, contain_dontcare_label
        self.indices = list(range(len(dataset)))
        self.epoch = 0
        self.cache = None

    def __len__(self):
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def check_all(self) -> list[str]:
        """Decode every example; drop the bad ones from this dataset and return their errors."""
        good, errors = [], []
        for i in range(len(self.indices)):
            try:
                self.decoded(i)
                good.append(self.indices[i])
            except BadImageError as e:
                errors.append(str(e))
        self.indices = good
        self.cache = None  # indexed by position: rebuild it with `use_cache`
        return errors

    def check_labels(self, labels: np.ndarray, value: dict, where: str) -> None:
        valid = (labels >= 0) & (labels < self.label_nc)
        if self.dontcare:
            valid |= labels == 255
        if not valid.all():
            found = np.unique(labels[~valid])
            allowed = f"[0, {self.label_nc})" + (" or be 255 (--contain_dontcare_label)" if self.dontcare else "")
            raise BadImageError(f"{value.get('path') or where}: label ids must lie in {allowed} for --label_nc "
                                f"{self.label_nc}, found {', '.join(map(str, found[:8]))}"
                                f"{' ...' if len(found) > 8 else ''}")

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The working (W, H) of a `width` x `height` example: `scale_width` to `load_size`."""
        f = self.size_factor
        return max(f, round(self.load_size / f) * f), max(f, round(self.load_size * height / width / f) * f)

    def decoded(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Example i decoded, checked and resized to its working size: (H, W) label ids, (H, W)
        instance ids (uint16 where they fit, else int32) and the (H, W, 3) uint8 photo. From the
        cache if there is one."""
        if self.cache is not None:
            return self.cache[i]
        row = self.dataset[self.indices[i]]
        where = f"example {self.indices[i]}"
        labels = decode_ids(row[self.label_column], f"{where}, column {self.label_column!r}")
        if self.label_nc is not None:
            self.check_labels(labels, row[self.label_column], f"{where}, column {self.label_column!r}")
        photo = decode(row[self.image_column], f"{where}, column {self.image_column!r}")
        if self.instance_column:
            instances = decode_ids(row[self.instance_column], f"{where}, column {self.instance_column!r}")
        else:
            instances = connected_instances(labels, self.countable) if self.countable else labels
        if labels.shape != instances.shape or labels.shape != (photo.height, photo.width):
            raise BadImageError(f"{where}: label {labels.shape[::-1]}, instance {instances.shape[::-1]} and image "
                                f"{photo.size} sizes differ (W, H)")
        size = self.size(photo.width, photo.height)

        def ids(array):
            resized = np.array(Image.fromarray(array.astype(np.int32)).resize(size, Image.NEAREST))
            return resized.astype(np.uint16) if resized.min() >= 0 and resized.max() < 2**16 else resized

        return ids(labels), ids(instances), np.asarray(photo.resize(size, Image.BICUBIC))

    def use_cache(self, root: str | Path) -> None:
        """Decode and resize every example once into a memory-mapped cache under `root` (built on
        first use, reused by later runs on the same data and sizes); items are unchanged."""
        columns = [c for c in (self.label_column, self.image_column, self.instance_column) if c is not None]
        files = [file_stamps(self.dataset.select(self.indices)[c]) for c in columns]
        key = cache_key(type(self).__name__, self.dataset._fingerprint, self.indices, files, columns, self.load_size,
                        self.size_factor, self.countable, self.label_nc, self.dontcare)
        self.cache = None  # `decoded` builds it from the files
        self.cache = ArrayCache.build(Path(root) / key, len(self.indices), self.decoded, BadImageError)

    def __getitem__(self, i):
        labels, instances, photo = self.decoded(i)
        h, w = labels.shape
        x = y = 0
        crop_w, crop_h, flip = w, h, False
        if self.train:
            rng = random.Random(hash((self.seed, self.epoch, self.indices[i])))
            if self.crop_size:
                if self.crop_size > min(w, h):
                    raise ValueError(f"crop_size {self.crop_size} is larger than the working size {w}x{h} of "
                                     f"example {self.indices[i]} (load_size {self.load_size})")
                x, y = rng.randint(0, max(0, w - self.crop_size)), rng.randint(0, max(0, h - self.crop_size))
                crop_w, crop_h = self.crop_size, self.crop_size
            flip = self.flip and rng.random() < 0.5

        def prepare(array):
            array = array[y:y + crop_h, x:x + crop_w]
            return np.ascontiguousarray(array[:, ::-1] if flip else array)

        image = prepare(photo).transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
        return {"label": torch.from_numpy(prepare(labels).astype(np.int64))[None],
                "instance": torch.from_numpy(prepare(instances).astype(np.int64))[None],
                "image": torch.from_numpy(image), "index": self.indices[i]}


def flat_pixels(image: Image.Image, tolerance: int = 20) -> np.ndarray:
    """(N, 3) the pixels of an RGB image within `tolerance` (per channel) of their four neighbours:
    a label map's region interiors, without the mixed colours JPEG leaves along its boundaries."""
    a = np.asarray(image.convert("RGB")).astype(np.int64)
    centre = a[1:-1, 1:-1]
    spread = np.max([np.abs(centre - n).max(-1) for n in (a[:-2, 1:-1], a[2:, 1:-1], a[1:-1, :-2], a[1:-1, 2:])], 0)
    return centre[spread <= tolerance]


def recover_palette(images: list[Image.Image], n_colors: int, sample_every: int = 1) -> list[list[int]]:
    """The `n_colors` flat colours of colour-coded label maps (e.g. the JPEG-compressed facades
    labels): the most frequent colours on a 16-level grid, at least 40 apart per channel, taken from
    the region interiors (`flat_pixels`), and only where those hold fewer colours (a few small maps)
    from all pixels; then refined by 5 k-means iterations over the interiors. Returned most
    frequent first."""
    pixels = np.concatenate([flat_pixels(im)[::sample_every] for im in images])
    every = np.concatenate([np.asarray(im.convert("RGB")).reshape(-1, 3)[::sample_every] for im in images])
    centres = []
    for source in (pixels, every.astype(np.int64)):
        binned = (source + 8) // 16
        keys, counts = np.unique(binned[:, 0] * 65536 + binned[:, 1] * 256 + binned[:, 2], return_counts=True)
        for key in keys[np.argsort(-counts)]:
            if len(centres) == n_colors:
                break
            colour = np.array([key // 65536, key // 256 % 256, key % 256]) * 16
            if all(np.abs(colour - c).max() > 40 for c in centres):
                centres.append(colour)
    if len(centres) < n_colors:
        raise ValueError(f"found only {len(centres)} distinct colours, expected {n_colors}")
    centres = kmeans(torch.from_numpy(pixels), n_colors, iterations=5, init=torch.tensor(np.array(centres))).numpy()
    order = np.argsort(-np.bincount(nearest_centres(pixels, centres)[0], minlength=n_colors))
    return centres[order].round().astype(int).tolist()
