"""From sources to the three splits of a run: private pool, public proxy set, test set.

The private data's source (``dataset``) defines the task: its classes and its input shape. The
public set and the test set are held out of it, seeded, unless they come from sources of their
own (``public=...``, ``test=...``); such a source's images are resized (and converted between
greyscale and RGB) to the task's shape, or refused with both shapes named. Then every split is
normalised with one per-channel mean and std, computed from the **public** set (never from a
client's private data) or given in config, so every node and the server see identical inputs.

Draw order (kept so that seeded splits do not move): a source with its own test split permutes
its training pool and takes the public set, then the private pool; one without takes the test
set first, then the public set, then the private pool.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedkd.data.datasets import (
    ArrayDataset,
    DatasetSplits,
    ImageSet,
    check_labels,
    normalize,
)
from fedkd.data.sources import SourceData, default_test_size

__all__ = ["ExternalSplit", "SplitSizes", "build_splits", "fit_shape"]

log = logging.getLogger(__name__)

# ITU-R BT.601 luma: how an RGB source becomes greyscale for a greyscale task.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class SplitSizes:
    """How much of the private data's source each split takes (``None``: the default)."""

    num_public: int = 0  # held out for the public set (0: the public set has its own source)
    num_private: int | None = None  # None: all that is left
    num_test: int | None = None  # None: the source's test split, else its default hold-out


@dataclass(frozen=True, eq=False)
class ExternalSplit:
    """A public or test set taken from a source of its own."""

    data: SourceData
    num_samples: int | None = None  # None: all of it
    resize: bool = True  # False: a shape other than the task's is an error
    task_labels: bool = True  # its labels are the task's classes (public: metrics need them)


def build_splits(
    private: SourceData | None,
    sizes: SplitSizes,
    *,
    public: ExternalSplit | None = None,
    test: ExternalSplit | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    seed: int = 0,
    name: str = "",
) -> DatasetSplits:
    """Assemble and normalise the splits; see the module docstring for the rules.

    ``private`` may be ``None`` only when ``public`` and ``test`` both have their own sources
    (a deployment server, which never sees private data): the task's classes and input shape
    then come from the test source, and the private pool is empty.

    Raises
    ------
    ValueError
        A size exceeds what a source holds, labels are missing or out of range, shapes cannot
        be matched, or the statistics are degenerate; the message names the split.
    """
    rng = np.random.default_rng(seed)
    if private is None:
        if public is None or test is None:
            raise ValueError("the private data's source is needed to hold out public/test sets")
        test_raw = _external(test, "test", seed, 2, prefer_test=True)
        shape = _shape(test_raw)
        num_classes = test.data.classes()
        private_set = ImageSet(np.zeros((0, *shape), np.float32), np.zeros(0, np.int64))
    else:
        pool = private.train
        if pool.y is None:
            raise ValueError("dataset: the private data needs labels ('y')")
        num_classes = private.classes()
        check_labels(pool.y, num_classes, "dataset labels")
        num_public = 0 if public is not None else sizes.num_public
        if test is not None:
            public_idx, private_idx = _draw(rng.permutation(len(pool)), num_public, sizes)
            test_raw = _external(test, "test", seed, 2, prefer_test=True)
        elif private.test is not None:
            public_idx, private_idx = _draw(rng.permutation(len(pool)), num_public, sizes)
            test_raw = private.test
            if sizes.num_test is not None:
                if sizes.num_test > len(test_raw):
                    raise ValueError(
                        f"num_test={sizes.num_test} exceeds the {len(test_raw)} samples of the "
                        "source's test split"
                    )
                test_raw = test_raw.take(np.sort(rng.permutation(len(test_raw))[: sizes.num_test]))
        else:
            num_test = default_test_size(private) if sizes.num_test is None else sizes.num_test
            if num_test >= len(pool):
                raise ValueError(f"num_test={num_test} leaves no training data of {len(pool)}")
            order = rng.permutation(len(pool))
            test_raw = pool.take(np.sort(order[:num_test]))
            public_idx, private_idx = _draw(
                order[num_test:], num_public, sizes, f"after the {num_test} test samples"
            )
        shape = _shape(pool)
        private_set = pool.take(private_idx)
        public_raw = pool.take(public_idx) if public is None else None
    if public is not None:
        public_raw = _external(public, "public", seed, 1, prefer_test=False)
        if not public.task_labels:
            public_raw = ImageSet(public_raw.x)
    assert public_raw is not None
    public_raw = fit_shape(public_raw, shape, "public", public is None or public.resize)
    test_raw = fit_shape(test_raw, shape, "test", test is None or test.resize)
    test_set = test_raw.labelled("the test set")
    check_labels(test_set.y, num_classes, "test labels")
    if public_raw.y is not None:
        check_labels(public_raw.y, num_classes, "public labels (public.task_labels=true)")

    if mean is None or std is None:
        mean, std = _stats(public_raw.x)
    splits = DatasetSplits(
        private=ArrayDataset(normalize(private_set.x, mean, std), _labels(private_set)),
        public=ImageSet(normalize(public_raw.x, mean, std), public_raw.y),
        test=ArrayDataset(normalize(test_set.x, mean, std), test_set.y),
        num_classes=num_classes,
        input_shape=shape,
        name=name,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )
    log.info(
        "Data %s (seed %d): %d private, %d public%s, %d test samples, %d classes, shape %s",
        name,
        seed,
        len(splits.private),
        len(splits.public),
        "" if splits.public.y is not None else " (unlabelled)",
        len(splits.test),
        num_classes,
        shape,
    )
    return splits


def fit_shape(data: ImageSet, shape: tuple[int, int, int], what: str, resize: bool) -> ImageSet:
    """``data`` with images of ``shape`` ``(C, H, W)``: resized (bilinear, antialiased) and
    converted between greyscale and RGB if ``resize``, else unchanged or refused."""
    have = _shape(data)
    if have == shape:
        return data
    if not resize:
        raise ValueError(
            f"{what} images have shape {have}, the private data {shape}; "
            f"set {what}.resize=true to resize them"
        )
    import torch
    import torch.nn.functional as F

    x = data.x
    if have[0] != shape[0]:
        if (have[0], shape[0]) == (3, 1):
            x = np.einsum("nchw,c->nhw", x, _LUMA)[:, None]
        elif have[0] == 1:
            x = np.repeat(x, shape[0], axis=1)
        else:
            raise ValueError(
                f"{what} images have {have[0]} channels, the private data {shape[0]}: "
                "only greyscale <-> RGB can be converted"
            )
    if x.shape[2:] != shape[1:]:
        resized = F.interpolate(
            torch.from_numpy(np.ascontiguousarray(x)),
            size=shape[1:],
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        x = resized.numpy()
    log.info("%s images resized from %s to %s", what, have, shape)
    return ImageSet(np.ascontiguousarray(x, dtype=np.float32), data.y)


def _external(
    split: ExternalSplit, what: str, seed: int, stream: int, prefer_test: bool
) -> ImageSet:
    source = split.data
    data = source.test if prefer_test and source.test is not None else source.train
    if split.num_samples is None:
        return data
    if split.num_samples > len(data):
        raise ValueError(
            f"{what}.num_samples={split.num_samples} exceeds the {len(data)} samples of its source"
        )
    rng = np.random.default_rng([seed, stream])
    return data.take(np.sort(rng.permutation(len(data))[: split.num_samples]))


def _draw(
    order: npt.NDArray[np.integer], num_public: int, sizes: SplitSizes, context: str = ""
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Take the public set, then the private pool, from the front of a permuted index pool.

    Returns both as sorted int64 arrays so that each split keeps the source's order.
    """
    where = f"the {len(order)} samples available" + (f" {context}" if context else "")
    if num_public >= len(order):
        raise ValueError(
            f"num_public={num_public} leaves no private samples: it must be below {where}"
        )
    public_idx, rest = order[:num_public], order[num_public:]
    if sizes.num_private is not None:
        if sizes.num_private > len(rest):
            raise ValueError(
                f"num_private={sizes.num_private} exceeds the {len(rest)} samples left from "
                f"{where} after num_public={num_public}"
            )
        rest = rest[: sizes.num_private]
    return np.sort(public_idx).astype(np.int64), np.sort(rest).astype(np.int64)


def _stats(x: npt.NDArray[np.float32]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the public images (float64 accumulation)."""
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x.std(axis=(0, 2, 3), dtype=np.float64)
    if (std <= 1e-12).any():
        raise ValueError(
            "the public set has a constant channel: give normalize.mean and normalize.std"
        )
    return tuple(mean.tolist()), tuple(std.tolist())


def _shape(data: ImageSet) -> tuple[int, int, int]:
    c, h, w = (int(d) for d in data.x.shape[1:])
    return c, h, w


def _labels(data: ImageSet) -> npt.NDArray[np.int64]:
    assert data.y is not None
    return data.y
