"""Each attack changes what the client sends -- into a well-formed lie -- and nothing else."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from fedkd import attacks
from fedkd.attacks import AttackContext, attackers, lie
from fedkd.validation import check_soft_labels

HONEST = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])  # two samples, three classes
TEACHER = np.array([[0.5, 0.45, 0.05], [0.2, 0.1, 0.7]])  # the honest mean an attacker knows


def _ctx(teacher=None):
    return AttackContext(HONEST, teacher, np.random.default_rng(0))


def test_the_attacks_on_hand_built_inputs():
    assert_allclose(attacks.WrongClass()(_ctx()), [[0, 1, 0], [1, 0, 0]])
    assert_allclose(attacks.LabelSwap(0, 2)(_ctx()), [[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    assert_allclose(attacks.Collude(target=1)(_ctx()), [[0, 1, 0], [0, 1, 0]])
    # least likely under the honest mean: the teacher where the attacker has it, else its own
    assert_allclose(attacks.LeastLikely()(_ctx(TEACHER)), [[0, 0, 1], [0, 1, 0]])
    assert_allclose(attacks.LeastLikely()(_ctx()), [[0, 0, 1], [1, 0, 0]])
    prior = attacks.ClassPrior(target=2, boost=10.0)(_ctx(TEACHER))
    assert_allclose(prior[0], np.array([0.5, 0.45, 0.5]) / 1.45)
    sharp = attacks.Sharpened(temperature=0.5)(_ctx())
    assert (sharp.argmax(1) == [1, 0]).all() and sharp.max(1).min() > 0.6  # shifted, confident
    rows = attacks.RandomProbs()(_ctx())
    assert rows.shape == (2, 3) and not np.allclose(rows, HONEST)


@pytest.mark.parametrize("name", sorted(attacks.ATTACKS))
@pytest.mark.parametrize("kind", ["probs", "logits"])
def test_every_lie_is_well_formed_and_of_the_right_kind(name, kind):
    shared = HONEST if kind == "probs" else np.log(HONEST) + 3.0  # logits: any shift
    out, _ = lie(attacks.ATTACKS[name](), shared.astype(np.float16), kind, np.arange(2), None,
                 None, np.random.default_rng(1))  # fmt: skip
    check_soft_labels(out, 2, 3, kind)  # passes validation: only a robust rule can out-vote it
    assert out.dtype == np.float16


def test_the_teacher_is_used_only_where_it_covers_the_round():
    probs = HONEST.astype(np.float16)
    rng = np.random.default_rng(0)
    covered, _ = lie(attacks.LeastLikely(), probs, "probs", np.array([4, 7]), np.array([7, 9, 4]),
                  np.array([[0.2, 0.1, 0.7], [1, 0, 0], [0.5, 0.45, 0.05]]), rng)  # fmt: skip
    assert_allclose(covered, [[0, 0, 1], [0, 1, 0]])
    partial, _ = lie(attacks.LeastLikely(), probs, "probs", np.array([4, 8]), np.array([4]),
                  np.array([[0.5, 0.45, 0.05]]), rng)  # fmt: skip
    assert_allclose(partial, [[0, 0, 1], [1, 0, 0]])  # fell back to its own predictions


def test_attackers_are_seeded_or_explicit():
    chosen = attackers(20, 0.3, None, seed=0)
    assert len(chosen) == 6 and chosen == attackers(20, 0.3, None, seed=0)
    assert chosen != attackers(20, 0.3, None, seed=1)
    assert attackers(20, None, [3, 5], seed=0) == {3, 5}


def test_replay_sends_each_samples_first_answer_forever():
    rng = np.random.default_rng(0)
    first = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float16)
    sent, memory = lie(attacks.Replay(), first, "probs", np.array([3, 5]), None, None, rng)
    assert_allclose(sent, first, atol=1e-3)  # round 1: its honest answer
    later = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float16)
    # sample 5 was asked before (its round-1 row comes back), sample 8 is new (honest)
    sent, memory = lie(attacks.Replay(), later, "probs", np.array([5, 8]), None, None, rng, memory)
    assert_allclose(sent, [[0.1, 0.3, 0.6], [0.0, 0.0, 1.0]], atol=1e-3)
    assert sorted(memory["indices"].tolist()) == [3, 5, 8]
    # logits in, logits out: the replayed row is the same distribution
    logits, _ = lie(attacks.Replay(), np.log(later + 0.01), "logits", np.array([3, 8]), None,
                    None, rng, memory)  # fmt: skip
    assert_allclose(np.exp(logits[0]) / np.exp(logits[0]).sum(), [0.7, 0.2, 0.1], atol=1e-2)


def test_attacks_that_do_not_remember_keep_no_memory():
    _, memory = lie(attacks.WrongClass(), HONEST.astype(np.float16), "probs", np.arange(2), None,
                    None, np.random.default_rng(0))  # fmt: skip
    assert memory == {}
