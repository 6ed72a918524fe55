"""Seeded draws that the server and the clients must agree on, computed on both sides from a
seed instead of sending a list of indices."""

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

Seed = Sequence[int]  # numpy SeedSequence entropy: non-negative ints


def public_subset(num_public: int, count: int, seed: Seed) -> NDArray[np.int32]:
    """Sorted indices (int32, (count,)) of a round's public subset: ``count`` of the
    ``num_public`` public samples, drawn without replacement from ``seed``."""
    if not 1 <= count <= num_public:
        raise ValueError(f"public subset of {count} out of {num_public} samples")
    if any(not isinstance(s, int | np.integer) or s < 0 for s in seed) or not seed:
        raise ValueError(f"public seed {list(seed)!r} is not a list of non-negative ints")
    idx = np.random.default_rng([int(s) for s in seed]).choice(num_public, count, replace=False)
    return np.sort(idx).astype(np.int32)


def round_public_seed(seed: int, server_round: int) -> list[int]:
    """The default public seed of ``server_round`` in a run seeded ``seed``."""
    return [seed, server_round, 1]


def round_view_seed(seed: int, server_round: int) -> list[int]:
    """The seed of ``server_round``'s views of the public samples (``views.*``)."""
    return [seed, server_round, 3]


def parse_seed(value: object, key: str) -> list[int]:
    """A seed received in a message: a non-empty list of non-negative ints, else ValueError."""
    given = value if isinstance(value, list) else []
    seed = [s for s in given if isinstance(s, int) and not isinstance(s, bool) and s >= 0]
    if not seed or len(seed) != len(given):
        raise ValueError(f"'{key}' must be a list of non-negative ints, got {value!r}")
    return seed


def teacher_subset(
    num_teacher: int, num_private: int, seed: int, minimum: int = 0
) -> NDArray[np.int64]:
    """Which of ``num_teacher`` teacher samples a client mixes into one pass over its
    ``num_private`` private examples (``clients.kd_schedule=joint``): as many as it has private
    examples, or ``minimum`` (``clients.min_teacher_samples``) if that is more -- all of them
    when there are fewer -- in a seeded random order. The server sends the consensus only for
    these."""
    wanted = max(num_private, minimum, 0)
    return np.random.default_rng(seed).choice(
        num_teacher, size=min(num_teacher, wanted), replace=False
    )
