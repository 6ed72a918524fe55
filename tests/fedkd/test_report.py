"""fedkd-report on run folders written by RunRecorder."""

import csv
import dataclasses
import json

import pytest

from fedkd.report import load_run, report, rounds_to, summarise
from fedkd.results import RoundRecord, RunRecorder
from tests.conftest import digits_config


def _run(tmp_path, name, seed, accs, uplink_per_client=1000, clients=4, alpha=0.5):
    cfg = digits_config("partition=dirichlet", f"partition.alpha={alpha}", f"seed={seed}")
    cfg = dataclasses.replace(cfg, name=name)
    out = tmp_path / f"{name}-{seed}-{alpha}"
    rec = RunRecorder(out, cfg)
    for i, acc in enumerate(accs, 1):
        rec.log_round(
            RoundRecord(i, global_accuracy=acc, global_loss=1.0, consensus_accuracy=acc,
                        client_accuracy_mean=acc - 0.1, uplink_bytes=uplink_per_client * clients,
                        num_accepted=clients, round_seconds=1.0)
        )  # fmt: skip
    rec.write_summary()
    return out


def test_rounds_to_target():
    assert rounds_to([0.5, 0.79, 0.81, 0.7], 0.8) == 3
    assert rounds_to([0.5, 0.6], 0.8) is None


def test_summary_averages_seeds_and_counts_bytes(tmp_path):
    runs = [
        load_run(_run(tmp_path, "a", 0, [0.5, 0.85, 0.9])),
        load_run(_run(tmp_path, "a", 1, [0.6, 0.7, 0.8])),
        load_run(_run(tmp_path, "b", 0, [0.1, 0.2, 0.3], uplink_per_client=500_000)),
    ]
    rows = {r["name"]: r for r in summarise(runs)}
    assert rows["a"]["seeds"] == 2
    assert rows["a"]["final_accuracy"] == pytest.approx(0.85)
    assert rows["a"]["best_accuracy"] == pytest.approx(0.85)
    # client accuracy: mean over the last (up to 10) rounds, then over seeds
    assert rows["a"]["client_accuracy"] == pytest.approx((0.65 + 0.6) / 2)
    assert rows["a"]["rounds_to_target"] == pytest.approx(2.5)  # rounds 2 and 3
    assert rows["a"]["uplink_mb_per_client_round"] == pytest.approx(0.001)
    assert rows["b"]["rounds_to_target"] is None
    assert rows["b"]["uplink_mb_total"] == pytest.approx(3 * 4 * 0.5)


def test_report_writes_table_csv_and_plots(tmp_path):
    dirs = [_run(tmp_path, "a", s, [0.5, 0.9], alpha=a) for s in (0, 1) for a in (0.1, 0.5)]
    out = tmp_path / "report"
    table = report(dirs, out)
    assert "| a | 0.1 | 2 | 2 | 0.9000" in table
    assert (out / "table.md").read_text() == table
    for name in ("accuracy_vs_round.png", "accuracy_vs_uplink.png"):
        assert (out / name).stat().st_size > 1000
    with (out / "rounds.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 8  # 4 runs x 2 rounds
    assert len(json.loads((out / "summary.json").read_text())) == 2


def test_round_record_round_trips_with_int_client_ids():
    record = RoundRecord(3, 0.5, 1.0, 0.6, 0.4, 0.3, 0.5, 0.55, failed={2: "Node Unavailable"},
                         rejected={7: "NaN"}, missing=[4], server={"kd": 0.25})  # fmt: skip
    line = record.to_json()
    assert '"server_kd": 0.25' in line and '"num_failed": 1' in line
    again = RoundRecord.from_json(line)
    assert again == record and 2 in again.failed and 7 in again.rejected
    with pytest.raises(ValueError, match="unknown round record keys"):
        RoundRecord.from_json('{"round": 1, "accuracy": 0.5}')
