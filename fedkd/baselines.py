"""Non-federated reference points, run in one process (no Flower), written as run folders.

* ``local`` (local-only): every client trains its own student on its private data and nothing
  else; per round the same seeded sample of clients trains as in a federated run (so the local
  compute matches), and every client's model is evaluated. The federated methods must beat its
  mean client accuracy.
* ``centralized``: the global architecture trained on the union of all private data, one
  ``clients.revisit_epochs`` pass per round: the upper bound.
"""

import logging
import time
from typing import Any

import numpy as np
import torch

from fedkd.config import ExperimentConfig
from fedkd.data import ArrayDataset
from fedkd.experiment import (
    build_client_model,
    build_global_model,
    client_architecture,
    client_private_data,
    load_data,
    sample_client_ids,
)
from fedkd.results import RoundRecord, RunRecorder, client_accuracy_stats
from fedkd.schema import import_object
from fedkd.training import (
    TrainConfig,
    derive_seed,
    evaluate,
    local_epochs,
    seed_everything,
    supervised_loss,
    train,
)

log = logging.getLogger("fedkd.baselines")


def _fit(cfg: ExperimentConfig, model: torch.nn.Module, data: ArrayDataset, seed: int) -> None:
    train(
        model,
        torch.from_numpy(data.x),
        torch.from_numpy(data.y),
        supervised_loss,
        TrainConfig(
            local_epochs(
                len(data),
                cfg.clients.batch_size,
                cfg.clients.revisit_epochs,
                cfg.clients.min_local_steps,
            ),
            cfg.clients.batch_size,
            cfg.clients.lr,
            seed,
            augment=cfg.clients.augment,
        ),
    )


def run_local(cfg: ExperimentConfig, recorder: RunRecorder) -> dict[str, Any]:
    splits = load_data(cfg)
    num = cfg.clients.num_clients
    test = splits.test.subset(np.arange(min(cfg.clients.num_eval_samples, len(splits.test))))
    test_x, test_y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    private = [client_private_data(cfg, i, num) for i in range(num)]
    models = [build_client_model(cfg, i, splits) for i in range(num)]
    for server_round in range(1, cfg.num_rounds + 1):
        start = time.monotonic()
        sampled = sample_client_ids(cfg, server_round, list(range(num)))
        for i in sampled:
            _fit(cfg, models[i], private[i], derive_seed(cfg.seed, server_round, i, 1))
        accs = [evaluate(m, test_x, test_y)[0] for m in models]
        _log(recorder, cfg, server_round, start, float("nan"), float("nan"), accs, len(sampled))
    clients = [
        {"client_id": i, "architecture": client_architecture(cfg, i).kind, "num_examples": len(p)}
        for i, p in enumerate(private)
    ]
    return recorder.write_summary(clients=clients, unusable_nodes={})


def run_centralized(cfg: ExperimentConfig, recorder: RunRecorder) -> dict[str, Any]:
    splits = load_data(cfg)
    model = build_global_model(cfg, splits)
    test_x, test_y = torch.from_numpy(splits.test.x), torch.from_numpy(splits.test.y)
    for server_round in range(1, cfg.num_rounds + 1):
        start = time.monotonic()
        _fit(cfg, model, splits.private, derive_seed(cfg.seed, server_round, 1))
        acc, loss = evaluate(model, test_x, test_y)
        _log(recorder, cfg, server_round, start, acc, loss, [], 0)
    recorder.save_model(model)
    return recorder.write_summary(clients=[], unusable_nodes={})


def _log(
    recorder: RunRecorder,
    cfg: ExperimentConfig,
    server_round: int,
    start: float,
    acc: float,
    loss: float,
    client_accs: list[float],
    num_sampled: int,
) -> None:
    stats = client_accuracy_stats(client_accs)
    record = RoundRecord(
        server_round,
        global_accuracy=acc,
        global_loss=loss,
        client_accuracy_mean=stats["client_accuracy_mean"],
        client_accuracy_min=stats["client_accuracy_min"],
        client_accuracy_max=stats["client_accuracy_max"],
        num_sampled=num_sampled,
        num_accepted=num_sampled,
        round_seconds=time.monotonic() - start,
    )  # nothing is communicated: no bytes, no replies to reject
    recorder.log_round(record)
    log.info(
        "[round %d/%d] %s: global acc %.4f | mean client acc %.4f | %.1fs",
        server_round,
        cfg.num_rounds,
        cfg.algorithm.kind,
        acc,
        record.client_accuracy_mean,
        record.round_seconds,
    )


def run_baseline(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run a non-federated baseline into ``cfg.output_dir``; return its summary."""
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.simulation.num_cpus)
    recorder = RunRecorder(cfg.output_dir, cfg)
    try:
        runner = import_object(cfg.algorithm.server, "algorithm")
        summary: dict[str, Any] = runner(cfg, recorder)
        return summary
    except KeyboardInterrupt:  # SIGINT / SIGTERM (fedkd.launch.RunInterrupted)
        recorder.write_summary(status="interrupted")
        raise
    except BaseException as err:
        recorder.write_summary(status="failed", error=f"{type(err).__name__}: {err}")
        raise
