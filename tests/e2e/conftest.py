"""The end-to-end runs more than one test reads (each costs about a minute on 2 cores)."""

import subprocess
import sys
from pathlib import Path

import pytest

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
