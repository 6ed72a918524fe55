"""Consistent views: a pure function of (public set, indices, seed) that every node agrees on."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkd.views import Views

X = np.random.default_rng(0).random((40, 2, 9, 7)).astype(np.float32)  # (N, C, H, W)
ALL = np.arange(len(X))
STRONG = Views(zoom=2.0, shift=2, flip=True, mixup=1.0)


def test_no_option_is_the_samples_themselves():
    assert not Views().active
    np.testing.assert_array_equal(Views()(X, np.array([3, 1]), [5]), X[[3, 1]])


@settings(max_examples=30, deadline=None)
@given(
    seed=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3),
    idx=st.lists(st.integers(0, len(X) - 1), max_size=12),
)
def test_a_samples_view_depends_only_on_the_seed_and_its_index(seed, idx):
    """What a client asks for (any subset, any order, repeats) is a slice of the full views:
    the server and a client holding other rows still agree on every row."""
    idx = np.array(idx, dtype=np.int64)
    full = STRONG(X, ALL, seed)
    got = STRONG(X, idx, seed)
    assert got.dtype == np.float32 and got.shape == (len(idx), *X.shape[1:])
    np.testing.assert_array_equal(got, full[idx])
    np.testing.assert_array_equal(STRONG(X.copy(), idx, list(seed)), got)  # a fresh copy: same


def test_another_seed_draws_other_views():
    assert not np.array_equal(STRONG(X, ALL, [1]), STRONG(X, ALL, [2]))


def test_a_shift_is_a_translation_with_repeated_edges():
    views = Views(shift=2)(X, ALL, [7])
    padded = np.pad(X, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
    moved = 0
    for view, image in zip(views, padded, strict=True):
        offsets = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(view, image[:, dy : dy + 9, dx : dx + 7])
        ]
        assert offsets, "a shifted view is a window of the edge-padded image"
        moved += (2, 2) not in offsets
    assert moved > len(X) // 2  # most views moved (1 in 25 stays put)


def test_a_mirror_or_a_zoom_only_rearranges_the_samples_own_pixels():
    flipped = Views(flip=True)(X, ALL, [3])
    same = [np.array_equal(v, x) for v, x in zip(flipped, X, strict=True)]
    mirrored = [np.array_equal(v, x[..., ::-1]) for v, x in zip(flipped, X, strict=True)]
    assert all(a or b for a, b in zip(same, mirrored, strict=True))
    assert 0 < sum(mirrored) < len(X)
    zoomed = Views(zoom=3.0)(X, ALL, [3])
    magnified = 0
    for view, image in zip(zoomed, X, strict=True):
        assert np.isin(view, image).all()  # nearest neighbour: no new values
        magnified += len(np.unique(view)) < len(np.unique(image))  # a window, enlarged
    assert magnified > len(X) * 3 // 4  # (a factor drawn near 1 may keep every pixel)


def test_mixup_leans_towards_the_sample_itself():
    """Each view is lam * own + (1 - lam) * partner's with lam >= 0.5: nearer its own sample
    than any other, so its label is still its own."""
    views = Views(mixup=1.0)(X, ALL, [11])
    distances = ((views[:, None] - X[None]) ** 2).sum(axis=(2, 3, 4))  # (N, N)
    assert (distances.argmin(axis=1) == ALL).all()
    assert not np.array_equal(views, X)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"zoom": 0.5}, "zoom"), ({"shift": -1}, "shift"), ({"mixup": -1}, "mixup")],
)
def test_bad_parameters_are_refused(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Views(**kwargs)


def test_indices_outside_the_set_are_refused():
    with pytest.raises(ValueError, match="indices"):
        STRONG(X, np.array([len(X)]), [1])
