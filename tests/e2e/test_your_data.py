"""Your data, your models, as a user brings them: files written by the test, real Flower.

The embedded digits are written to an ``.npz`` file and to a PNG image folder; a model class
lives in a module of a user project (``fedkd-new``), outside ``fedkd/``. Every run is the
``fedkd`` command (or the Python API) in simulation and must learn (chance is 0.10).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedkd.results import read_metrics
from tests.e2e.conftest import QUICK, USER_MODEL_OVERRIDES, run_fedkd

NUM_PUBLIC = 500


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The embedded 8x8 digits as 0..255 pixels, as a user's image files would hold them."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images * 255 / 16).astype(np.uint8), digits.target.astype(np.int64)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> dict[str, Path]:
    """digits.npz (all of it, labelled); private/<class>/*.png and public.npz (unlabelled), a
    seeded split of the same images into a private folder and a public set of another source."""
    from PIL import Image

    root = tmp_path_factory.mktemp("user-data")
    x, y = digits_uint8()
    np.savez(root / "digits.npz", x=x, y=y)
    order = np.random.default_rng(0).permutation(len(x))
    public, private = order[:NUM_PUBLIC], order[NUM_PUBLIC:]
    np.savez(root / "public.npz", x=x[public])  # no labels: what a real proxy set looks like
    for i in private:
        folder = root / "private" / f"digit-{y[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i], mode="L").save(folder / f"{i}.png")
    return {"npz": root / "digits.npz", "folder": root / "private", "public": root / "public.npz"}


def test_npz_file_learns(tmp_path, user_files):
    out = run_fedkd(
        tmp_path,
        *QUICK,
        "dataset=npz",
        f"dataset.path={user_files['npz']}",
        f"dataset.num_public={NUM_PUBLIC}",
        "dataset.num_test=360",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["final_global_accuracy"] >= 0.80
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"]["name"] == "npz" and config["public"] is None
    # the public set is held out of the same labelled source: consensus accuracy is reported
    assert all(not math.isnan(r.consensus_accuracy) for r in read_metrics(out))


def test_folder_with_public_set_from_another_source_and_own_model(user_files, user_project):
    """Private data from an image folder, the public set from an unlabelled .npz, and a model
    class of the user's project for some clients and the global model, run from the project."""
    out = run_fedkd(
        user_project,
        *QUICK,
        "dataset=folder",
        f"dataset.path={user_files['folder']}",
        "dataset.num_test=300",
        "public=npz",
        f"public.path={user_files['public']}",
        *USER_MODEL_OVERRIDES,
        cwd=user_project,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["final_global_accuracy"] >= 0.80
    archs = {c["architecture"] for c in summary["clients"]}
    assert archs == {"cnn", "usermodels.Perceptron"}
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["architecture"] == "usermodels.Perceptron"
    assert config["public"]["name"] == "npz" and config["dataset"]["num_public"] == 0
    rounds = read_metrics(out)
    assert all(r.public_samples == NUM_PUBLIC for r in rounds)
    # an unlabelled public set: no consensus accuracy, rather than a meaningless one
    assert all(math.isnan(r.consensus_accuracy) for r in rounds)
