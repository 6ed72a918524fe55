"""The self-supervised start: clusters of the public images, learnt once per machine and
architecture, the same weights for every client of that architecture."""

import numpy as np
import pytest
import torch

from fedkd import pretrain
from fedkd.config import ConfigError
from fedkd.experiment import build_client_model, build_global_model, load_data, preflight
from tests.conftest import digits_config


def test_cluster_labels_separate_what_is_apart_and_repeat_with_the_seed():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.1, (40, 1, 4, 4)), rng.normal(3, 0.1, (60, 1, 4, 4))
    labels = pretrain.cluster_labels(np.concatenate([a, b]), 2, seed=1)
    assert len(set(labels[:40])) == 1 and len(set(labels[40:])) == 1 and labels[0] != labels[-1]
    np.testing.assert_array_equal(labels, pretrain.cluster_labels(np.concatenate([a, b]), 2, 1))


def _pairs(a, b):
    return zip(a.state_dict().values(), b.state_dict().values(), strict=True)


def _same(a, b):
    return all(torch.equal(x, y) for x, y in _pairs(a, b))


def test_students_start_from_one_cached_pretraining_per_architecture(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrain.CACHE_ENV, str(tmp_path))
    cfg = digits_config("pretrain.epochs=2", "clients.architectures=[cnn,mlp]")
    splits = load_data(cfg)
    fresh = build_client_model(digits_config("clients.architectures=[cnn,mlp]"), 0, splits)
    first, third = build_client_model(cfg, 0, splits), build_client_model(cfg, 2, splits)  # cnn
    assert len(list((tmp_path / "pretrain").glob("*.pt"))) == 1
    assert _same(first, third)  # the same start, whoever asked first
    changed = [not torch.equal(a, b) for a, b in _pairs(fresh, first)]
    assert all(changed)  # every layer moved away from the fresh draw (and the head was re-drawn)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of reading the cache")

    monkeypatch.setattr("fedkd.training.train", no_training)
    again = build_client_model(cfg, 4, splits)
    assert _same(first, again)
    with pytest.raises(AssertionError, match="trained again"):
        build_client_model(cfg, 1, splits)  # the mlp: not cached yet
    with pytest.raises(AssertionError, match="trained again"):  # another seed: another start
        build_client_model(digits_config("pretrain.epochs=2", "pretrain.seed=1"), 0, splits)


def test_preflight_pays_for_every_architecture_once(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrain.CACHE_ENV, str(tmp_path))
    cfg = digits_config("pretrain.epochs=1", "clients.architectures=[cnn,mlp]",
                        "model.architecture=cnn")  # fmt: skip
    splits = preflight(cfg)
    assert len(list((tmp_path / "pretrain").glob("*.pt"))) == 2  # cnn (clients + global), mlp
    build_global_model(cfg, splits)
    assert len(list((tmp_path / "pretrain").glob("*.pt"))) == 2


def test_pretrain_epochs_must_not_be_negative():
    with pytest.raises(ConfigError, match=r"pretrain\.epochs"):
        digits_config("pretrain.epochs=-1")
