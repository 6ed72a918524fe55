"""The end-to-end runs more than one test reads (each costs about a minute on 2 cores)."""

import subprocess
import sys
from pathlib import Path

import pytest

from fedkd.project import new_project

QUICK_CLIENTS = 3  # heterogeneous students: the deployment tests start one SuperNode for each
QUICK = ["experiment=digits_quick", f"clients.num_clients={QUICK_CLIENTS}"]
QUICK_DSFL = [*QUICK, "algorithm=dsfl"]


def run_fedkd(tmp_path: Path, *overrides: str, name: str = "run", cwd: Path | None = None) -> Path:
    """``fedkd OVERRIDES output_dir=tmp_path/name`` run from ``cwd`` (default ``tmp_path``),
    in simulation unless overridden."""
    out = tmp_path / name
    proc = subprocess.run(
        [sys.executable, "-m", "fedkd", *overrides, f"output_dir={out}", f"hydra.run.dir={out}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd or tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def dsfl_run(tmp_path_factory) -> Path:
    """One simulation of ``QUICK_DSFL``: checked on its own, re-run for determinism, and
    compared with the same config deployed on real SuperNodes."""
    return run_fedkd(tmp_path_factory.mktemp("dsfl"), *QUICK_DSFL)


USER_MODELS = '''\
"""A test-only model module: a user's own class, named by import path in the config."""

from torch import Tensor, nn


class Perceptron(nn.Module):
    def __init__(self, input_shape, num_classes, hidden=48):
        super().__init__()
        c, h, w = input_shape
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
'''
# Some clients and the global model use the project's own class (import path, no fedkd edit).
USER_MODEL_OVERRIDES = [
    "clients.architectures=[cnn,usermodels.Perceptron]",
    "model.architecture=usermodels.Perceptron",
]


@pytest.fixture(scope="session")
def user_project(tmp_path_factory) -> Path:
    """A project from ``fedkd-new`` with a model module of the user's own: run from it, the
    launcher ships it as the Flower app, so the module reaches every worker and SuperNode."""
    project = tmp_path_factory.mktemp("project")
    new_project(project, package="myfl")
    (project / "usermodels.py").write_text(USER_MODELS)
    return project
