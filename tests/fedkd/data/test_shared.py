"""One copy of the run's data for all its processes: the launcher writes the splits once and
every process maps them instead of loading its own."""

import numpy as np
import pytest

from fedkd.config import compose
from fedkd.data.shared import SHARED_DATA_ENV, data_key, open_shared, share_splits
from fedkd.experiment import _data_args, forget_data, load_data, share_data


@pytest.fixture
def fresh_cache():
    forget_data()
    yield
    forget_data()


def test_shared_splits_are_the_loaded_ones_mapped_not_copied(tmp_path, fresh_cache):
    cfg = compose(["experiment=digits_quick"])
    loaded = load_data(cfg)
    folder = share_data(cfg, tmp_path)
    mapped = open_shared(folder.name, tmp_path)
    assert mapped is not None
    for a, b in [
        (loaded.private, mapped.private),
        (loaded.test, mapped.test),
    ]:
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(loaded.public.x, mapped.public.x)
    assert (loaded.num_classes, loaded.input_shape, loaded.name) == (
        mapped.num_classes,
        mapped.input_shape,
        mapped.name,
    )
    assert (loaded.mean, loaded.std) == (mapped.mean, mapped.std)
    # a memory map of the file, private to this process only where it writes
    assert isinstance(mapped.private.x.base, np.memmap)
    mapped.private.x[0] += 1.0
    np.testing.assert_array_equal(open_shared(folder.name, tmp_path).private.x, loaded.private.x)


def test_a_process_maps_only_splits_of_its_own_config(tmp_path, monkeypatch, fresh_cache):
    cfg = compose(["experiment=digits_quick"])
    share_data(cfg, tmp_path)
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    forget_data()
    assert isinstance(load_data(cfg).private.x.base, np.memmap)  # mapped
    other = compose(["experiment=digits_quick", "seed=1"])  # another split of the data
    assert data_key(*_data_args(other, True)) != data_key(*_data_args(cfg, True))
    assert not isinstance(load_data(other).private.x.base, np.memmap)  # built, not mapped
    # an unlabelled public set (no public_y) round-trips too
    splits = load_data(other)
    unlabelled = type(splits)(
        splits.private, type(splits.public)(splits.public.x), splits.test, splits.num_classes,
        splits.input_shape, splits.name, splits.mean, splits.std,
    )  # fmt: skip
    again = open_shared(share_splits(unlabelled, "k", tmp_path).name, tmp_path)
    assert again is not None and again.public.y is None


def test_nothing_is_mapped_without_a_shared_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(SHARED_DATA_ENV, raising=False)
    assert open_shared("anything") is None
    assert open_shared("missing", tmp_path) is None
