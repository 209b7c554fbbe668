"""Training images decoded once: each example's arrays (decoded and, where the size is fixed,
resized) stored in one memory-mapped file, so no training step decodes a JPEG and every process of a
run shares one copy through the page cache.

A cache folder holds `arrays.bin` (the raw bytes of every array) and `index.json` (per example its
arrays' offsets, shapes and dtypes, or the error that made it unreadable). It is written under a
temporary name and renamed when complete, so a killed build is never read; `key` names the data and
its preparation, so a changed dataset or size gets a new folder.
"""

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def cache_key(*parts) -> str:
    """A short hash of `parts` (JSON-serialisable): the folder name of one dataset's cache."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_stamps(values: list[dict]) -> list:
    """(size, mtime) of each undecoded `datasets.Image` value read from a file, for the cache key: a
    dataset's fingerprint covers its paths but not what the files hold, so an image edited in place
    must change the key. Values holding their bytes (covered by the fingerprint) give None."""
    stamps = []
    for value in values:
        path = value.get("path") if value.get("bytes") is None else None
        try:
            stat = os.stat(path) if path else None
        except OSError:
            stat = None  # unreadable: decoding names it
        stamps.append(None if stat is None else (stat.st_size, stat.st_mtime_ns))
    return stamps


class ArrayCache:
    """Example i -> the tuple of numpy arrays `produce(i)` returned when the cache was built (read
    only, memory-mapped), or the `error_type` it raised, raised again with the same message."""

    def __init__(self, folder: Path, error_type: type[Exception]):
        self.folder, self.error_type = Path(folder), error_type
        self.index = json.loads((self.folder / "index.json").read_text())
        self._data = None

    @classmethod
    def build(cls, folder: str | os.PathLike, n: int, produce: Callable[[int], tuple[np.ndarray, ...]],
              error_type: type[Exception]) -> "ArrayCache":
        """Open the cache in `folder`, or first write it from `produce(0)` ... `produce(n - 1)`
        (examples raising `error_type` are stored as their error)."""
        folder = Path(folder)
        if not (folder / "index.json").is_file():
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            index, offset = [], 0
            with open(partial / "arrays.bin", "wb") as f:
                for i in range(n):
                    try:
                        arrays = produce(i)
                    except error_type as e:
                        index.append({"error": str(e)})
                        continue
                    entry = []
                    for array in arrays:
                        array = np.ascontiguousarray(array)
                        f.write(array.tobytes())
                        entry.append({"offset": offset, "shape": list(array.shape), "dtype": array.dtype.str})
                        offset += array.nbytes
                    index.append({"arrays": entry})
            (partial / "index.json").write_text(json.dumps(index))
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
            logger.info(f"decoded {n} examples once into {folder} ({offset / 2**20:.0f} MB)")
        cache = cls(folder, error_type)
        if len(cache) != n:
            raise ValueError(f"{folder} holds {len(cache)} examples, expected {n}: delete it to rebuild")
        return cache

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        entry = self.index[i]
        if "error" in entry:
            raise self.error_type(entry["error"])
        if self._data is None:  # opened lazily, so that DataLoader workers each map the file themselves
            size = (self.folder / "arrays.bin").stat().st_size
            self._data = np.memmap(self.folder / "arrays.bin", mode="r") if size else np.zeros(0, np.uint8)
        return tuple(np.ndarray(a["shape"], np.dtype(a["dtype"]), self._data, a["offset"]) for a in entry["arrays"])

    def __getstate__(self):
        return {**self.__dict__, "_data": None}
