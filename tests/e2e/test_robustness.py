"""Lying clients in a real Flower simulation: the mean follows them, robust rules out-vote them."""

import json

from fedkd.attacks import attackers
from tests.e2e.conftest import run_fedkd

# 5 clients, 2 of them (40 %, seeded) sending confident wrong classes every round
ATTACKED = ["experiment=digits_quick", "algorithm=dsfl", "clients.num_clients=5",
            "attack=wrong_class", "attack.fraction=0.4"]  # fmt: skip


def test_robust_rules_outvote_attackers_that_break_the_mean(tmp_path):
    assert len(attackers(5, 0.4, None, seed=0)) == 2
    results = {}
    for rule in ("mean", "reputation"):  # the median out-votes a liar in the deployment test
        out = run_fedkd(tmp_path, *ATTACKED, f"algorithm.combine={rule}", name=rule)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["rejected_replies_total"] == 0
        results[rule] = summary["final_global_accuracy"]
    assert results["reputation"] >= 0.80  # the clean runs' threshold (chance is 0.10)
    assert results["mean"] < 0.50  # well-formed lies pass validation: the mean is lost
