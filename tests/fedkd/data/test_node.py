"""A node's private data from its own directory (deployment)."""

import gzip

import numpy as np
import pytest

from fedkd.data import DatasetNotFoundError
from fedkd.data.node import load_node_private
from fedkd.experiment import client_private_data, load_data
from fedkd.export import export_partitions
from tests.conftest import digits_config


def test_exported_partitions_load_back_identically(tmp_path):
    cfg = digits_config()
    paths = export_partitions(tmp_path, ["experiment=digits_quick"])
    assert len(paths) == cfg.clients.num_clients
    splits = load_data(cfg)
    for client_id, path in enumerate(paths):
        data = load_node_private(path.parent, splits)
        expected = client_private_data(cfg, client_id, cfg.clients.num_clients)
        # written in the raw scale, normalised on load with the run's shared statistics
        np.testing.assert_allclose(data.x, expected.x, atol=1e-5)
        np.testing.assert_array_equal(data.y, expected.y)


def test_raw_fmnist_idx_directory_is_normalised_like_the_loader(tmp_path):
    splits = load_data(
        digits_config("dataset=fmnist", "normalize.mean=[0.286]", "normalize.std=[0.353]")
    )
    pixels = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    images = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 28, 28))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(images + pixels.tobytes()))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 3, 9]))
    data = load_node_private(tmp_path, splits)
    assert data.x.shape == (2, 1, 28, 28) and list(data.y) == [3, 9]
    np.testing.assert_allclose(data.x[0, 0, 0, 1], (1 / 255 - 0.286) / 0.353, rtol=1e-5)


def test_missing_and_mismatched_data_fail_clearly(tmp_path):
    splits = load_data(digits_config())
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load_node_private(tmp_path / "nope", splits)
    with pytest.raises(DatasetNotFoundError, match=r"private\.npz"):
        load_node_private(tmp_path, splits)
    np.savez(tmp_path / "private.npz", x=np.zeros((3, 28, 28), np.float32), y=np.zeros(3, int))
    with pytest.raises(ValueError, match="shape"):
        load_node_private(tmp_path, splits)
    np.savez(tmp_path / "private.npz", x=np.zeros((3, 8, 8), np.float32), y=np.array([0, 1, 12]))
    with pytest.raises(ValueError, match="label 12"):
        load_node_private(tmp_path, splits)
