"""Tests for fedkd.data.datasets: IDX reading, dataset discovery, loaders and splits."""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fedkd.data import datasets
from fedkd.data.datasets import (
    DATA_DIR_ENV,
    FMNIST_MEAN,
    FMNIST_STD,
    ArrayDataset,
    DatasetNotFoundError,
    DatasetSplits,
    ImageSet,
    find_fmnist_dir,
    load_digits_arrays,
    load_fmnist,
    load_npz,
    read_idx,
)
from fedkd.data.sources import SOURCES, Digits, FashionMNIST
from fedkd.data.splits import SplitSizes, build_splits


def load_splits(
    name: str,
    *,
    data_dir: str | Path | None = None,
    num_public: int,
    num_private: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
) -> DatasetSplits:
    """The splits of a built-in source, unnormalised (mean 0, std 1) so rows can be compared."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset name {name!r}; valid names: {sorted(SOURCES)}")
    source = (
        FashionMNIST(None if data_dir is None else str(data_dir)) if name == "fmnist" else Digits()
    )
    sizes = SplitSizes(num_public, num_private, num_test)
    for key, value in (
        ("num_public", num_public),
        ("num_private", num_private),
        ("num_test", num_test),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")
    return build_splits(source.load(), sizes, mean=(0.0,), std=(1.0,), seed=seed, name=name)


FMNIST_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# The first ten labels of the official Fashion-MNIST training file.
FMNIST_FIRST_TRAIN_LABELS = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    payload = _idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def _write_fake_fmnist(
    directory: Path, *, num_train: int = 100, num_test: int = 20, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write a tiny Fashion-MNIST lookalike, mixing raw and gzipped files."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(num_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(num_test) % 10).astype(np.uint8),
    }
    for position, (stem, array) in enumerate(arrays.items()):
        _write_idx(directory / stem, array, gz=position % 2 == 0)
    return arrays


@pytest.fixture
def no_env_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


@pytest.fixture(scope="module")
def real_fmnist() -> tuple[ImageSet, ImageSet]:
    if not datasets.DEFAULT_FMNIST_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST is not installed at {datasets.DEFAULT_FMNIST_DIR}")
    return load_fmnist(datasets.DEFAULT_FMNIST_DIR)


# --- ArrayDataset / DatasetSplits -------------------------------------------------------------


def test_array_dataset_len_and_subset() -> None:
    x = np.arange(5 * 4, dtype=np.float32).reshape(5, 1, 2, 2)
    y = np.array([3, 1, 4, 1, 5], dtype=np.int64)
    dataset = ArrayDataset(x=x, y=y)
    assert len(dataset) == 5
    sub = dataset.subset(np.array([4, 0]))
    np.testing.assert_array_equal(sub.y, [5, 3])
    np.testing.assert_array_equal(sub.x[0], x[4])
    np.testing.assert_array_equal(sub.x[1], x[0])


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros((3, 2, 2), np.float32), np.zeros(3, np.int64), "x must have shape"),
        (np.zeros((3, 1, 2, 2), np.float32), np.zeros((3, 1), np.int64), "y must have shape"),
        (np.zeros((3, 1, 2, 2), np.float32), np.zeros(2, np.int64), "3 images but 2 labels"),
        (np.zeros((3, 1, 2, 2), np.float64), np.zeros(3, np.int64), "float32"),
        (np.zeros((3, 1, 2, 2), np.float32), np.zeros(3, np.int32), "int64"),
    ],
)
def test_array_dataset_rejects_bad_arrays(x: np.ndarray, y: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ArrayDataset(x=x, y=y)


def test_dataset_splits_rejects_labels_out_of_range() -> None:
    good = ArrayDataset(np.zeros((2, 1, 2, 2), np.float32), np.array([0, 1], np.int64))
    bad = ArrayDataset(np.zeros((2, 1, 2, 2), np.float32), np.array([0, 2], np.int64))
    with pytest.raises(ValueError, match="test labels"):
        DatasetSplits(good, good, bad, num_classes=2, input_shape=(1, 2, 2), name="toy")
    with pytest.raises(ValueError, match="input_shape"):
        DatasetSplits(good, good, good, num_classes=2, input_shape=(1, 3, 3), name="toy")


# --- read_idx ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = _write_idx(tmp_path / "images-idx3-ubyte", array, gz=gz)
    loaded = read_idx(path)
    assert loaded.dtype == np.uint8
    assert loaded.shape == (2, 3, 4)
    np.testing.assert_array_equal(loaded, array)
    loaded[0, 0, 0] = 255  # the result must be writable


def test_read_idx_one_dimensional(tmp_path: Path) -> None:
    labels = np.array([9, 0, 0, 3], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(_write_idx(tmp_path / "l", labels, gz=False)), labels)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "00 00"),
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00\x00\x00\x00", "0x0d"),
        (b"\x00\x00", "header needs 4"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
        (b"\x00\x00\x08\x02" + struct.pack(">II", 2, 3) + bytes(5), "truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + bytes(3), "trailing bytes"),
    ],
)
def test_read_idx_rejects_malformed_files(tmp_path: Path, payload: bytes, match: str) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros((10, 10), np.uint8)))[:-12])
    with pytest.raises(ValueError, match=r"bad\.gz"):
        read_idx(path)


# --- find_fmnist_dir --------------------------------------------------------------------------


def test_find_fmnist_dir_accepts_user_dir(tmp_path: Path, no_env_dir: None) -> None:
    _write_fake_fmnist(tmp_path / "fm")
    assert find_fmnist_dir(tmp_path / "fm") == tmp_path / "fm"
    assert find_fmnist_dir(str(tmp_path / "fm")) == tmp_path / "fm"


def test_find_fmnist_dir_uses_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_fake_fmnist(tmp_path / "fm")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "fm"))
    monkeypatch.setattr(datasets, "DEFAULT_FMNIST_DIR", tmp_path / "absent")
    assert find_fmnist_dir() == tmp_path / "fm"


def test_find_fmnist_dir_prefers_argument_over_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_fake_fmnist(tmp_path / "arg")
    _write_fake_fmnist(tmp_path / "env")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert find_fmnist_dir(tmp_path / "arg") == tmp_path / "arg"


def test_find_fmnist_dir_falls_back_to_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_fake_fmnist(tmp_path / "default")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "empty"))
    monkeypatch.setattr(datasets, "DEFAULT_FMNIST_DIR", tmp_path / "default")
    assert find_fmnist_dir() == tmp_path / "default"
    assert find_fmnist_dir("") == tmp_path / "default"


def test_find_fmnist_dir_explicit_bad_dir_does_not_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_fake_fmnist(tmp_path / "default")
    monkeypatch.setattr(datasets, "DEFAULT_FMNIST_DIR", tmp_path / "default")
    partial = tmp_path / "partial"
    partial.mkdir()
    _write_idx(partial / "train-images-idx3-ubyte", np.zeros((1, 28, 28), np.uint8), gz=True)
    _write_idx(partial / "t10k-labels-idx1-ubyte", np.zeros(1, np.uint8), gz=False)
    with pytest.raises(DatasetNotFoundError) as info:
        find_fmnist_dir(partial)
    message = str(info.value)
    assert str(partial) in message
    assert "train-labels-idx1-ubyte" in message
    assert "t10k-images-idx3-ubyte" in message
    # The two files that are present must not be reported missing.
    assert "train-images-idx3-ubyte[" not in message
    assert "t10k-labels-idx1-ubyte[" not in message


def test_find_fmnist_dir_error_lists_search_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir = tmp_path / "env-dir"
    env_dir.mkdir()
    default_dir = tmp_path / "no-such-default"
    monkeypatch.setenv(DATA_DIR_ENV, str(env_dir))
    monkeypatch.setattr(datasets, "DEFAULT_FMNIST_DIR", default_dir)
    with pytest.raises(DatasetNotFoundError) as info:
        find_fmnist_dir()
    message = str(info.value)
    assert str(env_dir) in message
    assert str(default_dir) in message
    for stem in FMNIST_STEMS:
        assert stem in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "dataset.data_dir=" in message
    assert DATA_DIR_ENV in message
    assert isinstance(info.value, FileNotFoundError)


# --- load_fmnist ------------------------------------------------------------------------------


def test_load_fmnist_on_fake_files(tmp_path: Path, no_env_dir: None) -> None:
    arrays = _write_fake_fmnist(tmp_path, num_train=7, num_test=3)
    train, test = load_fmnist(tmp_path)
    assert train.x.shape == (7, 1, 28, 28)
    assert test.x.shape == (3, 1, 28, 28)
    assert train.x.dtype == np.float32
    assert train.y.dtype == np.int64
    expected = arrays["train-images-idx3-ubyte"] / 255.0  # raw scale: normalised later
    np.testing.assert_allclose(train.x[:, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(test.y, arrays["t10k-labels-idx1-ubyte"])


def test_load_fmnist_rejects_mismatched_labels(tmp_path: Path) -> None:
    _write_fake_fmnist(tmp_path, num_train=7, num_test=3)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8), gz=False)
    with pytest.raises(ValueError, match="expected 3 labels"):
        load_fmnist(tmp_path)


def test_load_fmnist_real_data(real_fmnist: tuple[ImageSet, ImageSet]) -> None:
    train, test = real_fmnist
    assert train.x.shape == (60000, 1, 28, 28)
    assert test.x.shape == (10000, 1, 28, 28)
    assert train.x.dtype == np.float32
    assert train.y.dtype == np.int64
    assert train.y[:10].tolist() == FMNIST_FIRST_TRAIN_LABELS
    np.testing.assert_array_equal(np.bincount(train.y), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(test.y), np.full(10, 1000))
    # the published statistics (what the benchmark experiments pin as normalize.mean/std)
    assert abs(float(train.x.mean()) - FMNIST_MEAN) < 1e-3
    assert abs(float(train.x.std()) - FMNIST_STD) < 1e-3


# --- digits and npz ---------------------------------------------------------------------------


def test_load_digits_arrays() -> None:
    digits = load_digits_arrays()
    assert digits.x.shape == (1797, 1, 8, 8)
    assert digits.x.dtype == np.float32
    assert digits.y.dtype == np.int64
    assert set(np.unique(digits.y).tolist()) == set(range(10))
    assert digits.x.min() == 0.0 and digits.x.max() == 1.0  # raw scale: pixels / 16
    np.testing.assert_array_equal(load_digits_arrays().x, digits.x)


def test_load_npz_uint8_round_trip(tmp_path: Path) -> None:
    images = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3) * 7
    labels = np.array([2, 0, 1, 2])
    np.savez(tmp_path / "data.npz", x=images, y=labels)
    dataset = load_npz(tmp_path / "data.npz")
    assert dataset.x.shape == (4, 1, 3, 3)
    assert dataset.x.dtype == np.float32
    assert dataset.y.dtype == np.int64
    np.testing.assert_allclose(dataset.x[:, 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(dataset.y, labels)


def test_load_npz_flat_vectors_and_unlabelled(tmp_path: Path) -> None:
    np.savez(tmp_path / "flat.npz", x=np.ones((5, 12), np.float32))
    data = load_npz(tmp_path / "flat.npz", require_labels=False)
    assert data.x.shape == (5, 1, 1, 12) and data.y is None
    with pytest.raises(ValueError, match="missing array 'y'"):
        load_npz(tmp_path / "flat.npz")


def test_load_npz_float_used_as_is(tmp_path: Path) -> None:
    images = np.linspace(-3, 3, 2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
    np.savez(tmp_path / "data.npz", x=images, y=np.array([0, 1], dtype=np.int32))
    dataset = load_npz(str(tmp_path / "data.npz"))
    assert dataset.x.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(dataset.x, images, rtol=1e-6)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"images": np.zeros((2, 3, 3), np.uint8), "y": np.zeros(2, int)}, "missing array 'x'"),
        ({"x": np.zeros((2, 3, 3), np.uint8), "labels": np.zeros(2, int)}, "missing array 'y'"),
        ({"x": np.zeros((2, 1, 1, 3, 3), np.uint8), "y": np.zeros(2, int)}, "'x' must have"),
        ({"x": np.zeros((2, 3, 3), np.int32), "y": np.zeros(2, int)}, "'x' must be uint8"),
        ({"x": np.zeros((2, 3, 3), np.uint8), "y": np.zeros(2, float)}, "'y' must be a 1-D"),
        ({"x": np.zeros((2, 3, 3), np.uint8), "y": np.zeros(3, int)}, "'y' holds 3"),
        ({"x": np.zeros((2, 3, 3), np.uint8), "y": np.array([0, -1])}, "negative"),
    ],
)
def test_load_npz_rejects_bad_archives(
    tmp_path: Path, arrays: dict[str, np.ndarray], match: str
) -> None:
    path = tmp_path / "user-data.npz"
    # mypy cannot rule out an "allow_pickle" key in **arrays, hence the ignore.
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match) as info:
        load_npz(path)
    assert "user-data.npz" in str(info.value)


# --- load_splits ------------------------------------------------------------------------------


def _rows(*parts: ArrayDataset) -> Counter[bytes]:
    """Multiset of (image, label) rows, so splits can be compared without their indices."""
    return Counter(
        x.tobytes() + y.tobytes() for part in parts for x, y in zip(part.x, part.y, strict=True)
    )


def test_load_splits_digits_sizes_and_disjoint() -> None:
    splits = load_splits("digits", num_public=300, seed=3)
    assert splits.name == "digits"
    assert splits.num_classes == 10
    assert splits.input_shape == (1, 8, 8)
    assert len(splits.test) == 360
    assert len(splits.public) == 300
    assert len(splits.private) == 1797 - 360 - 300
    # Together the three splits are exactly the full set (as a multiset, so no sample is
    # used twice and none is lost).
    assert _rows(splits.private, splits.public, splits.test) == _rows(load_digits_arrays())


def test_load_splits_digits_explicit_sizes() -> None:
    splits = load_splits("digits", num_public=100, num_private=500, num_test=200, seed=0)
    assert (len(splits.private), len(splits.public), len(splits.test)) == (500, 100, 200)


def test_load_splits_is_deterministic_per_seed() -> None:
    first = load_splits("digits", num_public=100, seed=7)
    again = load_splits("digits", num_public=100, seed=7)
    other = load_splits("digits", num_public=100, seed=8)
    for split in ("private", "public", "test"):
        np.testing.assert_array_equal(getattr(first, split).x, getattr(again, split).x)
        np.testing.assert_array_equal(getattr(first, split).y, getattr(again, split).y)
    assert not np.array_equal(first.public.x, other.public.x)
    assert not np.array_equal(first.test.x, other.test.x)


def test_load_splits_fmnist_on_fake_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_fake_fmnist(tmp_path, num_train=100, num_test=20)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    splits = load_splits("fmnist", num_public=30, seed=0)
    assert (len(splits.private), len(splits.public), len(splits.test)) == (70, 30, 20)
    assert splits.input_shape == (1, 28, 28)
    train, test = load_fmnist(tmp_path)
    assert _rows(splits.private, splits.public) == _rows(train)
    np.testing.assert_array_equal(splits.test.x, test.x)  # the official test set, untouched

    small = load_splits("fmnist", data_dir=tmp_path, num_public=30, num_private=10, num_test=5)
    assert (len(small.private), len(small.public), len(small.test)) == (10, 30, 5)
    assert not _rows(small.test) - _rows(test)
    assert not _rows(small.private) & _rows(small.public)
    np.testing.assert_array_equal(small.public.x, splits.public.x)  # same seed, same draw


def test_load_splits_fmnist_real_data(real_fmnist: tuple[ImageSet, ImageSet]) -> None:
    del real_fmnist  # only for the skip when the data is absent
    splits = load_splits(
        "fmnist", data_dir=datasets.DEFAULT_FMNIST_DIR, num_public=1000, num_test=500, seed=0
    )
    assert (len(splits.private), len(splits.public), len(splits.test)) == (59000, 1000, 500)
    assert splits.num_classes == 10


@pytest.mark.parametrize(
    ("num_public", "num_private", "num_test", "match"),
    [
        (0, None, None, "num_public must be >= 1"),
        (10, 0, None, "num_private must be >= 1"),
        (10, None, -1, "num_test must be >= 1"),
        (1437, None, None, "num_public=1437"),
        (1000, 438, None, "num_private=438"),
        (10, None, 1797, "num_test=1797"),
    ],
)
def test_load_splits_digits_rejects_bad_sizes(
    num_public: int, num_private: int | None, num_test: int | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        load_splits("digits", num_public=num_public, num_private=num_private, num_test=num_test)


def test_load_splits_fmnist_rejects_oversize(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_fake_fmnist(tmp_path, num_train=100, num_test=20)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError, match="num_public=100"):
        load_splits("fmnist", num_public=100)
    with pytest.raises(ValueError, match="num_private=71"):
        load_splits("fmnist", num_public=30, num_private=71)
    with pytest.raises(ValueError, match="num_test=21"):
        load_splits("fmnist", num_public=30, num_test=21)


def test_load_splits_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset") as info:
        load_splits("cifar10", num_public=10)
    assert "digits" in str(info.value)
    assert "fmnist" in str(info.value)
