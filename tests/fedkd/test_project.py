"""`fedkd-new`: the skeleton is a Flower app whose configs compose and whose model builds."""

import sys

import pytest
import torch

from fedkd.config import compose
from fedkd.experiment import build_model, model_keys
from fedkd.project import is_app, new_project, write_bare_app


def test_new_project_is_an_app_whose_experiment_composes(tmp_path, monkeypatch):
    project = tmp_path / "my-proj"
    written = new_project(project)
    assert is_app(project) and (project / "my_proj" / "nets.py") in written
    monkeypatch.chdir(project)  # its conf/ overlays fedkd's, as when `fedkd` runs from there
    monkeypatch.syspath_prepend(str(project))
    cfg = compose(["experiment=example"])
    assert cfg.name == "example" and cfg.dataset.source.kind == "npz"
    keys = dict(model_keys(cfg))
    assert keys["model.architecture"].kind == "my_proj.nets.TinyNet"
    assert keys["model.architecture"].kwargs == {"hidden": 128}
    splits = type("Splits", (), {"input_shape": (1, 8, 8), "num_classes": 10})()
    model = build_model(keys["model.architecture"], splits)  # type: ignore[arg-type]
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    sys.modules.pop("my_proj.nets", None)
    sys.modules.pop("my_proj", None)
    with pytest.raises(FileExistsError):
        new_project(project)


def test_bare_app_is_an_app_with_no_code(tmp_path):
    app = write_bare_app(tmp_path / "app")
    assert is_app(app) and [p.name for p in app.iterdir()] == ["pyproject.toml"]
    assert not is_app(tmp_path)
