"""Tiny-ImageNet (64×64 RGB, 200 classes), read from its standard folder layout.

Under ``<root>/tiny-imagenet-200/`` (the layout of the official zip):

* ``wnids.txt``: the 200 WordNet ids, one per line; a class's label is its line number (as
  BackdoorBench reads it, so that a target label means the same class in both);
* ``train/<wnid>/images/*.JPEG``: 500 images per class, 100,000 in all (the training set);
* ``val/images/*.JPEG`` with ``val/val_annotations.txt`` (tab-separated: file name, wnid, box):
  10,000 images, the test set (the official ``test/`` folder has no labels and is not read).

Or the official archive ``tiny-imagenet-200.zip`` is placed in ``<root>``: it is checked against
its md5 and extracted on first use, even with downloads off; with downloads allowed it is fetched
from the official URL (torchvision's ``download_url``, which checks the md5 too). The JPEGs carry
no checksum. Images are decoded with PIL and converted to RGB (a few are grayscale); decoded
tensors are cached under ``<root>/bench-cache/`` (see ``bench.core.datasets._cache``).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from bench.core.datasets._cache import (
    Archive,
    archive_state,
    cached_splits,
    decode_images,
    extract,
    source_key,
    unavailable,
)
from bench.core.data import Augmentation, DataOptions, DatasetSpec, DatasetUnavailableError, ImageSet, LoadedDataset
from bench.core.registry import DATASETS

SIZE = 64
NUM_CLASSES = 200
FOLDER = "tiny-imagenet-200"
FILENAME = "tiny-imagenet-200.zip"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"

SPEC = DatasetSpec(
    name="tiny",
    channels=3,
    size=SIZE,
    num_classes=NUM_CLASSES,
    # BackdoorBench's values (dataset_and_transform_generate.py, get_dataset_normalization); the
    # reference table leaves them blank. They are the commonly published Tiny-ImageNet statistics.
    mean=(0.4802, 0.4481, 0.3975),
    std=(0.2302, 0.2265, 0.2262),
    # BackdoorBench pads by 4 for every dataset, 64×64 included; it flips cifar10 only.
    augmentation=Augmentation(crop_padding=4, flip=False),
    train_class_counts=(500,) * NUM_CLASSES,
)


def _archive() -> Archive:
    return Archive(FILENAME, MD5, FOLDER)  # read at call time: tests point MD5 at small archives


def _fetch(root: Path, download: bool) -> None:
    """Make ``<root>/tiny-imagenet-200/`` exist: from a verified local archive, else by downloading."""
    archive = root / FILENAME
    state = archive_state(archive, MD5)
    if state == "ok":
        extract(archive, root)
        return
    if not download:
        if state == "corrupted":
            raise RuntimeError(f"{archive} is corrupted (its md5 is not {MD5}); delete it and put a complete copy there")
        raise FileNotFoundError(f"neither {root / FOLDER}/ nor {archive} exists, and downloads are off")
    from torchvision.datasets.utils import download_url

    download_url(URL, str(root), filename=FILENAME, md5=MD5)  # re-fetches a corrupted file; checks the md5
    extract(archive, root)


def _index(folder: Path) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(path, label) for the training images and for the validation (test) images."""
    wnids = (folder / "wnids.txt").read_text().split()  # label = line number, as BackdoorBench reads it
    if len(set(wnids)) != NUM_CLASSES or len(wnids) != NUM_CLASSES:
        raise ValueError(f"{folder / 'wnids.txt'} lists {len(wnids)} wnids ({len(set(wnids))} distinct), expected {NUM_CLASSES}")
    label = {wnid: i for i, wnid in enumerate(wnids)}
    train = []
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        if not images.is_dir():
            raise FileNotFoundError(f"{images}/ is missing")
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
        train.extend((path, label[wnid]) for path in files)
    test = []
    annotations = folder / "val" / "val_annotations.txt"
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label:
            raise ValueError(f"{annotations}, line {number}: expected '<file>\\t<wnid>\\t…' with a wnid of wnids.txt")
        test.append((folder / "val" / "images" / fields[0], label[fields[1]]))
    return train, test


def _open(samples: list[tuple[Path, int]]):
    def get(i: int) -> tuple[Image.Image, int]:
        path, label = samples[i]
        with Image.open(path) as image:
            return image.convert("RGB"), label

    return get


@DATASETS.register("tiny")
def load(options: DataOptions) -> LoadedDataset:
    root = options.root
    folder = root / FOLDER
    try:
        if not folder.is_dir():
            _fetch(root, options.download)
        train_samples, test_samples = _index(folder)
    except Exception as error:  # OSError, URLError, RuntimeError (checksum), ValueError (layout)
        raise unavailable(
            "tiny",
            root,
            error,
            extracted=f"{folder}/ (wnids.txt, train/, val/)",
            archive_dir=root,
            archives=[_archive()],
            source=URL,
        ) from error

    def build() -> tuple[ImageSet, ImageSet]:
        sets = []
        for samples in (train_samples, test_samples):
            try:
                x, y = decode_images(len(samples), _open(samples), SIZE)
            except Exception as error:  # a listed file missing or unreadable
                raise DatasetUnavailableError(f"tiny under {folder} has an image that cannot be read: {error}") from error
            sets.append(ImageSet(x, y))
        return sets[0], sets[1]

    sources = [folder / "wnids.txt", folder / "train", folder / "val"]
    key = source_key(sources, root, recipe=f"tiny {SIZE}x{SIZE} wnids-line-order PIL")
    train, test = cached_splits(root, f"tiny-{SIZE}x{SIZE}", key, build)
    return LoadedDataset(spec=SPEC, train=train, test=test)
