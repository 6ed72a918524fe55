"""The end-to-end runs more than one test reads (each costs about a minute on 2 cores)."""

import subprocess
import sys
from pathlib import Path

import pytest

QUICK_CLIENTS = 3  # heterogeneous students: the deployment tests start one SuperNode for each
QUICK_DSFL = ["experiment=digits_quick", "algorithm=dsfl", f"clients.num_clients={QUICK_CLIENTS}"]


def run_fedkd(tmp_path: Path, *overrides: str, name: str = "run") -> Path:
    """``python -m fedkd OVERRIDES output_dir=tmp_path/name`` (simulation unless overridden)."""
    out = tmp_path / name
    proc = subprocess.run(
        [sys.executable, "-m", "fedkd", *overrides, f"output_dir={out}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def dsfl_run(tmp_path_factory) -> Path:
    """One simulation of ``QUICK_DSFL``: checked on its own, re-run for determinism, and
    compared with the same config deployed on real SuperNodes."""
    return run_fedkd(tmp_path_factory.mktemp("dsfl"), *QUICK_DSFL)
