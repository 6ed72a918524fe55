"""Selective answers: a client abstains where the public samples look least like its data."""

import numpy as np
import pytest

from fedkd import abstain, aggregation


def test_the_samples_far_from_the_private_data_are_the_ones_abstained_on():
    rng = np.random.default_rng(0)
    private = rng.normal(0, 1, (200, 1, 6, 6))
    near, far = rng.normal(0, 1, (30, 1, 6, 6)), rng.normal(6, 1, (10, 1, 6, 6))
    public = np.concatenate([near, far])[rng.permutation(40)]
    is_far = public.mean(axis=(1, 2, 3)) > 3
    scores = abstain.distance_scores(private, public, seed=0)
    assert scores[is_far].min() > scores[~is_far].max()
    mask = abstain.abstain_mask(scores, 0.25)
    np.testing.assert_array_equal(mask, is_far)
    assert not abstain.abstain_mask(scores, 0.0).any()
    with pytest.raises(ValueError, match="fraction"):
        abstain.abstain_mask(scores, 1.0)


@pytest.mark.parametrize("n", [1, 8, 13, 2000])
def test_the_mask_travels_as_one_bit_per_sample(n):
    mask = np.random.default_rng(n).random(n) < 0.3
    packed = abstain.pack(mask)
    assert packed.dtype == np.uint8 and packed.nbytes == -(-n // 8)
    np.testing.assert_array_equal(abstain.unpack(packed, n), mask)


def test_a_malformed_mask_is_refused():
    with pytest.raises(ValueError, match="uint8"):
        abstain.unpack(np.zeros(2, np.int32), 13)
    with pytest.raises(ValueError, match="bytes"):
        abstain.unpack(np.zeros(3, np.uint8), 13)
    with pytest.raises(ValueError, match="padding"):
        abstain.unpack(np.array([0, 0b00000001], np.uint8), 13)


def test_a_client_that_abstains_has_no_say_there_and_nobody_speaking_falls_back_to_the_mean():
    stack = np.array([[[0.9, 0.1], [0.9, 0.1]], [[0.2, 0.8], [0.2, 0.8]]])
    counts = np.ones((2, 2))
    weights = np.array([[0.0, 0.0], [1.0, 0.0]])  # client 0 abstains on both, client 1 on one
    merged, _ = aggregation.class_weighted_mean(stack, counts, weights)
    np.testing.assert_allclose(merged[0], [0.2, 0.8])  # only client 1 spoke
    np.testing.assert_allclose(merged[1], [0.55, 0.45])  # nobody: the plain mean
    rule = aggregation.ClassWeightedReputation()
    combined = rule(stack, np.ones(2), counts, client_ids=[0, 1], sample_weights=weights)
    assert combined.scores[0, 1] > combined.scores[0, 0]
