"""The examples a user can copy run end to end, from their own directory, with no edit of fedkd."""

import json
import sys
from pathlib import Path

import numpy as np

from tests.e2e.conftest import QUICK, run_fedkd

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "entropy_weighted"


def test_entropy_weighted_rule_trusts_the_confident_client(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from entropy_weighted import EntropyWeightedMean

    sure, unsure = [0.98, 0.01, 0.01], [0.4, 0.3, 0.3]
    stack = np.array([[sure], [unsure]])  # 2 clients, 1 sample, 3 classes
    merged = EntropyWeightedMean(sharpness=5.0)(stack, np.ones(2), None).scores
    assert merged[0, 0] > np.mean([sure[0], unsure[0]])  # pulled toward the confident client
    flat = EntropyWeightedMean(sharpness=0.0)(stack, np.ones(2), None).scores
    np.testing.assert_allclose(flat, stack.mean(axis=0), rtol=1e-6)  # sharpness 0: the mean
    sys.modules.pop("entropy_weighted", None)


def test_own_algorithm_runs_end_to_end_and_learns(tmp_path):
    out = run_fedkd(tmp_path, *QUICK, "algorithm=entropy_weighted", cwd=EXAMPLE)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["final_global_accuracy"] >= 0.80
    algorithm = json.loads((out / "config.json").read_text())["algorithm"]
    assert algorithm["_target_"] == "entropy_weighted.EntropyWeighted"
    assert algorithm["combine"] == {
        "_target_": "entropy_weighted.EntropyWeightedMean",
        "sharpness": 2.0,
    }
