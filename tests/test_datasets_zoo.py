"""CIFAR-100, MNIST, GTSRB and Tiny-ImageNet, read from small folders and archives in each one's real on-disk format.

Every test runs offline: torchvision's downloader and any socket connection are replaced by
functions that record the attempt and fail the way an unreachable network does. For the
torchvision datasets the md5 tables are pointed at the small files, so torchvision's own
integrity code runs on them.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import random
import shutil
import socket
import struct
import tarfile
import urllib.error
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.utils as tv_utils
from PIL import Image
from torchvision import transforms
from torchvision.datasets import CIFAR100, MNIST

import bench.core.datasets._cache as cache
from bench.core.datasets import dataset_spec, gtsrb, load_dataset, tiny
from bench.core.data import DataOptions, DatasetUnavailableError
from bench.core.registry import DATASETS

# ---------------------------------------------------------------- offline, always


@pytest.fixture(autouse=True)
def network(monkeypatch) -> list[str]:
    """Every download or connection attempt is recorded and fails like an unreachable network."""
    attempts: list[str] = []

    def unreachable(url, *args, **kwargs):
        attempts.append(str(url))
        raise urllib.error.URLError("network is unreachable (test)")

    def no_connect(self, address, *args, **kwargs):
        attempts.append(f"socket {address}")
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tv_utils, "_urlretrieve", unreachable)
    monkeypatch.setattr(tv_utils, "_is_remote_location_available", lambda: False, raising=False)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    return attempts


# Error messages are matched on phrases that a temporary path (named after the test) cannot contain.
MD5_MISMATCH = r"(\.zip|\.gz) is corrupted \(its md5 is not [0-9a-f]{32}\)"


def _without_scheme(url: str) -> str:
    """torchvision retries an https URL over http."""
    return url.split("://", 1)[-1]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _zip(archive: Path, base: Path, *members: str) -> Path:
    """``archive`` holding ``members`` (files or folders, recursively) under their paths relative to ``base``."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for member in members:
            top = base / member
            for path in sorted([top, *top.rglob("*")] if top.is_dir() else [top]):
                out.write(path, path.relative_to(base).as_posix())
    return archive


def _no_decoding(monkeypatch) -> None:
    """Opening any image file fails the test: a load that succeeds came from the cache."""

    def refuse(*args, **kwargs):
        raise AssertionError("an image file was decoded although the cache is valid")

    monkeypatch.setattr(Image, "open", refuse)


def _cache_files(root: Path, stem: str) -> list[Path]:
    return sorted((root / cache.CACHE_FOLDER).glob(f"{stem}-*.pt"))


def _assert_split(split, n: int, shape: tuple[int, int, int]) -> None:
    assert split.x.shape == (n, *shape) and split.x.dtype == torch.uint8 and split.x.device.type == "cpu"
    assert split.y.shape == (n,) and split.y.dtype == torch.int64


# ---------------------------------------------------------------- registry and specs


def test_registry_holds_all_six_datasets_under_their_module_names():
    assert {"digits", "cifar10", "cifar100", "gtsrb", "mnist", "tiny"} <= set(DATASETS.names())
    for name in DATASETS.names():
        assert dataset_spec(name).name == name


@pytest.mark.parametrize(
    "name, channels, size, classes, train_total",
    [("cifar100", 3, 32, 100, 50_000), ("gtsrb", 3, 32, 43, None), ("mnist", 1, 28, 10, 60_000), ("tiny", 3, 64, 200, 100_000)],
)
def test_spec(name, channels, size, classes, train_total):
    spec = dataset_spec(name)
    assert (spec.channels, spec.size, spec.num_classes) == (channels, size, classes)
    assert len(spec.mean) == len(spec.std) == channels and all(s > 0 for s in spec.std)
    assert spec.augmentation.crop_padding == 4 and not spec.augmentation.flip, "BackdoorBench flips cifar10 only"
    if train_total is None:
        assert spec.train_class_counts == ()
    else:
        assert len(spec.train_class_counts) == classes and sum(spec.train_class_counts) == train_total


def test_normalisation_follows_backdoorbench():
    assert dataset_spec("gtsrb").mean == (0.0,) * 3 and dataset_spec("gtsrb").std == (1.0,) * 3
    assert dataset_spec("cifar100").mean == (0.5071, 0.4865, 0.4409)
    assert dataset_spec("tiny").std == (0.2302, 0.2265, 0.2262)
    assert dataset_spec("mnist").mean == (0.5,) and dataset_spec("mnist").std == (0.5,)


# ---------------------------------------------------------------- CIFAR-100

C100_TRAIN, C100_TEST = 7, 4


class _Py2Pickler(pickle._Pickler):
    """Writes ``str``/``bytes`` as Python 2 strings, as in the real CIFAR files (pickled by Python 2)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def _dump_py2(obj: object, path: Path) -> None:
    with open(path, "wb") as handle:
        _Py2Pickler(handle, protocol=2).dump(obj)


def write_cifar100(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """``root/cifar-100-python/{train,test,meta}`` as in the official archive."""
    rng = np.random.default_rng(seed)
    folder = root / CIFAR100.base_folder
    folder.mkdir(parents=True)
    splits = {}
    for name, n in (("train", C100_TRAIN), ("test", C100_TEST)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        splits[name] = (data, fine)
        _dump_py2(
            {
                "filenames": [f"img_{k}.png" for k in range(n)],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "data": data,
            },
            folder / name,
        )
    _dump_py2(
        {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]},
        folder / "meta",
    )
    return splits


def use_cifar100_checksums(monkeypatch, folder: Path, tgz: Path | None = None) -> None:
    monkeypatch.setattr(CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": _md5(folder / "meta")})
    if tgz is not None:
        monkeypatch.setattr(CIFAR100, "tgz_md5", _md5(tgz))


def cifar100_archive(tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    """An empty ``root`` holding only ``cifar-100-python.tar.gz``; checksums pointed at it."""
    source, root = tmp_path / "source", tmp_path / "root"
    splits = write_cifar100(source)
    root.mkdir()
    tgz = root / CIFAR100.filename
    with tarfile.open(tgz, "w:gz") as archive:
        archive.add(source / CIFAR100.base_folder, arcname=CIFAR100.base_folder)
    use_cifar100_checksums(monkeypatch, source / CIFAR100.base_folder, tgz)
    return root, splits


def assert_cifar100(loaded, splits) -> None:
    _assert_split(loaded.train, C100_TRAIN, (3, 32, 32))
    _assert_split(loaded.test, C100_TEST, (3, 32, 32))
    for split, name in ((loaded.train, "train"), (loaded.test, "test")):
        data, fine = splits[name]
        assert split.y.tolist() == fine, "fine labels, not coarse"
        assert torch.equal(split.x, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    assert loaded.spec == dataset_spec("cifar100")


def test_cifar100_from_the_extracted_folder(tmp_path, monkeypatch, network):
    splits = write_cifar100(tmp_path)
    use_cifar100_checksums(monkeypatch, tmp_path / CIFAR100.base_folder)
    assert_cifar100(load_dataset("cifar100", DataOptions(root=tmp_path, download=False)), splits)
    assert network == []


@pytest.mark.parametrize("download", [False, True])
def test_cifar100_from_the_archive_alone(tmp_path, monkeypatch, network, download):
    root, splits = cifar100_archive(tmp_path, monkeypatch)
    assert_cifar100(load_dataset("cifar100", DataOptions(root=root, download=download)), splits)
    assert (root / CIFAR100.base_folder / "meta").is_file(), "extracted in place"
    assert network == []
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == [], "no staging folder left behind"


def test_missing_cifar100_names_the_folder_and_the_archive(tmp_path, network):
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("cifar100", DataOptions(root=tmp_path, download=False))
    assert str(tmp_path / "cifar-100-python") in str(info.value)
    assert "cifar-100-python.tar.gz" in str(info.value)
    assert network == []


def test_missing_cifar100_offline_with_download_tries_the_official_url(tmp_path, network):
    with pytest.raises(DatasetUnavailableError, match="cifar-100-python.tar.gz"):
        load_dataset("cifar100", DataOptions(root=tmp_path, download=True))
    assert network[0] == CIFAR100.url and all("cifar-100-python.tar.gz" in url for url in network)  # then http


def test_corrupted_cifar100_file_fails_the_checksum(tmp_path, monkeypatch):
    write_cifar100(tmp_path)
    use_cifar100_checksums(monkeypatch, tmp_path / CIFAR100.base_folder)
    _flip_a_byte(tmp_path / CIFAR100.base_folder / "train")  # a pixel byte: the pickle would still load
    with pytest.raises(DatasetUnavailableError, match="Dataset not found or corrupted"):
        load_dataset("cifar100", DataOptions(root=tmp_path, download=False))


def test_corrupted_cifar100_archive_fails_the_checksum(tmp_path, monkeypatch):
    root, _ = cifar100_archive(tmp_path, monkeypatch)
    _flip_a_byte(root / CIFAR100.filename)
    with pytest.raises(DatasetUnavailableError, match=MD5_MISMATCH):
        load_dataset("cifar100", DataOptions(root=root, download=False))
    assert not (root / CIFAR100.base_folder).exists(), "nothing extracted from a corrupted archive"


# ---------------------------------------------------------------- MNIST

MNIST_TRAIN, MNIST_TEST = 6, 3


def _idx(array: np.ndarray) -> bytes:
    """The IDX format: magic 0x0000 08 <ndim>, big-endian int32 dimensions, then unsigned bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, seed: int = 0, *, extracted: bool = True) -> dict[str, np.ndarray]:
    """``root/MNIST/raw/`` with the four ``.gz`` archives and, if ``extracted``, their IDX files."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (MNIST_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, MNIST_TRAIN).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (MNIST_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, MNIST_TEST).astype(np.uint8),
    }
    for name, array in arrays.items():
        data = _idx(array)
        (raw / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        if extracted:
            (raw / name).write_bytes(data)
    return arrays


def use_mnist_checksums(monkeypatch, raw: Path) -> None:
    monkeypatch.setattr(MNIST, "resources", [(name, _md5(raw / name)) for name, _ in MNIST.resources])


def assert_mnist(loaded, arrays) -> None:
    _assert_split(loaded.train, MNIST_TRAIN, (1, 28, 28))
    _assert_split(loaded.test, MNIST_TEST, (1, 28, 28))
    assert torch.equal(loaded.train.x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(loaded.test.x[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert loaded.train.y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert loaded.test.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert loaded.spec == dataset_spec("mnist")


def test_mnist_from_the_extracted_files(tmp_path, monkeypatch, network):
    arrays = write_mnist(tmp_path)
    use_mnist_checksums(monkeypatch, tmp_path / "MNIST" / "raw")
    assert_mnist(load_dataset("mnist", DataOptions(root=tmp_path, download=False)), arrays)
    assert network == []


@pytest.mark.parametrize("download", [False, True])
def test_mnist_from_the_archives_alone(tmp_path, monkeypatch, network, download):
    arrays = write_mnist(tmp_path, extracted=False)
    raw = tmp_path / "MNIST" / "raw"
    use_mnist_checksums(monkeypatch, raw)
    assert_mnist(load_dataset("mnist", DataOptions(root=tmp_path, download=download)), arrays)
    assert (raw / "t10k-images-idx3-ubyte").is_file(), "decompressed in place"
    assert network == []


def test_missing_mnist_names_the_folder_and_the_archives(tmp_path, network):
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("mnist", DataOptions(root=tmp_path, download=False))
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert network == []


def test_missing_mnist_offline_with_download_tries_the_mirrors(tmp_path, network):
    with pytest.raises(DatasetUnavailableError, match="t10k-labels-idx1-ubyte.gz|train-images-idx3-ubyte.gz"):
        load_dataset("mnist", DataOptions(root=tmp_path, download=True))
    assert network and all(_without_scheme(url).startswith(tuple(map(_without_scheme, MNIST.mirrors))) for url in network)


def test_corrupted_mnist_archive_fails_the_checksum(tmp_path, monkeypatch, network):
    write_mnist(tmp_path, extracted=False)
    raw = tmp_path / "MNIST" / "raw"
    use_mnist_checksums(monkeypatch, raw)
    _flip_a_byte(raw / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetUnavailableError, match=MD5_MISMATCH) as info:
        load_dataset("mnist", DataOptions(root=tmp_path, download=False))
    assert "train-labels-idx1-ubyte.gz" in str(info.value)
    # with downloads on, torchvision's own check rejects the file and tries to fetch it again
    with pytest.raises(DatasetUnavailableError, match=r"Corrupted \(md5 mismatch\).*train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", DataOptions(root=tmp_path, download=True))
    assert any(url.endswith("train-labels-idx1-ubyte.gz") for url in network)


# ---------------------------------------------------------------- GTSRB

GTSRB_TRAIN_PER_CLASS = [1 + (c % 3 == 0) for c in range(43)]  # 1 or 2 images per class
GTSRB_TEST_LABELS = [5, 0, 42, 17, 5]
_CSV_HEADER = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"


def _ppm(path: Path, rng: np.random.Generator, shape: tuple[int, int] | None = None) -> None:
    h, w = shape or (int(rng.integers(15, 60)), int(rng.integers(15, 60)))  # GTSRB images vary in size
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)  # .ppm: binary P6


def write_gtsrb(root: Path, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """torchvision's layout under ``root/gtsrb``; returns the train and test image paths in load order."""
    rng = np.random.default_rng(seed)
    base = root / "gtsrb"
    train_paths = []
    for c, count in enumerate(GTSRB_TRAIN_PER_CLASS):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        folder.mkdir(parents=True)
        rows = []
        for k in range(count):
            path = folder / f"{c % 7:05d}_{k:05d}.ppm"
            _ppm(path, rng, (32, 32) if c == 1 else None)  # class 1 is 32×32 already: no resizing
            train_paths.append(path)
            rows.append(f"{path.name};{Image.open(path).width};{Image.open(path).height};1;1;10;10;{c}\n")
        (folder / f"GT-{c:05d}.csv").write_text(_CSV_HEADER + "".join(rows))
    images = base / "GTSRB" / "Final_Test" / "Images"
    images.mkdir(parents=True)
    test_paths, rows = [], []
    for i, label in enumerate(GTSRB_TEST_LABELS):
        path = images / f"{i:05d}.ppm"
        _ppm(path, rng)
        test_paths.append(path)
        rows.append(f"{path.name};30;30;1;1;10;10;{label}\n")
    unlabelled = "".join(row.rsplit(";", 1)[0] + "\n" for row in rows)  # the archive's own CSV, without ClassId
    (images / "GT-final_test.test.csv").write_text(_CSV_HEADER.replace(";ClassId", "") + unlabelled)
    (base / "GT-final_test.csv").write_text(_CSV_HEADER + "".join(rows))
    return train_paths, test_paths


def _backdoorbench_resize(path: Path) -> torch.Tensor:
    """What BackdoorBench does to a GTSRB image: ``transforms.Resize((32, 32))`` on the PIL image."""
    with Image.open(path) as image:
        return torch.from_numpy(np.array(transforms.Resize((32, 32))(image.convert("RGB")))).permute(2, 0, 1)


def assert_gtsrb(loaded, train_paths, test_paths) -> None:
    _assert_split(loaded.train, len(train_paths), (3, 32, 32))
    _assert_split(loaded.test, len(test_paths), (3, 32, 32))
    assert loaded.train.y.tolist() == [int(p.parent.name) for p in train_paths], "label = class folder"
    assert loaded.test.y.tolist() == GTSRB_TEST_LABELS, "labels from GT-final_test.csv, in its order"
    for split, paths in ((loaded.train, train_paths), (loaded.test, test_paths)):
        for i, path in enumerate(paths):
            assert torch.equal(split.x[i], _backdoorbench_resize(path)), path
    assert loaded.spec == dataset_spec("gtsrb")


def test_gtsrb_from_the_extracted_folders(tmp_path, network):
    train_paths, test_paths = write_gtsrb(tmp_path)
    loaded = load_dataset("gtsrb", DataOptions(root=tmp_path, download=False))
    assert_gtsrb(loaded, train_paths, test_paths)
    assert len(loaded.train) == sum(GTSRB_TRAIN_PER_CLASS) and len(loaded.test) == len(GTSRB_TEST_LABELS)
    first_of_class_1 = GTSRB_TRAIN_PER_CLASS[0]  # its image is 32×32 on disk: kept as it is
    on_disk = np.array(Image.open(train_paths[first_of_class_1]))
    assert torch.equal(loaded.train.x[first_of_class_1], torch.from_numpy(on_disk).permute(2, 0, 1))
    assert len(_cache_files(tmp_path, "gtsrb-32x32")) == 1
    assert network == []


def gtsrb_archives(tmp_path: Path, monkeypatch) -> tuple[Path, list[Path], list[Path]]:
    """An empty ``root/gtsrb/`` holding only the three archives torchvision downloads; md5s pointed at them."""
    source, root = tmp_path / "source", tmp_path / "root"
    train_paths, test_paths = write_gtsrb(source)
    base, src = root / "gtsrb", source / "gtsrb"
    base.mkdir(parents=True)
    zips = [
        _zip(base / "GTSRB-Training_fixed.zip", src, "GTSRB/Training"),
        _zip(base / "GTSRB_Final_Test_Images.zip", src, "GTSRB/Final_Test"),
        _zip(base / "GTSRB_Final_Test_GT.zip", src, "GT-final_test.csv"),
    ]
    archives = tuple(cache.Archive(a.filename, _md5(z), a.provides) for a, z in zip(gtsrb.ARCHIVES, zips))
    assert [a.filename for a in archives] == [z.name for z in zips]
    monkeypatch.setattr(gtsrb, "ARCHIVES", archives)
    moved = lambda paths: [root / p.relative_to(source) for p in paths]  # noqa: E731
    return root, moved(train_paths), moved(test_paths)


def test_gtsrb_from_the_archives_alone(tmp_path, monkeypatch, network):
    root, train_paths, test_paths = gtsrb_archives(tmp_path, monkeypatch)
    assert_gtsrb(load_dataset("gtsrb", DataOptions(root=root, download=False)), train_paths, test_paths)
    assert network == []


def test_corrupted_gtsrb_archive_fails_the_checksum(tmp_path, monkeypatch):
    root, _, _ = gtsrb_archives(tmp_path, monkeypatch)
    _flip_a_byte(root / "gtsrb" / "GTSRB_Final_Test_Images.zip")
    with pytest.raises(DatasetUnavailableError, match=MD5_MISMATCH) as info:
        load_dataset("gtsrb", DataOptions(root=root, download=False))
    assert "GTSRB_Final_Test_Images.zip" in str(info.value)


def test_missing_gtsrb_names_the_folders_and_the_archives(tmp_path, network):
    for download in (False, True):
        with pytest.raises(DatasetUnavailableError) as info:
            load_dataset("gtsrb", DataOptions(root=tmp_path, download=download))
        message = str(info.value)
        assert str(tmp_path / "gtsrb" / "GTSRB" / "Training") in message
        assert "GTSRB-Training_fixed.zip" in message and str(tmp_path / "gtsrb") in message
    source = _without_scheme(gtsrb.BASE_URL)
    assert network and all(_without_scheme(url).startswith(source) for url in network), "only with downloads on"


def test_gtsrb_without_every_class_folder_is_refused(tmp_path):
    write_gtsrb(tmp_path)
    shutil.rmtree(tmp_path / "gtsrb" / "GTSRB" / "Training" / "00042")
    with pytest.raises(DatasetUnavailableError, match="missing: 00042"):
        load_dataset("gtsrb", DataOptions(root=tmp_path, download=False))


def test_gtsrb_cache_is_used_then_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    train_paths, _ = write_gtsrb(tmp_path)
    options = DataOptions(root=tmp_path, download=False)
    first = load_dataset("gtsrb", options)
    with monkeypatch.context() as patch:
        _no_decoding(patch)
        second = load_dataset("gtsrb", options)
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.y, second.test.y)

    # one more file: the count changes
    extra = tmp_path / "gtsrb" / "GTSRB" / "Training" / "00007" / "00000_00009.ppm"
    _ppm(extra, np.random.default_rng(9))
    third = load_dataset("gtsrb", options)
    assert len(third.train) == len(first.train) + 1 and 7 in third.train.y.tolist()

    # same size, new pixels, new time: the content changes
    victim = train_paths[0]
    with Image.open(victim) as image:
        shape = (image.height, image.width)
    _ppm(victim, np.random.default_rng(10), shape)
    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    fourth = load_dataset("gtsrb", options)
    assert torch.equal(fourth.train.x[0], _backdoorbench_resize(victim))
    assert not torch.equal(fourth.train.x[0], third.train.x[0])
    assert len(_cache_files(tmp_path, "gtsrb-32x32")) == 1, "stale caches are removed"


# ---------------------------------------------------------------- Tiny-ImageNet

WNIDS = [f"n{(7919 * i * 104729) % 10**8:08d}" for i in range(1, 201)]  # 200 distinct, unsorted
TINY_ORDER = random.Random(0).sample(WNIDS, len(WNIDS))  # wnids.txt's line order: label = line number
TINY_TRAIN_PER_CLASS = [1 + (i % 50 == 0) for i in range(200)]  # by label: 1 or 2 images
TINY_VAL = [(WNIDS[3], "L"), (WNIDS[0], "RGB"), (WNIDS[199], "RGB"), (WNIDS[3], "RGB"), (WNIDS[57], "RGB")]


def _colour(label: int, k: int) -> tuple[int, int, int]:
    return (label % 256, (37 * label + 11) % 256, 30 + 60 * k)


def _jpeg(path: Path, colour: tuple[int, int, int], mode: str = "RGB") -> None:
    image = Image.new("RGB", (64, 64), colour)
    (image.convert("L") if mode == "L" else image).save(path, "JPEG", quality=95)


def write_tiny(root: Path) -> Path:
    """``root/tiny-imagenet-200/`` as in the official zip: wnids.txt, words.txt, train/, val/, test/."""
    assert len(set(WNIDS)) == 200 and TINY_ORDER != sorted(WNIDS)
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in TINY_ORDER))
    (folder / "words.txt").write_text("".join(f"{w}\tthing {i}\n" for i, w in enumerate(WNIDS)))
    for label, wnid in enumerate(TINY_ORDER):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        lines = []
        for k in range(TINY_TRAIN_PER_CLASS[label]):
            _jpeg(images / f"{wnid}_{k}.JPEG", _colour(label, k))
            lines.append(f"{wnid}_{k}.JPEG\t0\t0\t63\t63\n")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(lines))
    (folder / "val" / "images").mkdir(parents=True)
    lines = []
    for i, (wnid, mode) in enumerate(TINY_VAL):
        _jpeg(folder / "val" / "images" / f"val_{i}.JPEG", _colour(TINY_ORDER.index(wnid), 3), mode)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    (folder / "test" / "images").mkdir(parents=True)
    _jpeg(folder / "test" / "images" / "test_0.JPEG", (1, 2, 3))  # unlabelled, not read
    return folder


def assert_tiny(loaded) -> None:
    n_train = sum(TINY_TRAIN_PER_CLASS)
    _assert_split(loaded.train, n_train, (3, 64, 64))
    _assert_split(loaded.test, len(TINY_VAL), (3, 64, 64))
    expected_train = [label for label, count in enumerate(TINY_TRAIN_PER_CLASS) for _ in range(count)]
    assert loaded.train.y.tolist() == expected_train, "label = line of the wnid in wnids.txt"
    assert loaded.test.y.tolist() == [TINY_ORDER.index(w) for w, _ in TINY_VAL], "val_annotations.txt order"
    ks = [k for count in TINY_TRAIN_PER_CLASS for k in range(count)]
    want = torch.tensor([_colour(label, k) for label, k in zip(expected_train, ks)], dtype=torch.int16)
    got = loaded.train.x.to(torch.int16)
    assert (got - want[:, :, None, None]).abs().max() <= 3, "each image belongs to its label (JPEG is lossy)"
    gray = loaded.test.x[0].to(torch.int16)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2]), "a grayscale JPEG becomes RGB"
    assert loaded.spec == dataset_spec("tiny")


def test_tiny_from_the_extracted_folder(tmp_path, network):
    write_tiny(tmp_path)
    loaded = load_dataset("tiny", DataOptions(root=tmp_path, download=False))
    assert_tiny(loaded)
    assert len(_cache_files(tmp_path, "tiny-64x64")) == 1
    assert network == []


def tiny_archive(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """The official zip's layout: a top-level ``tiny-imagenet-200/`` folder; ``tiny.MD5`` pointed at it."""
    source = tmp_path / "source"
    write_tiny(source)
    archive = _zip(tmp_path / "tiny-imagenet-200.zip", source, "tiny-imagenet-200")
    monkeypatch.setattr(tiny, "MD5", _md5(archive))
    return archive, tmp_path / "root"


def test_tiny_from_the_archive_alone(tmp_path, monkeypatch, network):
    archive, root = tiny_archive(tmp_path, monkeypatch)
    root.mkdir()
    shutil.copy(archive, root / tiny.FILENAME)
    assert_tiny(load_dataset("tiny", DataOptions(root=root, download=False)))
    assert (root / "tiny-imagenet-200" / "wnids.txt").is_file(), "extracted in place"
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == [], "no staging folder left behind"
    assert network == []


def test_tiny_downloads_the_official_zip_and_checks_it(tmp_path, monkeypatch):
    archive, root = tiny_archive(tmp_path, monkeypatch)
    requested = []

    def serve(url, filename, *args, **kwargs):
        requested.append(url)
        shutil.copy(archive, filename)

    monkeypatch.setattr(tv_utils, "_urlretrieve", serve)
    assert_tiny(load_dataset("tiny", DataOptions(root=root, download=True)))
    assert requested == ["http://cs231n.stanford.edu/tiny-imagenet-200.zip"]

    # a download that arrives damaged is refused by torchvision's md5 check
    monkeypatch.setattr(tiny, "MD5", "0" * 32)
    with pytest.raises(DatasetUnavailableError, match="File not found or corrupted"):
        load_dataset("tiny", DataOptions(root=tmp_path / "other", download=True))


def test_missing_tiny_names_the_folder_and_the_archive(tmp_path, network):
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("tiny", DataOptions(root=tmp_path, download=False))
    assert str(tmp_path / "tiny-imagenet-200") in str(info.value) and "tiny-imagenet-200.zip" in str(info.value)
    assert network == []
    with pytest.raises(DatasetUnavailableError, match="tiny-imagenet-200.zip"):
        load_dataset("tiny", DataOptions(root=tmp_path, download=True))
    assert network == [tiny.URL]


def test_corrupted_tiny_archive_fails_the_checksum(tmp_path, monkeypatch, network):
    archive, root = tiny_archive(tmp_path, monkeypatch)
    root.mkdir()
    shutil.copy(archive, root / tiny.FILENAME)
    _flip_a_byte(root / tiny.FILENAME)
    with pytest.raises(DatasetUnavailableError, match=MD5_MISMATCH):
        load_dataset("tiny", DataOptions(root=root, download=False))
    assert not (root / "tiny-imagenet-200").exists()
    with pytest.raises(DatasetUnavailableError, match=r"Corrupted \(md5 mismatch\)"):
        load_dataset("tiny", DataOptions(root=root, download=True))  # tries to fetch it again: offline
    assert network == [tiny.URL]


def test_tiny_with_a_wrong_wnid_list_is_refused(tmp_path):
    folder = write_tiny(tmp_path)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in WNIDS[:199]))
    with pytest.raises(DatasetUnavailableError, match="199 wnids"):
        load_dataset("tiny", DataOptions(root=tmp_path, download=False))


def test_tiny_cache_is_used_then_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    folder = write_tiny(tmp_path)
    options = DataOptions(root=tmp_path, download=False)
    first = load_dataset("tiny", options)
    with monkeypatch.context() as patch:
        _no_decoding(patch)
        second = load_dataset("tiny", options)
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.y, second.test.y)

    wnid = TINY_ORDER[10]
    _jpeg(folder / "train" / wnid / "images" / f"{wnid}_9.JPEG", (200, 100, 50))
    third = load_dataset("tiny", options)
    assert len(third.train) == len(first.train) + 1
    assert third.train.y.tolist().count(10) == TINY_TRAIN_PER_CLASS[10] + 1

    (folder / "val" / "images" / "val_1.JPEG").unlink()  # listed but gone: the rebuild says so
    with pytest.raises(DatasetUnavailableError, match="val_1.JPEG"):
        load_dataset("tiny", options)


# ---------------------------------------------------------------- the cache itself


def test_an_unreadable_cache_is_rebuilt(tmp_path):
    write_gtsrb(tmp_path)
    options = DataOptions(root=tmp_path, download=False)
    first = load_dataset("gtsrb", options)
    (path,) = _cache_files(tmp_path, "gtsrb-32x32")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = load_dataset("gtsrb", options)
    assert torch.equal(first.train.x, again.train.x)
    assert torch.load(path, weights_only=True)["train_x"].shape == first.train.x.shape, "rewritten whole"


def test_a_root_that_cannot_hold_the_cache_still_loads(tmp_path, monkeypatch):
    write_gtsrb(tmp_path)

    def refuse(src, dst):
        raise PermissionError(13, "read-only file system (test)", str(dst))

    monkeypatch.setattr(cache.os, "replace", refuse)
    with pytest.warns(RuntimeWarning, match="could not write the decoded-image cache"):
        loaded = load_dataset("gtsrb", DataOptions(root=tmp_path, download=False))
    assert len(loaded.train) == sum(GTSRB_TRAIN_PER_CLASS)
    assert _cache_files(tmp_path, "gtsrb-32x32") == []
    assert [p.name for p in (tmp_path / cache.CACHE_FOLDER).iterdir()] == [], "no temporary file left behind"


def test_cache_key_follows_count_size_and_time(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "a").write_bytes(b"12345")
    key = lambda: cache.source_key([folder], tmp_path, "recipe")  # noqa: E731
    before = key()
    assert key() == before and cache.source_key([folder], tmp_path, "other recipe") != before
    (folder / "a").write_bytes(b"123456")
    assert key() != before
    resized = key()
    (folder / "b").write_bytes(b"")
    assert key() != resized
    counted = key()
    stat = (folder / "b").stat()
    os.utime(folder / "b", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert key() != counted


def test_warnings_are_not_raised_on_a_clean_load(tmp_path):
    write_gtsrb(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("gtsrb", DataOptions(root=tmp_path, download=False))
        load_dataset("gtsrb", DataOptions(root=tmp_path, download=False))
