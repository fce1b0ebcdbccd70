"""GTSRB (traffic signs, 43 classes) through torchvision's layout, download and checksums, resized to 32×32 RGB.

torchvision's layout under ``<root>/gtsrb/``:

* ``GTSRB/Training/<class>/*.ppm``: one folder per class, ``00000`` … ``00042`` (each also holds
  ``GT-<class>.csv``); the label is the folder's index in sorted order, i.e. its number;
* ``GTSRB/Final_Test/Images/*.ppm`` with the labels in ``GT-final_test.csv`` (``Filename``,
  ``ClassId``, ``;``-separated).

or the archives torchvision downloads, ``GTSRB-Training_fixed.zip``, ``GTSRB_Final_Test_Images.zip``
and ``GTSRB_Final_Test_GT.zip``, placed in ``<root>/gtsrb/``: they are checked against their md5
and extracted on first use, even with downloads off. The extracted PPMs carry no checksum.

Images vary in size (15×15 to 250×250); each is resized to 32×32 with PIL's bilinear filter,
antialiased, which is what BackdoorBench's ``transforms.Resize((32, 32))`` does to a PIL image.
Decoding ~40k PPMs takes a while, so the tensors are cached under ``<root>/bench-cache/``
(see ``bench.core.datasets._cache``); any change to the source files rebuilds the cache.

Note: torchvision's training archive is the competition's online training set (26,640 images);
BackdoorBench downloads ``GTSRB_Final_Training_Images.zip`` (39,209 images: the same plus the
online test set). The test set (12,630 images) is the same.
"""

from __future__ import annotations

from bench.core.datasets._cache import Archive, cached_splits, decode_images, extract_local_archives, source_key, unavailable
from bench.core.data import Augmentation, DataOptions, DatasetSpec, DatasetUnavailableError, ImageSet, LoadedDataset
from bench.core.registry import DATASETS

SIZE = 32
NUM_CLASSES = 43
BASE_URL = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"

# The archives of torchvision.datasets.GTSRB.download (the same names and md5s), each extracted
# into <root>/gtsrb/, and the path each one provides there.
ARCHIVES = (
    Archive("GTSRB-Training_fixed.zip", "513f3c79a4c5141765e10e952eaa2478", "GTSRB/Training"),
    Archive("GTSRB_Final_Test_Images.zip", "c7e4e6327067d32654124b0fe9e82185", "GTSRB/Final_Test/Images"),
    Archive("GTSRB_Final_Test_GT.zip", "fe31e9c9270bbcd7b84b7f21a9d9d9e5", "GT-final_test.csv"),
)

SPEC = DatasetSpec(
    name="gtsrb",
    channels=3,
    size=SIZE,
    num_classes=NUM_CLASSES,
    mean=(0.0, 0.0, 0.0),  # BackdoorBench does not normalise gtsrb (mean 0, std 1)
    std=(1.0, 1.0, 1.0),
    augmentation=Augmentation(crop_padding=4, flip=False),  # BackdoorBench flips cifar10 only
    # Left empty: the per-class counts of torchvision's 26,640-image training set are not
    # published (those of the 39,209-image Final_Training set are); see the module docstring.
    train_class_counts=(),
)


def _check_class_folders(training) -> None:
    """torchvision labels a class by its folder's sorted position: all 43 folders must be there."""
    found = sorted(entry.name for entry in training.iterdir() if entry.is_dir())
    expected = [f"{c:05d}" for c in range(NUM_CLASSES)]
    if found != expected:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        raise FileNotFoundError(
            f"{training} must hold exactly the class folders 00000 … 00042 "
            f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'})"
        )


@DATASETS.register("gtsrb")
def load(options: DataOptions) -> LoadedDataset:
    from torchvision.datasets import GTSRB

    root = options.root
    base = root / "gtsrb"
    training = base / "GTSRB" / "Training"
    test_images = base / "GTSRB" / "Final_Test" / "Images"
    test_labels = base / "GT-final_test.csv"
    try:
        extract_local_archives(base, ARCHIVES, download=options.download)
        train_files = GTSRB(str(root), split="train", download=options.download)
        test_files = GTSRB(str(root), split="test", download=options.download)
        _check_class_folders(training)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError or csv errors
        raise unavailable(
            "gtsrb",
            root,
            error,
            extracted=f"{training}/ and {test_images}/ with {test_labels}",
            archive_dir=base,
            archives=ARCHIVES,
            source=BASE_URL,
        ) from error

    def build() -> tuple[ImageSet, ImageSet]:
        sets = []
        for files in (train_files, test_files):
            try:
                x, y = decode_images(len(files), files.__getitem__, SIZE)  # torchvision's reader: PIL, RGB
            except Exception as error:  # a listed file missing or unreadable
                raise DatasetUnavailableError(f"gtsrb under {base} has an image that cannot be read: {error}") from error
            if len(y) and not (0 <= int(y.min()) and int(y.max()) < NUM_CLASSES):
                raise DatasetUnavailableError(f"{test_labels} has a ClassId outside 0..{NUM_CLASSES - 1}")
            sets.append(ImageSet(x, y))
        return sets[0], sets[1]

    key = source_key([training, test_images, test_labels], root, recipe=f"gtsrb {SIZE}x{SIZE} PIL bilinear")
    train, test = cached_splits(root, f"gtsrb-{SIZE}x{SIZE}", key, build)
    return LoadedDataset(spec=SPEC, train=train, test=test)
