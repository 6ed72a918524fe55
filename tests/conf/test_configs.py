"""Every config file composes and validates; bad keys and values fail naming the key."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedkd.config import CONF_DIR, ConfigError, compose, from_dict, from_json, to_json
from fedkd.data.partition import PARTITIONERS

# `source` is not selected on its own: dataset, public and test each take one of its options.
GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "source")
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]
# Sources that read the user's files need a path (composing does not read it).
NEEDS_PATH = {"npz", "folder"}


def test_all_groups_present():
    assert {"algorithm", "dataset", "partition", "clients", "model", "experiment"} <= set(GROUPS)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_file_composes_and_validates(group, option):
    extra = [f"{group}.path=/data/mine"] if option in NEEDS_PATH else []
    extra += [f"{group}.fraction=0.25"] if group == "attack" else []
    cfg = compose([f"{group}={option}", *extra])
    if group == "algorithm":
        assert cfg.algorithm.name == option  # one name per algorithm everywhere
    if group in ("dataset", "public", "test"):
        node = getattr(cfg, group)
        assert node is not None and node.source.kind == option
    if group == "partition" and option in PARTITIONERS:
        assert cfg.partition.name == option
    if group == "model":
        assert cfg.model.architecture.kind == option


def test_default_config_is_the_documented_experiment():
    cfg = compose()
    assert cfg.dataset.source.kind == "fmnist" and cfg.dataset.num_public == 10_000
    assert cfg.public is None and cfg.test is None
    assert cfg.partition.name == "dirichlet" and cfg.partition.partitioner.kwargs["alpha"] == 0.5
    assert cfg.clients.num_clients == 10
    assert len(set(cfg.clients.architectures)) >= 3


def test_overrides_reach_the_typed_config_and_survive_json():
    cfg = compose(["algorithm=fedmd", "partition.alpha=0.1", "clients.num_clients=20"])
    assert (
        cfg.algorithm.name,
        cfg.partition.partitioner.kwargs["alpha"],
        cfg.clients.num_clients,
    ) == ("fedmd", 0.1, 20)
    assert from_json(to_json(cfg)) == cfg


def test_architecture_assignment_round_robin_and_map():
    cfg = compose(["clients.architectures=[mlp,cnn]", "++clients.architecture_map={3:resnet}"])
    kinds = [cfg.clients.architecture_of(i).kind for i in range(4)]
    assert kinds == ["mlp", "cnn", "mlp", "resnet"]


def test_client_sampling_fraction_and_minimum():
    cfg = compose(["clients.num_clients=20", "clients.fraction=0.2", "clients.min_clients=2"])
    assert cfg.clients.num_sampled(20) == 4
    assert cfg.clients.num_sampled(5) == 2


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("partition.alpha=-1", "partition.alpha"),
        ("clients.fraction=1.5", "clients.fraction"),
        ("num_rounds=0", "num_rounds"),
        ("clients.architectures=[cnn,transformer]", "clients.architectures[1]"),
        ("model.architecture=vgg", "model.architecture"),
        ("public_per_round=20000", "public_per_round"),
        ("algorithm.combine=mode", "algorithm.combine"),
        ("algorithm.postprocess.temperature=0", "algorithm.postprocess.temperature"),
        ("num_rounds=abc", "num_rounds"),
        ("+partition.alpah=0.1", "partition.alpah"),
        ("clients.kd_schedule=interleaved", "clients.kd_schedule"),
        ("algorithm.memory_decay=0", "algorithm.memory_decay"),
        ("model.ema_decay=1.0", "model.ema_decay"),
        ("model.augment_shift=-2", "model.augment_shift"),
        ("clients.augment_flip=maybe", "clients.augment_flip"),
        ("clients.min_local_steps=-1", "clients.min_local_steps"),
        ("model.lr_schedule=linear", "model.lr_schedule"),
        ("model.lr_min=0.001", "model.lr_min"),  # the constant schedule has no floor
        ("clients.abstain=1.0", "clients.abstain"),
        ("pretrain.seed=3", "pretrain.seed"),  # no pretraining to seed
        ("algorithm=fedavg model.lr_schedule=cosine", "model.lr_schedule"),  # nothing distilled
        ("algorithm=dsfl clients.abstain=0.2", "clients.abstain"),  # its mean takes no weights
        ("dp.epsilon=8 clients.abstain=0.2", "clients.abstain"),  # the mask would leak records
        ("views.zoom=0.5", "views.zoom"),
        ("views.mixup=-1", "views.mixup"),
        ("views.shift=2", "views"),  # the recommended method's running consensus: per sample
        ("algorithm=fedavg views.flip=true", "views"),  # no soft labels to take on views
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        compose(override.split())


def test_min_local_steps_without_local_training_is_refused():
    with pytest.raises(ConfigError, match=r"clients\.min_local_steps"):
        compose(["clients.revisit_epochs=0", "clients.min_local_steps=10"])


def test_min_teacher_samples_needs_the_joint_schedule():
    with pytest.raises(ConfigError, match=r"clients\.min_teacher_samples"):
        compose(["clients.kd_schedule=sequential", "clients.min_teacher_samples=100"])


def test_fedmd_cannot_use_era():
    with pytest.raises(ConfigError, match=r"algorithm\.aggregation"):
        from_dict({"algorithm": {"name": "fedmd", "aggregation": "era"}})


@pytest.mark.parametrize(
    ("override", "needle"),
    [("partition.alpah=0.1", "alpah"), ("partition.alpha=-1", "partition.alpha")],
)
def test_cli_fails_before_anything_starts(tmp_path: Path, override, needle):
    """The `fedkd` command rejects a typo / bad value at once, naming the key, and runs nothing."""
    proc = subprocess.run(
        [sys.executable, "-m", "fedkd", override, f"hydra.run.dir={tmp_path}/run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert needle in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert "flower-superlink" not in proc.stderr + proc.stdout


def test_the_cosine_schedule_spreads_one_decay_over_the_run():
    cfg = compose(["model.lr_schedule=cosine", "model.lr=0.002", "model.lr_min=0.0002",
                   "num_rounds=4"])  # fmt: skip
    rates = [cfg.model.round_lr(r, cfg.num_rounds) for r in range(1, 5)]
    assert rates[0] == pytest.approx(0.002) and rates == sorted(rates, reverse=True)
    assert rates[-1] > 0.0002  # the floor is where round R + 1 would be
    no_floor = compose(["model.lr_schedule=cosine", "model.lr=0.002", "num_rounds=4"]).model
    assert no_floor.round_lr(4, 4) < rates[-1]  # lr_min lifts every round but the first
    assert compose([]).model.round_lr(4, 4) == compose([]).model.lr
