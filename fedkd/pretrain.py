"""A self-supervised start on the public images (issue 12, lever 2): no private data, no labels.

Every model fedkd builds -- each client's student and the global model -- is a classifier with
``num_classes`` outputs and nothing else, so the pretext task must fit that head: the public
images are clustered (k-means on their leading principal components, seeded) into as many
clusters as the task has classes, and the model learns to tell the clusters apart (DeepCluster,
Caron et al. 2018, arXiv:1807.05520, with the clustering done once). Its head is then re-drawn
(clusters are not classes), its features kept. FedAUX (Hoech et al. 2021, arXiv:2102.02514)
pre-trains on the public set in the same spirit.

The result depends only on the architecture, the public images and ``pretrain.*``: it is
computed once per machine and cached (``$FEDKD_CACHE_DIR`` or ``~/.cache/fedkd``, under
``pretrain/``), so every node pays for it once and every node gets the same weights. Results
folders never hold it.
"""

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

log = logging.getLogger("fedkd.pretrain")

CACHE_ENV = "FEDKD_CACHE_DIR"
COMPONENTS = 50  # principal components the images are clustered on
KMEANS_ITERATIONS = 30
BATCH_SIZE = 128
LR = 1e-3


def cluster_labels(x: NDArray[np.floating], k: int, seed: int) -> NDArray[np.int64]:
    """k-means (k-means++ start, Lloyd's iterations) of images ``x`` (N, ...) on their leading
    principal components: one cluster id per image, the same for the same inputs and seed."""
    rng = np.random.default_rng(seed)
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    flat = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat[rng.permutation(len(flat))[:2000]], full_matrices=False)
    points = flat @ vt[:COMPONENTS].T  # (N, COMPONENTS)
    centres = points[[rng.integers(len(points))]]
    for _ in range(1, k):  # k-means++: each next centre far from the ones chosen
        d2 = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2).min(axis=1)
        centres = np.vstack([centres, points[rng.choice(len(points), p=d2 / d2.sum())]])
    labels = np.zeros(len(points), dtype=np.int64)
    for _ in range(KMEANS_ITERATIONS):
        labels = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
        for c in range(k):  # an emptied cluster keeps its centre
            if (labels == c).any():
                centres[c] = points[labels == c].mean(axis=0)
    return labels


def reset_head(model: nn.Module, seed: int) -> None:
    """Re-draw the last linear layer (the classifier head) with PyTorch's default init."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not head:
        raise ValueError(f"{type(model).__name__} has no nn.Linear head to re-draw")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head[-1].reset_parameters()


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/fedkd").expanduser() / "pretrain"


def cache_key(architecture: str, public_x: NDArray[np.floating], settings: dict) -> str:
    """What the weights depend on: the architecture (its config node), the public images
    (their bytes) and the pretraining settings."""
    digest = hashlib.sha256(json.dumps([architecture, settings], sort_keys=True).encode())
    digest.update(np.ascontiguousarray(public_x, dtype=np.float32).tobytes())
    return digest.hexdigest()[:32]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process at a time computes a given entry; the others wait, then read it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pretrained_state(
    build: Callable[[], nn.Module],
    architecture: str,
    public_x: NDArray[np.floating],
    num_classes: int,
    epochs: int,
    seed: int,
) -> dict[str, torch.Tensor]:
    """The state of a model of ``architecture`` (``build()`` makes one) after the
    self-supervised start: from the cache, or trained now and cached (atomically). The model
    is drawn from ``seed``, not from whoever asks first: every node gets the same weights."""
    from fedkd.training import TrainConfig, supervised_loss, train

    settings = {"epochs": epochs, "seed": seed, "clusters": num_classes, "v": 1}
    path = cache_dir() / f"{cache_key(architecture, public_x, settings)}.pt"
    with _locked(path):
        if path.is_file():
            state: dict[str, torch.Tensor] = torch.load(path, weights_only=True)
            return state
        log.info("self-supervised start of %s on %d public images (cached in %s)",
                 architecture, len(public_x), path)  # fmt: skip
        labels = cluster_labels(public_x, num_classes, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build()
        cfg = TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, lr=LR, seed=seed)
        x = torch.from_numpy(np.ascontiguousarray(public_x, dtype=np.float32))
        train(model, x, torch.from_numpy(labels), supervised_loss, cfg)
        reset_head(model, seed)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)
        return model.state_dict()
