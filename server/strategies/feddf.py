"""FedDF: Ensemble Distillation for Robust Model Fusion in Federated Learning.

Tao Lin, Lingjing Kong, Sebastian U. Stich and Martin Jaggi, NeurIPS 2020. arXiv:2006.07242.

Adapted to soft labels only: clients send **logits** on the round's public subset; the server
averages them into the ensemble's prediction ``softmax(mean_logits / T)`` and distils the global
model from it with Adam and KL, **early-stopping** on a held-out part of the public subset
(``algorithm.holdout_fraction``, ``algorithm.patience``; ``model.distill_epochs`` is the cap).
Clients are then refreshed from the global model's predictions (``client_teacher: global`` in
``conf/algorithm/feddf.yaml``). The client side is ``clients/feddf.py``.
"""

import copy

import numpy as np

from fedkd.algorithms import FedDF as FedDFConfig
from fedkd.losses import kd_loss
from fedkd.training import (
    TrainConfig,
    derive_seed,
    make_kd_loss,
    make_optimizer,
    predict_logits,
    train,
)
from server.strategies.fedmd import FedMD


class FedDF(FedMD):
    """FedMD's aggregation (mean logits, softened by ``T``) with FedDF's server distillation."""

    def distill_global(
        self, server_round: int, public_idx: np.ndarray, consensus: np.ndarray
    ) -> dict[str, float]:
        algo, model_cfg = self.algorithm, self.cfg.model
        assert isinstance(algo, FedDFConfig)
        inputs, targets = self.distillation_data(server_round, public_idx, consensus)
        rng = np.random.default_rng([self.cfg.seed, server_round, 3])
        order = rng.permutation(len(inputs))
        num_holdout = max(1, round(algo.holdout_fraction * len(inputs)))
        holdout, fit = order[:num_holdout], order[num_holdout:]
        x_fit, x_holdout = inputs[fit], inputs[holdout]
        model = self.global_model

        def holdout_loss() -> float:
            logits = predict_logits(model, x_holdout)
            return float(kd_loss(logits, targets[holdout], algo.temperature))

        lr = model_cfg.round_lr(server_round, self.cfg.num_rounds)
        base = TrainConfig(epochs=1, batch_size=model_cfg.batch_size, lr=lr, seed=0)
        optimizer = make_optimizer(model, base)
        best_loss, best_state, stale, epochs = (
            holdout_loss(),
            copy.deepcopy(model.state_dict()),
            0,
            0,
        )
        for epoch in range(model_cfg.distill_epochs):
            cfg = TrainConfig(
                epochs=1,
                batch_size=model_cfg.batch_size,
                lr=lr,
                seed=derive_seed(self.cfg.seed, server_round, epoch, 2**31),
                augment=model_cfg.augment,
            )
            train(model, x_fit, targets[fit], make_kd_loss(algo.temperature), cfg, optimizer)
            epochs += 1
            loss = holdout_loss()
            if loss < best_loss:
                best_loss, best_state, stale = loss, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= algo.patience:
                    break
        model.load_state_dict(best_state)
        return {"holdout_kd": best_loss, "epochs": float(epochs)}
