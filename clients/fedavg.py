"""FedAvg client (McMahan et al., AISTATS 2017): the weight-averaging baseline.

Loads the global weights it was sent, trains ``clients.revisit_epochs`` on its private data and
sends the weights back with its example count. Unlike the distillation clients, it trains the
server's architecture (``model.architecture``). The server side is ``server/strategies/fedavg.py``.
"""

import torch
from torch import nn

from fedkd import protocol
from fedkd.config import ExperimentConfig
from fedkd.data import ArrayDataset
from fedkd.training import (
    TrainConfig,
    derive_seed,
    evaluate,
    local_epochs,
    loss_metric,
    supervised_loss,
    train,
)


def local_update(
    cfg: ExperimentConfig,
    client_id: int,
    model: nn.Module,
    private: ArrayDataset,
    test: ArrayDataset,
    server_round: int,
) -> dict[str, float]:
    """Train ``model`` (holding the global weights) in place; return the reply's metrics."""
    terms = train(
        model,
        torch.from_numpy(private.x),
        torch.from_numpy(private.y),
        supervised_loss,
        TrainConfig(
            epochs=local_epochs(
                len(private),
                cfg.clients.batch_size,
                cfg.clients.revisit_epochs,
                cfg.clients.min_local_steps,
            ),
            batch_size=cfg.clients.batch_size,
            lr=cfg.clients.lr,
            seed=derive_seed(cfg.seed, server_round, client_id, 1),
            augment=cfg.clients.augment,
        ),
    )
    metrics = loss_metric(protocol.TRAIN_LOSS, terms)
    if len(test):
        acc, loss = evaluate(model, torch.from_numpy(test.x), torch.from_numpy(test.y))
        metrics[protocol.TEST_ACCURACY], metrics[protocol.TEST_LOSS] = acc, loss
    return metrics
