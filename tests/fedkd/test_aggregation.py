import numpy as np
import pytest
from numpy.testing import assert_allclose

from fedkd import aggregation

# Two clients, two samples, two classes.
PROBS = np.array(
    [
        [[0.9, 0.1], [0.2, 0.8]],
        [[0.5, 0.5], [0.4, 0.6]],
    ]
)


def test_mean_is_plain_average():
    assert_allclose(aggregation.mean(PROBS), [[0.7, 0.3], [0.3, 0.7]], rtol=1e-6)


def test_weighted_mean_uses_example_counts():
    # weights 3:1 -> 0.75 * client0 + 0.25 * client1
    out = aggregation.weighted_mean(PROBS, np.array([300, 100]))
    assert_allclose(out, [[0.8, 0.2], [0.25, 0.75]], rtol=1e-6)
    assert out.dtype == np.float32


def test_weighted_mean_without_weights_equals_mean():
    assert_allclose(aggregation.weighted_mean(PROBS, None), aggregation.mean(PROBS))


@pytest.mark.parametrize("weights", [np.array([1.0]), np.array([-1.0, 2.0]), np.array([0, 0])])
def test_weighted_mean_rejects_bad_weights(weights):
    with pytest.raises(ValueError, match="weights"):
        aggregation.weighted_mean(PROBS, weights)


def test_era_sharpens_the_mean():
    # mean row (0.7, 0.3) with T = 0.1: softmax((7, 3)) = (1, e^-4) / (1 + e^-4)
    out = aggregation.era(PROBS, temperature=0.1)
    p = 1.0 / (1.0 + np.exp(-4.0))
    assert_allclose(out, [[p, 1 - p], [1 - p, p]], rtol=1e-5)
    assert aggregation.ERA_TEMPERATURE == 0.1


def test_era_entropy_is_lower_than_mean_entropy():
    rng = np.random.default_rng(0)
    probs = aggregation.softmax(rng.normal(size=(5, 100, 10)))

    def entropy(p):
        return float(-(p * np.log(p)).sum(axis=1).mean())

    assert entropy(aggregation.era(probs)) < entropy(aggregation.mean(probs))
    assert (aggregation.era(probs).argmax(1) == aggregation.mean(probs).argmax(1)).all()


def test_softmax_with_temperature_and_float16_input():
    logits = np.array([[0.0, np.log(3.0)]], dtype=np.float16)
    assert_allclose(aggregation.softmax(logits), [[0.25, 0.75]], rtol=1e-3)
    assert_allclose(
        aggregation.softmax(np.array([[0.0, 2.0]]), temperature=2.0)[0, 0],
        1 / (1 + np.e),
        rtol=1e-9,
    )


def test_rejects_wrong_rank():
    with pytest.raises(ValueError, match="num_clients"):
        aggregation.mean(np.zeros((3, 4)))


def test_class_weighted_mean_lets_the_clients_that_know_a_class_speak_for_it():
    # client 0 holds only class 0, client 1 only class 1 (counts), one sample
    probs = np.array([[[0.9, 0.1]], [[0.2, 0.8]]])
    counts = np.array([[10.0, 0.0], [0.0, 30.0]])
    consensus, totals = aggregation.class_weighted_mean(probs, counts)
    # class 0 from client 0 only (0.9), class 1 from client 1 only (0.8); rows are left to
    # the algorithm's to_probs (DS-FL renormalises them)
    assert_allclose(consensus, [[0.9, 0.8]], rtol=1e-6)
    assert_allclose(aggregation.normalize_rows(consensus), [[0.9 / 1.7, 0.8 / 1.7]], rtol=1e-6)
    assert_allclose(totals, [10.0, 30.0])


def test_class_weighted_mean_with_equal_weights_is_the_mean_and_unheld_classes_fall_back():
    assert_allclose(
        aggregation.class_weighted_mean(PROBS, np.ones((2, 2)))[0], aggregation.mean(PROBS)
    )
    consensus, _ = aggregation.class_weighted_mean(PROBS, np.array([[1.0, 0.0], [1.0, 0.0]]))
    # class 1 held by nobody -> plain mean for it
    assert_allclose(consensus, [[0.7, 0.3], [0.3, 0.7]], rtol=1e-6)
    with pytest.raises(ValueError, match="class_weights"):
        aggregation.class_weighted_mean(PROBS, np.ones((3, 2)))


def test_combine_rules_and_era_postprocessing():
    counts = np.array([[10.0, 0.0], [0.0, 30.0]])
    examples = np.array([300.0, 100.0])
    assert_allclose(aggregation.Mean()(PROBS, examples, None).scores, aggregation.mean(PROBS))
    weighted = aggregation.WeightedMean()(PROBS, examples, None).scores
    assert_allclose(weighted, aggregation.weighted_mean(PROBS, examples))
    rule = aggregation.ClassWeighted()
    assert rule.needs_class_counts and not aggregation.Mean.needs_class_counts
    combined = rule(PROBS, examples, counts)
    assert_allclose(combined.class_weight, [10.0, 30.0])
    with pytest.raises(ValueError, match="class counts"):
        rule(PROBS, examples, None)
    q = 1 / (1 + np.exp(-4.0))  # softmax((0.7, 0.3) / 0.1)
    assert_allclose(aggregation.ERA(0.1)(np.array([[0.7, 0.3]])), [[q, 1 - q]], rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        aggregation.ERA(0.0)


def test_normalize_rows_makes_probabilities_and_all_zero_rows_uniform():
    assert_allclose(
        aggregation.normalize_rows(np.array([[2.0, 6.0], [0.0, 0.0]])), [[0.25, 0.75], [0.5, 0.5]]
    )


# Three honest clients and one liar, one sample, two classes (probabilities).
HONEST_AND_LIAR = np.array([[[0.9, 0.1]], [[0.8, 0.2]], [[0.7, 0.3]], [[0.0, 1.0]]])


def test_median_is_the_coordinatewise_median_and_ignores_one_liar():
    out = aggregation.Median()(HONEST_AND_LIAR, np.ones(4), None).scores
    assert_allclose(
        out, [[0.75, 0.25]], rtol=1e-6
    )  # medians of (0, .7, .8, .9) and (.1, .2, .3, 1)
    assert out[0].argmax() == 0  # the mean (0.6, 0.4) would still say 0, but with 2 liars:
    two = np.concatenate([HONEST_AND_LIAR, HONEST_AND_LIAR[3:]])
    assert aggregation.Median()(two, np.ones(5), None).scores[0].argmax() == 0
    assert aggregation.Mean()(two, np.ones(5), None).scores[0].argmax() == 1


def test_trimmed_mean_drops_the_extremes_per_coordinate():
    rule = aggregation.TrimmedMean(fraction=0.25)  # 4 clients: drop 1 low and 1 high
    assert_allclose(rule(HONEST_AND_LIAR, np.ones(4), None).scores, [[0.75, 0.25]], rtol=1e-6)
    none = aggregation.TrimmedMean(fraction=0.0)(HONEST_AND_LIAR, np.ones(4), None).scores
    assert_allclose(none, aggregation.mean(HONEST_AND_LIAR), rtol=1e-6)
    with pytest.raises(ValueError, match="fraction"):
        aggregation.TrimmedMean(fraction=0.5)


def test_robust_rules_are_config_options():
    from tests.conftest import digits_config

    cfg = digits_config("algorithm=dsfl", "algorithm.combine=median")
    assert isinstance(cfg.algorithm.combine_rule, aggregation.Median)
    cfg = digits_config("algorithm=fedmd", "algorithm.combine={name: trimmed_mean, fraction: 0.1}")
    assert cfg.algorithm.combine_rule == aggregation.TrimmedMean(fraction=0.1)


def test_reputation_outweighs_a_persistent_liar_and_forgives_a_one_off():
    rule = aggregation.Reputation(decay=0.5, sharpness=10.0)
    ids = [10, 11, 12, 13]
    honest = np.array([[0.8, 0.2]] * 3)[:, None, :]  # (3, 1, 2)
    liar = np.array([[[0.0, 1.0]]])
    stack = np.concatenate([honest, liar])
    first = rule(stack, np.ones(4), None, client_ids=ids).scores
    weights = rule.weights(ids)
    assert weights[3] < 1e-3 and abs(weights[:3].sum() - 1) < 1e-3  # TV 0.8 from the median
    assert_allclose(first, [[0.8, 0.2]], atol=1e-3)
    # a one-off disagreement of an honest client (13 now behaves) fades round by round
    for _ in range(6):
        rule(np.concatenate([honest, honest[:1]]), np.ones(4), None, client_ids=ids)
    assert rule.weights(ids)[3] > 0.2
    # an unseen client starts from its first distance
    rule(stack[:3], np.ones(3), None, client_ids=[10, 11, 20])
    assert set(rule._records) == {10, 11, 12, 13, 20}
    with pytest.raises(ValueError, match="decay"):
        aggregation.Reputation(decay=1.0)


def test_cap_shares_water_fills_and_leaves_honest_proportions():
    assert_allclose(
        aggregation.cap_shares(np.array([1000.0, 1, 1, 2]), 0.4), [0.4, 0.15, 0.15, 0.3]
    )
    assert_allclose(aggregation.cap_shares(np.array([3.0, 1.0]), 1.0), [0.75, 0.25])
    assert_allclose(aggregation.cap_shares(np.array([9.0, 1.0, 0.0]), 0.2), [1 / 3] * 3)  # < 1/C
    per_class = aggregation.cap_shares(np.array([[1e6, 10.0], [10.0, 0.0], [10.0, 30.0]]), 0.5)
    assert_allclose(per_class, [[0.5, 0.5], [0.25, 0.0], [0.25, 0.5]])  # class 1: 0.75 -> 0.5


def test_inflated_counts_buy_at_most_the_cap():
    probs = np.array([[[0.0, 1.0]], [[1.0, 0.0]], [[1.0, 0.0]]])  # client 0 lies about class 0
    counts = np.array([[10**6, 10**6], [50, 50], [50, 50]], dtype=float)
    blind = aggregation.ClassWeighted()(probs, counts.sum(1), counts).scores
    capped = aggregation.ClassWeighted(max_share=0.34)(probs, counts.sum(1), counts).scores
    assert blind[0].argmax() == 1 and capped[0].argmax() == 0
    with pytest.raises(ValueError, match="max_share"):
        aggregation.WeightedMean(max_share=0.0)


def test_bound_logit_scale_caps_each_row_at_the_median_scale():
    from fedkd.aggregation import bound_logit_scale

    honest = np.array([[2.0, 0.0, -2.0]])  # std sqrt(8/3)
    stack = np.stack([honest, honest + 5.0, honest * 0.5, -1e6 * honest])  # (4, 1, 3)
    out = bound_logit_scale(stack)
    np.testing.assert_allclose(out.mean(axis=2), 0.0, atol=1e-4)  # centred
    np.testing.assert_allclose(out[0], honest, rtol=1e-6)  # a typical row is kept
    np.testing.assert_allclose(out[1], honest, rtol=1e-6)  # a shift is only a shift
    np.testing.assert_allclose(out[2], 0.5 * honest, rtol=1e-6)  # smaller rows stay small
    np.testing.assert_allclose(out[3], -honest, rtol=1e-5)  # the huge one: typical size
    assert out.mean(axis=0)[0].argmax() == 0  # the liar no longer owns the mean's argmax


def test_reputation_reports_each_clients_share():
    from fedkd.aggregation import Reputation

    rule = Reputation()
    honest = np.array([[0.9, 0.1]])
    stack = np.stack([honest, honest, honest, np.array([[0.0, 1.0]])])
    for _ in range(3):
        combined = rule(stack, np.ones(4), None, client_ids=[0, 1, 2, 3])
    assert combined.client_weight is not None
    np.testing.assert_allclose(combined.client_weight.sum(), 1.0)
    assert combined.client_weight[3] < 0.1 * 0.25 < combined.client_weight[0]


def test_class_weighted_reputation_weighs_classes_by_counts_and_liars_by_history():
    from fedkd.aggregation import ClassWeighted, ClassWeightedReputation

    # client 0 holds only class 0, client 1 only class 1, client 2 both; client 3 lies
    counts = np.array([[10, 0], [0, 10], [5, 5], [10, 10]], dtype=float)
    honest = np.array([[0.8, 0.2]])
    stack = np.stack([honest, honest, honest, np.array([[0.0, 1.0]])])
    rule = ClassWeightedReputation()
    first = rule(stack, counts.sum(1), counts, client_ids=[0, 1, 2, 3])
    # one round: the liar's record is its distance alone; it already weighs least
    assert first.client_weight.argmin() == 3
    for _ in range(5):
        later = rule(stack, counts.sum(1), counts, client_ids=[0, 1, 2, 3])
    np.testing.assert_allclose(later.scores, [[0.8, 0.2]], atol=1e-3)  # the liar is gone
    # without a liar it is class weighting exactly
    clean = np.stack([honest, np.array([[0.6, 0.4]]), honest])
    fresh = ClassWeightedReputation(sharpness=0.0)
    np.testing.assert_allclose(
        fresh(clean, counts[:3].sum(1), counts[:3], client_ids=[0, 1, 2]).scores,
        ClassWeighted()(clean, counts[:3].sum(1), counts[:3]).scores,
        rtol=1e-6,
    )


def test_clip_counts_bounds_inflated_totals_by_the_median():
    from fedkd.aggregation import clip_counts

    counts = np.array([[10, 0], [5, 5], [0, 20], [4000, 6000]], dtype=float)
    out = clip_counts(counts, ratio=3.0)
    np.testing.assert_allclose(out[:3], counts[:3])  # totals 10, 10, 20: within 3 x median 15
    np.testing.assert_allclose(out[3], [18, 27])  # 45 = 3 x 15, proportions kept


def test_sample_confidence_redistributes_a_clients_say_to_where_it_is_surer():
    # client 0: sure on sample 0, uniform on sample 1; client 1: sure on both (a sharpened liar)
    stack = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [1.0, 0.0]]])
    conf = aggregation.sample_confidence(stack, power=1.0)
    assert conf.shape == (2, 2)
    assert_allclose(conf.mean(axis=1), [1.0, 1.0])  # nobody's total say grows
    assert conf[0, 0] > 1.9 and conf[0, 1] < 1e-3  # client 0 speaks where it is sure
    assert_allclose(conf[1], [1.0, 1.0])  # confident everywhere: no louder than without
    assert_allclose(aggregation.sample_confidence(stack, power=0.0), np.ones((2, 2)))
    with pytest.raises(ValueError, match="power"):
        aggregation.sample_confidence(stack, power=-1.0)


def test_sample_confidence_reads_logits_through_their_softmax():
    logits = np.array([[[5.0, -5.0], [0.0, 0.0]]])
    probs = aggregation.softmax(logits)
    assert_allclose(
        aggregation.sample_confidence(logits, 2.0), aggregation.sample_confidence(probs, 2.0)
    )


def test_class_weighted_mean_with_sample_weights_follows_the_surer_client():
    stack = np.array([[[0.9, 0.1], [0.5, 0.5]], [[0.5, 0.5], [0.1, 0.9]]])
    counts = np.ones((2, 2))
    plain, totals = aggregation.class_weighted_mean(stack, counts)
    ones, same_totals = aggregation.class_weighted_mean(stack, counts, np.ones((2, 2)))
    assert_allclose(ones, plain)
    assert_allclose(same_totals, totals)
    conf = aggregation.sample_confidence(stack, power=1.0)
    weighted, _ = aggregation.class_weighted_mean(stack, counts, conf)
    assert weighted[0, 0] > plain[0, 0] and weighted[1, 1] > plain[1, 1]
    with pytest.raises(ValueError, match="sample_weights"):
        aggregation.class_weighted_mean(stack, counts, np.full((2, 2), -1.0))


def test_confidence_is_an_option_of_the_class_weighted_rules():
    from fedkd.config import ConfigError
    from tests.conftest import digits_config

    stack = np.array([[[0.9, 0.1], [0.5, 0.5]], [[0.5, 0.5], [0.1, 0.9]]])
    counts = np.ones((2, 2))
    for rule in ("class_weighted", "class_weighted_reputation"):
        cfg = digits_config("algorithm=dsfl", f"algorithm.combine={{name: {rule}, confidence: 1}}")
        combined = cfg.algorithm.combine_rule(stack, np.ones(2), counts)
        plain = aggregation.COMBINE_RULES[rule]()(stack, np.ones(2), counts)
        assert combined.scores[0, 0] > plain.scores[0, 0]
        with pytest.raises(ConfigError, match="confidence"):
            digits_config("algorithm=dsfl", f"algorithm.combine={{name: {rule}, confidence: -1}}")
