"""The Flower app bundle (FAB) builds, carries the apps and configs, and stays small."""

import io
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
