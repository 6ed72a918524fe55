"""Selective answers (issue 12, lever 1): a client abstains on the public samples that look least
like its own private data, so it does not vote where it cannot know (Selective-FD, Shao et al.
2024, arXiv:2304.01731, with a nearest-neighbour density score instead of a trained one).

A sample's score is its distance to the ``k``-th nearest private example, in the leading
principal components of the round's public samples: large where the client has seen nothing
like it (a class it never held, or another domain). The client abstains on the
``clients.abstain`` share of the round's samples with the largest scores and sends that mask,
one bit per sample; the server gives it no say there (:func:`fedkd.aggregation.
class_weighted_mean`'s per-sample weights). Abstaining can only take a client's say away, never
add to it, so the mask needs no trust.
"""

import math

import numpy as np
from numpy.typing import NDArray

COMPONENTS = 32
NEIGHBOURS = 5
MAX_REFERENCE = 4000  # private examples compared with (a seeded subsample beyond that)
MAX_FIT = 500  # public samples the principal components are fitted on (an SVD of 2 000 x 784
# takes seconds on one thread, of 500 x 784 a fraction of one)


def distance_scores(
    private_x: NDArray[np.floating],
    public_x: NDArray[np.floating],
    seed: int,
    k: int = NEIGHBOURS,
) -> NDArray[np.float64]:
    """Each public sample's distance (n,) to its ``k``-th nearest private example, in the
    leading principal components of ``public_x`` (fitted on a seeded subsample of it)."""
    if len(private_x) == 0 or len(public_x) == 0:
        raise ValueError("needs private and public samples")
    rng = np.random.default_rng(seed)
    reference = np.asarray(private_x, dtype=np.float64).reshape(len(private_x), -1)
    if len(reference) > MAX_REFERENCE:
        reference = reference[rng.choice(len(reference), MAX_REFERENCE, replace=False)]
    queries = np.asarray(public_x, dtype=np.float64).reshape(len(public_x), -1)
    centre = queries.mean(axis=0)
    fit = queries[rng.permutation(len(queries))[:MAX_FIT]] - centre  # the basis: a subsample
    _, _, vt = np.linalg.svd(fit, full_matrices=False)
    basis = vt[:COMPONENTS].T
    q, r = (queries - centre) @ basis, (reference - centre) @ basis
    d2 = (q**2).sum(1)[:, None] + (r**2).sum(1)[None, :] - 2 * q @ r.T  # (n, m)
    kth = min(k, len(reference)) - 1
    return np.sqrt(np.maximum(np.partition(d2, kth, axis=1)[:, kth], 0.0))


def abstain_mask(scores: NDArray[np.floating], fraction: float) -> NDArray[np.bool_]:
    """True on the ``ceil(fraction * n)`` samples with the largest scores (ties by index)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n = len(scores)
    mask = np.zeros(n, dtype=bool)
    count = math.ceil(fraction * n)
    if count:
        mask[np.argsort(-np.asarray(scores), kind="stable")[:count]] = True
    return mask


def pack(mask: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """One bit per sample, on the wire."""
    return np.packbits(np.asarray(mask, dtype=bool))


def unpack(packed: NDArray[np.uint8], num_samples: int) -> NDArray[np.bool_]:
    """The mask of ``num_samples`` samples from :func:`pack`'s bytes; ``ValueError`` on any
    other shape, type or padding (untrusted input)."""
    arr = np.asarray(packed)
    if arr.dtype != np.uint8 or arr.shape != (math.ceil(num_samples / 8),):
        raise ValueError(
            f"expected {math.ceil(num_samples / 8)} uint8 bytes for {num_samples} samples, "
            f"got {arr.dtype} {arr.shape}"
        )
    bits = np.unpackbits(arr).astype(bool)
    if bits[num_samples:].any():
        raise ValueError("padding bits are set")
    return bits[:num_samples]
