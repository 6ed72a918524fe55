"""The Flower app bundle (FAB) builds, carries the apps and configs, and stays small."""

import os
import subprocess
import zipfile
from pathlib import Path

from fedkd.launch import app_dir, flower_bin

FAB_LIMIT_BYTES = 10 * 1024 * 1024  # Flower's FAB_MAX_SIZE


def test_fab_builds_with_apps_and_conf_but_no_run_folders(tmp_path: Path):
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [flower_bin("flwr"), "build", "--app", str(app_dir())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (fab,) = tmp_path.glob("*.fab")
    assert fab.stat().st_size < FAB_LIMIT_BYTES
    names = set(zipfile.ZipFile(fab).namelist())
    assert {"server/app.py", "clients/app.py", "fedkd/protocol.py", "conf/config.yaml"} <= names
    assert not [n for n in names if n.startswith("outputs/") and n != "outputs/README.md"]
