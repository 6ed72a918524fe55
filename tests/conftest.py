"""Shared fixtures: small real-data configs on the embedded digits dataset."""

import dataclasses

import pytest

from fedkd.config import ExperimentConfig, compose


def digits_config(*overrides: str, **replace: object) -> ExperimentConfig:
    """The `digits_quick` experiment with extra Hydra overrides / top-level replacements."""
    cfg = compose(["experiment=digits_quick", *overrides])
    return dataclasses.replace(cfg, **replace) if replace else cfg


@pytest.fixture
def digits_cfg() -> ExperimentConfig:
    return digits_config()


@pytest.fixture(autouse=True)
def flower_task_identity():
    """What Flower's runtime sets before it runs an app: Messages built outside it need it."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
