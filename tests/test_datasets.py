"""Datasets: the embedded digits, and CIFAR-10 read from small archives in torchvision's on-disk format."""

from __future__ import annotations

import hashlib
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.utils as tv_utils
from torchvision.datasets import CIFAR10

from bench.core.datasets import dataset_spec, load_dataset
from bench.core.data import DataOptions, DatasetUnavailableError

# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", DataOptions(root=Path("unused"), download=False))


def test_digits_shapes_dtypes_and_classes(digits):
    for split in (digits.train, digits.test):
        assert split.x.dtype == torch.uint8 and split.x.shape[1:] == (1, 16, 16)
        assert split.y.dtype == torch.int64
        assert sorted(split.y.unique().tolist()) == list(range(10))
    assert digits.spec.num_classes == 10 and digits.spec.channels == 1 and digits.spec.size == 16
    assert dataset_spec("digits") == digits.spec


def test_digits_use_the_whole_pixel_range(digits):
    """sklearn's digits are 0–16; they must arrive as 0–255."""
    assert int(digits.train.x.min()) == 0 and int(digits.train.x.max()) == 255


def test_digits_split_sizes_are_fixed(digits):
    """The split is part of the dataset: 1,797 images, 359 in test (20% per class, rounded)."""
    assert (len(digits.train), len(digits.test)) == (1438, 359)


def test_digits_split_is_stratified(digits):
    train_counts = torch.bincount(digits.train.y, minlength=10)
    test_counts = torch.bincount(digits.test.y, minlength=10)
    assert ((test_counts - 0.2 * (train_counts + test_counts)).abs() <= 0.5).all()


def test_digits_are_identical_across_loads(digits):
    again = load_dataset("digits", DataOptions(root=Path("elsewhere"), download=True))
    for a, b in ((digits.train, again.train), (digits.test, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_digits_train_and_test_are_disjoint(digits):
    """The 1,797 source images are all distinct, so shared rows would mean a leaked split."""
    train_rows = {bytes(r) for r in digits.train.x.flatten(1).numpy()}
    test_rows = {bytes(r) for r in digits.test.x.flatten(1).numpy()}
    assert len(train_rows) == len(digits.train) and len(test_rows) == len(digits.test)
    assert not train_rows & test_rows


# ---------------------------------------------------------------- CIFAR-10 on disk

TRAIN_SIZES = (3, 2, 3, 2, 4)  # images in data_batch_1..5
TEST_SIZE = 5
LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _Py2Pickler(pickle._Pickler):
    """Writes ``str`` and ``bytes`` as Python 2 ``str`` opcodes, as in the real CIFAR files (pickled by Python 2).

    Read with ``encoding="bytes"`` the keys are ``b'data'``, ``b'labels'``; torchvision reads with
    ``encoding="latin1"`` and sees ``'data'``, ``'labels'``; numpy's array payload is a Python 2 string too.
    """

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


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar_folder(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/cifar-10-batches-py/`` with five small training batches, a test batch and ``batches.meta``."""
    rng = np.random.default_rng(seed)
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    batches = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, (name, n) in enumerate(zip(names, TRAIN_SIZES + (TEST_SIZE,))):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batches[name] = (data, labels)
        _dump_py2(
            {
                "batch_label": f"training batch {i + 1} of 5" if name != "test_batch" else "testing batch 1 of 1",
                "labels": labels,
                "data": data,
                "filenames": [f"img_{name}_{k}.png" for k in range(n)],
            },
            folder / name,
        )
    _dump_py2({"num_cases_per_batch": 10000, "label_names": LABEL_NAMES, "num_vis": 3072}, folder / "batches.meta")
    return batches


@pytest.fixture
def offline(monkeypatch):
    """Any attempt by torchvision to reach the network fails the way an offline machine does."""

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(tv_utils, "_urlretrieve", unreachable)
    monkeypatch.setattr(tv_utils, "_is_remote_location_available", lambda: False, raising=False)


def use_checksums_of(monkeypatch, folder: Path, tgz: Path | None = None) -> None:
    """Point torchvision's CIFAR10 at the md5s of the small files (its own checksum code still runs)."""
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", _md5(folder / f"data_batch_{i}")] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    if tgz is not None:
        monkeypatch.setattr(CIFAR10, "tgz_md5", _md5(tgz))


def assert_loaded(loaded, batches) -> None:
    train_data = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    test_data, test_labels = batches["test_batch"]
    assert loaded.train.x.shape == (sum(TRAIN_SIZES), 3, 32, 32) and loaded.train.x.dtype == torch.uint8
    assert loaded.test.x.shape == (TEST_SIZE, 3, 32, 32)
    assert loaded.train.y.tolist() == train_labels and loaded.test.y.tolist() == test_labels
    assert loaded.train.y.dtype == torch.int64
    # a row holds 1024 red, then 1024 green, then 1024 blue values, each plane row-major
    assert int(loaded.train.x[0, 1, 5, 7]) == int(train_data[0, 1024 + 5 * 32 + 7])
    assert int(loaded.test.x[2, 2, 31, 0]) == int(test_data[2, 2048 + 31 * 32])
    assert torch.equal(loaded.train.x, torch.from_numpy(train_data.reshape(-1, 3, 32, 32)))
    assert torch.equal(loaded.test.x, torch.from_numpy(test_data.reshape(-1, 3, 32, 32)))
    assert loaded.spec == dataset_spec("cifar10")
    assert (loaded.spec.channels, loaded.spec.size, loaded.spec.num_classes) == (3, 32, 10)


def test_small_cifar_files_read_like_the_real_ones(tmp_path):
    """The test archive's pickles give b'data' / b'labels' keys, as the CIFAR website's reader shows."""
    write_cifar_folder(tmp_path)
    with open(tmp_path / CIFAR10.base_folder / "data_batch_1", "rb") as handle:
        entry = pickle.load(handle, encoding="bytes")
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (TRAIN_SIZES[0], 3072)


def test_cifar10_from_the_extracted_folder(tmp_path, monkeypatch, offline):
    batches = write_cifar_folder(tmp_path)
    use_checksums_of(monkeypatch, tmp_path / CIFAR10.base_folder)
    assert_loaded(load_dataset("cifar10", DataOptions(root=tmp_path, download=False)), batches)


def test_cifar10_from_the_archive_alone(tmp_path, monkeypatch, offline):
    source = tmp_path / "source"
    batches = write_cifar_folder(source)
    root = tmp_path / "root"
    root.mkdir()
    tgz = root / CIFAR10.filename
    with tarfile.open(tgz, "w:gz") as archive:
        archive.add(source / CIFAR10.base_folder, arcname=CIFAR10.base_folder)
    use_checksums_of(monkeypatch, source / CIFAR10.base_folder, tgz)
    assert not (root / CIFAR10.base_folder).exists()
    loaded = load_dataset("cifar10", DataOptions(root=root, download=True))
    assert_loaded(loaded, batches)
    assert (root / CIFAR10.base_folder / "test_batch").is_file(), "extracted in place"


def test_missing_cifar10_names_the_folder_and_the_archive(tmp_path, offline):
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("cifar10", DataOptions(root=tmp_path, download=False))
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "cifar-10-python.tar.gz" in message


def test_missing_cifar10_offline_with_download_raises_dataset_unavailable(tmp_path, offline):
    with pytest.raises(DatasetUnavailableError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", DataOptions(root=tmp_path, download=True))


def test_corrupted_cifar10_batch_fails_the_checksum(tmp_path, monkeypatch, offline):
    write_cifar_folder(tmp_path)
    folder = tmp_path / CIFAR10.base_folder
    use_checksums_of(monkeypatch, folder)
    path = folder / "data_batch_3"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # a pixel byte: the pickle still loads, only the checksum can tell
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetUnavailableError, match="Dataset not found or corrupted"):
        load_dataset("cifar10", DataOptions(root=tmp_path, download=False))


def test_digits_spec_declares_the_split_class_counts(digits):
    assert digits.spec.train_class_counts == tuple(torch.bincount(digits.train.y, minlength=10).tolist())
