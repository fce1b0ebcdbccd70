"""Shared plumbing for datasets read from files: verified local archives, and a decoded-image cache.

* **Archives.** An archive placed where torchvision would download it is checked against its
  md5 (torchvision's own ``check_integrity``) and extracted on first use, with or without
  downloads allowed: extracting is not downloading. Extraction goes through a staging folder
  inside the destination, so an interrupted run never leaves a half-extracted folder in place.
* **Decoded-image cache.** Decoding tens of thousands of image files takes minutes; the result
  (uint8 tensors) is kept under ``<root>/bench-cache/<name>-<H>x<W>-<key>.pt``. The key hashes
  the recipe and every source file's relative path, size and modification time, so adding,
  removing, replacing or touching a source file rebuilds the cache. Files are written to a
  temporary name and renamed (atomic), read with ``torch.load(weights_only=True)``, and a cache
  that cannot be read is rebuilt. A root that cannot be written only costs the cache (a warning).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from bench.core.data import DatasetUnavailableError, ImageSet
from bench.core.files import atomic_write, staging_folder

CACHE_FOLDER = "bench-cache"
_CACHE_FORMAT = 1  # bump when the stored layout changes
_DECODE_CHUNK = 256  # images per task handed to a decoding thread


# ---------------------------------------------------------------- archives


@dataclass(frozen=True)
class Archive:
    """An archive file, its md5, and the path (relative to where it is extracted) it provides."""

    filename: str
    md5: str
    provides: str


class CorruptArchiveError(RuntimeError):
    """A local archive whose md5 does not match."""


def archive_state(path: Path, md5: str) -> str:
    """``"missing"``, ``"ok"`` or ``"corrupted"``, by torchvision's own md5 check."""
    from torchvision.datasets.utils import check_integrity

    if not path.is_file():
        return "missing"
    return "ok" if check_integrity(str(path), md5) else "corrupted"


def extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest`` (torchvision's extractors), via a staging folder in ``dest``."""
    from torchvision.datasets.utils import extract_archive

    with staging_folder(dest / archive.name) as staging:
        extract_archive(str(archive), str(staging))
        _move_into(staging, dest)


def _move_into(source: Path, dest: Path) -> None:
    """Move ``source``'s entries into ``dest``, merging folders that exist; each new folder moves by one rename."""
    for entry in sorted(source.iterdir()):
        target = dest / entry.name
        if entry.is_dir() and target.is_dir():
            _move_into(entry, target)
        else:
            os.replace(entry, target)


def extract_local_archives(folder: Path, archives: Sequence[Archive], *, download: bool) -> None:
    """For each archive whose ``provides`` path is missing under ``folder``: extract ``folder/filename`` if it verifies.

    A corrupted archive raises ``CorruptArchiveError`` when downloads are off; when they are on it is
    left for the download, which checks it again and fetches it anew.
    """
    for archive in archives:
        if (folder / archive.provides).exists():
            continue
        path = folder / archive.filename
        state = archive_state(path, archive.md5)
        if state == "ok":
            extract(path, folder)
        elif state == "corrupted" and not download:
            raise CorruptArchiveError(
                f"{path} is corrupted (its md5 is not {archive.md5}); delete it and put a complete copy there"
            )


def unavailable(
    name: str,
    root: Path,
    cause: BaseException | str,
    *,
    extracted: str,
    archive_dir: Path,
    archives: Sequence[Archive],
    source: str,
) -> DatasetUnavailableError:
    """The error for a dataset that is missing or broken: it names where the files go and where they come from."""
    files = ", ".join(a.filename for a in archives)
    noun = "archives" if len(archives) > 1 else "archive"
    note = ""
    if not isinstance(cause, CorruptArchiveError):
        bad = [str(archive_dir / a.filename) for a in archives if archive_state(archive_dir / a.filename, a.md5) == "corrupted"]
        if bad:
            note = f" Corrupted (md5 mismatch): {', '.join(bad)}."
    return DatasetUnavailableError(
        f"{name} is not available under {root}: {cause}.{note} "
        f"Put the extracted files at {extracted}, "
        f"or the {noun} {files} (from {source}) in {archive_dir}/ (checked against its md5 and extracted "
        f"on first use, offline), or allow downloads."
    )


# ---------------------------------------------------------------- decoding


def _workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def decode_images(count: int, get: Callable[[int], tuple[Image.Image, int]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``x: uint8 [count, 3, size, size]``, ``y: int64 [count]`` from ``get(i) -> (PIL image, label)``.

    Images are converted to RGB and, where their size differs, resized with PIL's bilinear filter
    (antialiased when shrinking): what ``torchvision.transforms.Resize((size, size))`` does to a PIL image.
    Threads share the work (PIL releases the GIL while decoding and resizing).
    """
    x = torch.empty((count, 3, size, size), dtype=torch.uint8)
    y = torch.empty(count, dtype=torch.int64)
    pixels, labels = x.numpy(), y.numpy()  # views: writing them fills x and y

    def work(indices: range) -> None:
        for i in indices:
            image, label = get(i)
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            pixels[i] = np.asarray(rgb).transpose(2, 0, 1)
            labels[i] = label

    chunks = [range(start, min(start + _DECODE_CHUNK, count)) for start in range(0, count, _DECODE_CHUNK)]
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        for _ in pool.map(work, chunks):  # re-raises the first error
            pass
    return x, y


# ---------------------------------------------------------------- cache


def source_key(paths: Iterable[Path], base: Path, recipe: str) -> str:
    """A hash of ``recipe`` and of every file under ``paths``: relative path, size, modification time."""
    digest = hashlib.sha256(f"format {_CACHE_FORMAT}\n{recipe}\n".encode())
    for path in paths:
        entries: list[tuple[str, int, int]] = []
        if path.is_dir():
            for folder, _, names in os.walk(path):
                for file_name in names:
                    full = os.path.join(folder, file_name)
                    info = os.stat(full)
                    entries.append((os.path.relpath(full, base), info.st_size, info.st_mtime_ns))
        elif path.is_file():
            info = path.stat()
            entries.append((os.path.relpath(path, base), info.st_size, info.st_mtime_ns))
        else:
            entries.append((os.path.relpath(path, base), -1, -1))
        for rel, size, mtime in sorted(entries):
            digest.update(f"{rel}\t{size}\t{mtime}\n".encode())
    return digest.hexdigest()


def cache_path(root: Path, stem: str, key: str) -> Path:
    """``<root>/bench-cache/<stem>-<key[:16]>.pt``; ``stem`` names the dataset and size, e.g. ``gtsrb-32x32``."""
    return root / CACHE_FOLDER / f"{stem}-{key[:16]}.pt"


def _read(path: Path, key: str) -> tuple[ImageSet, ImageSet] | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format") != _CACHE_FORMAT or blob.get("key") != key:
            return None
        return ImageSet(blob["train_x"], blob["train_y"]), ImageSet(blob["test_x"], blob["test_y"])
    except Exception as error:  # truncated or foreign file: decode again
        warnings.warn(f"ignoring the unreadable decoded-image cache {path}: {error}", RuntimeWarning, stacklevel=3)
        return None


def _write(path: Path, stem: str, key: str, train: ImageSet, test: ImageSet) -> None:
    blob = {"format": _CACHE_FORMAT, "key": key}
    blob.update(train_x=train.x, train_y=train.y, test_x=test.x, test_y=test.y)
    atomic_write(path, lambda out: torch.save(blob, out))
    for stale in path.parent.glob(f"{stem}-*.pt"):  # older versions of the same dataset
        if stale != path:
            stale.unlink(missing_ok=True)


def cached_splits(
    root: Path, stem: str, key: str, build: Callable[[], tuple[ImageSet, ImageSet]]
) -> tuple[ImageSet, ImageSet]:
    """The (train, test) sets cached under ``key``, else ``build()``'s, which are then cached."""
    path = cache_path(root, stem, key)
    hit = _read(path, key)
    if hit is not None:
        return hit
    train, test = build()
    try:
        _write(path, stem, key, train, test)
    except OSError as error:
        warnings.warn(
            f"could not write the decoded-image cache {path}: {error}; the images will be decoded again next time",
            RuntimeWarning,
            stacklevel=2,
        )
    return train, test
