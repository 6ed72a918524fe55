"""Bad input fails before training -- before Flower starts -- with a message naming the key."""

import re

import numpy as np
import pytest
from torch import nn

from fedkd.config import ConfigError, compose
from fedkd.experiment import preflight


class WrongWidth(nn.Module):
    """A model whose output is (batch, num_classes + 1): not logits of the task."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.layer = nn.Linear(int(np.prod(input_shape)), num_classes + 1)

    def forward(self, x):
        return self.layer(x.flatten(1))


class NoContext(nn.Module):
    """A model that does not take the input shape fedkd passes."""

    def __init__(self, width=3):
        super().__init__()


def _npz(path, labels, shape=(8, 8), with_y=True):
    x = np.zeros((len(labels), *shape), np.uint8)
    x[:, 0, 0] = np.arange(len(labels)) % 255  # not constant: the statistics need variance
    arrays = {"x": x, "y": np.asarray(labels)} if with_y else {"x": x}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        # options the chosen part does not use
        (["clients.kd_schedule=joint", "clients.digest_epochs=3"], "clients.digest_epochs"),
        (["algorithm=dsfl", "algorithm.memory_decay=0.8"], "algorithm.memory_decay"),
        (["algorithm=fedavg", "model.ema_decay=0.5"], "model.ema_decay"),
        (["algorithm=local", "model.augment_shift=2"], "model.augment_shift"),
        (["partition=iid", "+partition.alpha=0.05"], "partition.alpha"),
        (["partition=shards", "+partition.alpha=0.05"], "partition.alpha"),
        (["dataset=digits", "+dataset.data_dir=/data"], "dataset.data_dir"),
        (["algorithm=fedavg", "+algorithm.temperature=2.0"], "algorithm.temperature"),
        (["algorithm=fedmd", "+algorithm.patience=3"], "algorithm.patience"),
        # a teacher nobody digests, or clients that digest none
        (["clients.kd_schedule=sequential", "clients.digest_epochs=0"], "algorithm.client_teacher"),
        (["algorithm.client_teacher=null"], "algorithm.client_teacher"),
        # parts that cannot be found or built
        (["model.architecture=nowhere.nets.Net"], "model.architecture"),
        (["clients.architectures=[cnn,nowhere.Net]"], "clients.architectures[1]"),
        ([f"model.architecture={__name__}.NoContext"], "model.architecture"),
        (["algorithm.combine=nowhere.Rule"], "algorithm.combine"),
        (["+algorithm.postprocess.sharpness=2"], "algorithm.postprocess.sharpness"),
        (["dataset=npz"], "dataset.path"),  # a mandatory key left unset
        (["algorithm.codec={name:topk,k:0}"], "algorithm.codec.k"),
        (["algorithm.codec={name:topk,spread:1}"], "algorithm.codec.spread"),
        (["algorithm=fedavg", "+algorithm.codec=int8"], "algorithm.codec"),
        (["simulation.engine=ray"], "simulation.engine"),
        (["simulation.backend=threads"], "simulation.backend"),
        (["simulation.engine=superlink"], "simulation.backend"),  # flwr run: Ray's actors
    ],
)
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises(Exception, match=re.escape(key)):
        compose(["experiment=digits_quick", *overrides])


def test_missing_file_fails_naming_the_data_node(tmp_path):
    cfg = compose(["experiment=digits_quick", "dataset=npz", f"dataset.path={tmp_path}/no.npz"])
    with pytest.raises(ConfigError, match=r"data \(dataset\).*no\.npz does not exist"):
        preflight(cfg)
    cfg = compose(["experiment=digits_quick", "public=folder", f"public.path={tmp_path}/none"])
    with pytest.raises(ConfigError, match=r"data \(dataset, public\).*none"):
        preflight(cfg)


def test_labels_beyond_the_class_count_fail(tmp_path):
    path = _npz(tmp_path / "d.npz", list(range(10)) * 20)
    base = ["experiment=digits_quick", "dataset=npz", f"dataset.path={path}"]
    sizes = ["dataset.num_public=50", "dataset.num_test=50"]
    with pytest.raises(ConfigError, match=r"dataset labels must lie in \[0, 3\)"):
        preflight(compose([*base, *sizes, "dataset.num_classes=3"]))
    test = _npz(tmp_path / "t.npz", [0, 1, 12])
    with pytest.raises(ConfigError, match=r"test labels must lie in \[0, 10\)"):
        preflight(compose([*base, *sizes[:1], "test=npz", f"test.path={test}"]))


def test_model_with_the_wrong_output_shape_fails_naming_the_key():
    cfg = compose(["experiment=digits_quick", f"clients.architectures=[cnn,{__name__}.WrongWidth]"])
    with pytest.raises(ConfigError, match=r"clients\.architectures\[1\].*\(2, 10\), got \(2, 11\)"):
        preflight(cfg)


def test_a_public_set_of_another_shape_is_resized_or_refused(tmp_path):
    public = _npz(tmp_path / "p.npz", [0] * 40, shape=(28, 28), with_y=False)
    base = ["experiment=digits_quick", "public=npz", f"public.path={public}"]
    splits = preflight(compose(base))
    assert splits.public.x.shape == (40, 1, 8, 8) and splits.public.y is None
    with pytest.raises(ConfigError, match=r"\(1, 28, 28\).*\(1, 8, 8\)"):
        preflight(compose([*base, "public.resize=false"]))


def test_deployment_leaves_data_absent_here_to_the_server(tmp_path, caplog):
    from fedkd.launch import check_before_start

    missing = ["experiment=digits_quick", "dataset=npz", f"dataset.path={tmp_path}/no.npz"]
    with pytest.raises(ConfigError, match="does not exist"):
        check_before_start(compose(missing))  # simulation: the data must be here
    check_before_start(compose([*missing, "mode=deploy"]))  # deployment: the server's business
    assert "cannot check the data here" in caplog.text
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not an archive")
    with pytest.raises(ConfigError, match=r"not a readable \.npz"):  # present but malformed
        check_before_start(compose([*missing[:2], f"dataset.path={broken}", "mode=deploy"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algorithm=fedmd", "algorithm.codec=topk"], "sends logits"),
        (["algorithm.codec={name:topk,k:11}"], "exceeds the 10 classes"),
    ],
)
def test_a_codec_that_cannot_encode_the_soft_labels_fails_before_the_run(overrides, message):
    cfg = compose(["experiment=digits_quick", *overrides])
    with pytest.raises(ConfigError, match=rf"algorithm\.codec.*{message}"):
        preflight(cfg)


@pytest.mark.parametrize(
    "overrides",
    [
        # more clients than a label-skewed split can give an example each
        ["clients.num_clients=500", "partition=dirichlet", "partition.alpha=0.05"],
        # more clients than private examples
        ["clients.num_clients=5000", "partition=iid"],
    ],
)
def test_a_split_that_leaves_a_client_without_data_fails_before_the_run(overrides):
    cfg = compose(["experiment=digits_quick", "clients.min_clients=1", *overrides])
    with pytest.raises(ConfigError, match=r"partition \(with clients\.num_clients="):
        preflight(cfg)
    preflight(cfg, private=False)  # a deployment server holds no private pool to split
