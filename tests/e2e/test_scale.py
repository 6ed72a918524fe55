"""Cross-device in Flower's simulation engine: a hundred clients with a few examples each learn,
and a client that is not training holds nothing but its student's state, on disk."""

import json
import signal
import subprocess
import sys
import time

import torch

from fedkd.checkpoint import KEEP_STATES
from fedkd.config import compose
from fedkd.experiment import build_client_model, load_data
from fedkd.results import read_metrics

# 100 clients of 9 digits each, 10 per round; one pass over 9 images is one step: take 10
CROSS_DEVICE = ["experiment=digits_quick", "clients.num_clients=100", "clients.fraction=0.1",
                "clients.min_local_steps=10", "num_rounds=100"]  # fmt: skip
ROUNDS = 5  # watched, then the run is stopped: a stopped run keeps its students' store


def _state_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_a_hundred_small_clients_learn_and_an_idle_client_is_only_its_state_on_disk(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedkd", *CROSS_DEVICE, f"output_dir={out}", f"hydra.run.dir={out}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 400
        while not ((out / "metrics.jsonl").is_file() and len(read_metrics(out)) >= ROUNDS):
            assert proc.poll() is None, proc.stdout.read()[-3000:] if proc.stdout else ""
            assert time.monotonic() < deadline, f"no {ROUNDS} rounds in 400 s"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
    rounds = read_metrics(out)
    # learning: from a tenth of the federation's data per round, far above chance (0.10)
    assert rounds[-1].global_accuracy >= 0.6, [r.global_accuracy for r in rounds]
    assert max(r.global_accuracy for r in rounds) > rounds[0].global_accuracy
    sampled = {c["client_id"] for r in rounds for c in r.clients}
    assert all(len(r.clients) == 10 for r in rounds) and len(sampled) < 100

    # the store holds the clients that trained, and for each at most its newest few states,
    # each about the size of its student's weights: the memory an idle client costs
    folders = {int(p.name.removeprefix("client-")): p for p in out.rglob("client-*")}
    assert sampled <= set(folders)
    assert len(set(folders) - sampled) <= 10  # the clients of the round the stop cut short
    cfg = compose(CROSS_DEVICE)
    splits = load_data(cfg)
    for client_id, folder in folders.items():
        states = list(folder.glob("round-*.pt"))
        # a client of the cut-short round may have been stopped before its first state landed
        least = 1 if client_id in sampled else 0
        assert least <= len(states) <= KEEP_STATES, (client_id, states)
        weights = _state_bytes(build_client_model(cfg, client_id, splits))
        for state in states:
            assert weights <= state.stat().st_size <= weights + 64 * 1024, (state, weights)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
