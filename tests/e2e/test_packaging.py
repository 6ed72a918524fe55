"""The Flower app bundle (FAB) builds, carries the apps and configs, and stays small."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

from fedkd.project import is_app

CHECKOUT = Path(__file__).resolve().parents[2]

FAB_LIMIT_BYTES = 10 * 1024 * 1024  # Flower's FAB_MAX_SIZE


def test_fab_builds_with_apps_and_conf_but_no_run_folders():
    # What `flwr run` ships (`flwr build` would also insist on the checkout's folder name).
    assert is_app(CHECKOUT)
    fab = build_fab_from_disk(CHECKOUT)
    assert len(fab) < FAB_LIMIT_BYTES
    names = set(zipfile.ZipFile(io.BytesIO(fab)).namelist())
    assert {"server/app.py", "clients/app.py", "fedkd/protocol.py", "conf/config.yaml"} <= names
    assert not [n for n in names if n.startswith("outputs/") and n != "outputs/README.md"]
    assert not [n for n in names if n.startswith("benchmarks/results/")]


def test_installed_wheel_runs_outside_the_checkout(tmp_path: Path):
    """A plain install of the wheel (not the checkout) runs `fedkd` from an unrelated directory,
    with the configs it carries inside the package."""
    dist, site, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(CHECKOUT)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("fedkd-*.whl")
    assert "fedkd/conf/config.yaml" in zipfile.ZipFile(wheel).namelist()
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}  # the wheel's fedkd before the checkout's
    where = subprocess.run(
        [sys.executable, "-c", "import fedkd.config as c; print(c.CONF_DIR)"],
        env=env, cwd=elsewhere, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(where) == site / "fedkd" / "conf"
    out = elsewhere / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "fedkd", "experiment=digits_quick", "num_rounds=2",
         f"output_dir={out}"],
        env=env, cwd=elsewhere, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_global_accuracy"] >= 0.80
