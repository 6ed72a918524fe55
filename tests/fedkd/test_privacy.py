"""DP-SGD through Opacus: the accountant's ε is Opacus's own, grows with training, shrinks with
noise, a target ε is met, a spent budget stops training, and what DP cannot train is refused."""

import pytest
import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedkd.config import ConfigError
from fedkd.experiment import preflight
from fedkd.privacy import (
    PrivateTrainer,
    calibrate,
    epsilon_spent,
    plan_pass,
    unsupported_layers,
)
from fedkd.training import TrainConfig, supervised_loss
from tests.conftest import digits_config

DELTA = 1e-5


def _data(n: int = 256):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    return x, (x.mean(dim=(1, 2, 3)) > 0).long()  # a learnable two-class rule


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))


def _cfg(epochs: int = 2, seed: int = 1) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=32, lr=1e-2, seed=seed)


def test_epsilon_matches_opacus_own_training_loop():
    x, y = _data()
    trainer = PrivateTrainer(noise_multiplier=1.3, max_grad_norm=1.0, delta=DELTA, budget=None)
    trainer.train(_model(), x, y, supervised_loss, _cfg(epochs=3))
    # the same mechanism through Opacus's documented flow: make_private + a plain loop
    model = _model()
    engine = PrivacyEngine(accountant="rdp")
    module, optimizer, loader = engine.make_private(
        module=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=32),
        noise_multiplier=1.3,
        max_grad_norm=1.0,
    )
    for _ in range(3):
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(module(xb), yb).backward()
            optimizer.step()
    assert trainer.epsilon == pytest.approx(engine.get_epsilon(DELTA), rel=1e-9)
    assert trainer.history == [(1.3, 1 / 8, 24)]  # 3 epochs x 8 Poisson batches


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    x, y = _data()
    spent = {}
    for noise in (0.8, 1.6):
        trainer = PrivateTrainer(noise_multiplier=noise, max_grad_norm=1.0, delta=DELTA,
                                 budget=None)  # fmt: skip
        model, per_round = _model(), []
        for r in range(3):  # three rounds: the history accumulates
            trainer.train(model, x, y, supervised_loss, _cfg(seed=r))
            per_round.append(trainer.epsilon)
        assert per_round[0] < per_round[1] < per_round[2]
        spent[noise] = per_round[-1]
    assert spent[1.6] < spent[0.8]


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_calibration_of_one_rate_agrees_with_opacus(accountant: str):
    rate, steps = plan_pass(1000, 50, epochs=3)
    assert (rate, steps) == (1 / 20, 60)
    ours = calibrate(4.0, DELTA, [(rate, steps)] * 5, accountant)
    theirs = get_noise_multiplier(
        target_epsilon=4.0, target_delta=DELTA, sample_rate=rate, steps=5 * steps,
        accountant=accountant,
    )  # fmt: skip
    assert ours == pytest.approx(theirs, rel=0.02)
    assert 3.99 - 0.01 <= epsilon_spent([(ours, rate, 5 * steps)], DELTA, accountant) <= 4.0


def test_calibration_of_mixed_rates_spends_the_target_and_needs_less_noise_than_the_worst():
    # round 1 over 1000 private examples; later rounds over them plus 1000 teacher samples
    plan = [plan_pass(1000, 50, 3)] + [plan_pass(2000, 50, 3)] * 9
    noise = calibrate(8.0, DELTA, plan, "rdp")
    spent = epsilon_spent([(noise, q, n) for q, n in plan], DELTA, "rdp")
    assert 7.98 <= spent <= 8.0
    assert noise < calibrate(8.0, DELTA, [plan_pass(1000, 50, 3)] * 10, "rdp")
    with pytest.raises(ValueError, match="no passes"):
        calibrate(8.0, DELTA, [], "rdp")


def test_a_target_epsilon_is_met_and_a_spent_budget_stops_training():
    x, y = _data()
    cfg = _cfg(epochs=1)
    noise = calibrate(2.0, DELTA, [plan_pass(len(x), 32, epochs=1)] * 3, accountant="rdp")
    trainer = PrivateTrainer(noise_multiplier=noise, max_grad_norm=1.0, delta=DELTA, budget=2.0)
    model = _model()
    for r in range(3):
        assert trainer.can_afford(len(x), cfg)
        trainer.train(model, x, y, supervised_loss, _cfg(epochs=1, seed=r))
    assert 1.9 < trainer.epsilon <= 2.0  # the plan spends (almost exactly) the target
    assert not trainer.can_afford(len(x), cfg)  # a fourth round would overspend


def test_dp_sgd_still_learns_with_moderate_noise():
    x, y = _data(512)
    model = _model()
    trainer = PrivateTrainer(noise_multiplier=0.5, max_grad_norm=1.0, delta=DELTA, budget=None)
    trainer.train(model, x, y, supervised_loss, _cfg(epochs=5))
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.8
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())  # hooks removed


def test_empty_history_spends_nothing():
    assert epsilon_spent([], DELTA) == 0.0


def test_layers_dp_sgd_cannot_train_are_named():
    assert unsupported_layers(_model()) == []
    problems = unsupported_layers(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)))
    assert problems and "BatchNorm" in problems[0]


class BatchNormNet(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(input_shape[0], 4, 3, padding=1), nn.BatchNorm2d(4), nn.Flatten(),
            nn.Linear(4 * input_shape[1] * input_shape[2], num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


def test_a_client_model_dp_cannot_train_fails_before_the_run_naming_the_key():
    path = f"{__name__}.BatchNormNet"
    cfg = digits_config("dp.epsilon=8", f"clients.architectures=[cnn,{path}]")
    with pytest.raises(ConfigError, match=r"clients\.architectures\[1\].*BatchNorm"):
        preflight(cfg)
    # the global model trains on public data only: DP does not concern it
    preflight(digits_config("dp.epsilon=8", f"model.architecture={path}"))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["algorithm=fedavg", "dp.epsilon=8"], "dp"),
        (["algorithm=centralized", "dp.noise_multiplier=1"], "dp"),
        (["dp.epsilon=8", "dp.noise_multiplier=1"], "dp.epsilon"),
        (["dp.epsilon=-1"], "dp.epsilon"),
        (["dp.epsilon=8", "dp.delta=1.5"], "dp.delta"),
        (["dp.max_grad_norm=2"], "dp.max_grad_norm"),  # DP is off: the key would be ignored
        (["dp.epsilon=8", "dp.accountant=gdp2"], "dp.accountant"),
        (["algorithm=fedavg", "quarantine.after=5"], "quarantine"),  # nothing to judge there
    ],
)
def test_bad_dp_settings_fail_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}\b"):
        digits_config(*overrides)


def test_each_client_knows_the_rounds_it_is_planned_to_train_in():
    from fedkd.experiment import planned_rounds, sample_client_ids

    cfg = digits_config("clients.fraction=0.5", "num_rounds=6")
    plans = {c: planned_rounds(cfg, c) for c in range(cfg.clients.num_clients)}
    for r in range(1, 7):  # exactly the server's seeded sample of the whole federation
        assert sorted(c for c, rounds in plans.items() if r in rounds) == sample_client_ids(
            cfg, r, list(range(cfg.clients.num_clients))
        )
    assert sum(len(p) for p in plans.values()) == 6 * 2
