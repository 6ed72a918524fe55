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
    out = lie(attacks.ATTACKS[name](), shared.astype(np.float16), kind, np.arange(2), None, None,
              np.random.default_rng(1))  # fmt: skip
    check_soft_labels(out, 2, 3, kind)  # passes validation: only a robust rule can out-vote it
    assert out.dtype == np.float16


def test_the_teacher_is_used_only_where_it_covers_the_round():
    probs = HONEST.astype(np.float16)
    rng = np.random.default_rng(0)
    covered = lie(attacks.LeastLikely(), probs, "probs", np.array([4, 7]), np.array([7, 9, 4]),
                  np.array([[0.2, 0.1, 0.7], [1, 0, 0], [0.5, 0.45, 0.05]]), rng)  # fmt: skip
    assert_allclose(covered, [[0, 0, 1], [0, 1, 0]])
    partial = lie(attacks.LeastLikely(), probs, "probs", np.array([4, 8]), np.array([4]),
                  np.array([[0.5, 0.45, 0.05]]), rng)  # fmt: skip
    assert_allclose(partial, [[0, 0, 1], [1, 0, 0]])  # fell back to its own predictions


def test_attackers_are_seeded_or_explicit():
    chosen = attackers(20, 0.3, None, seed=0)
    assert len(chosen) == 6 and chosen == attackers(20, 0.3, None, seed=0)
    assert chosen != attackers(20, 0.3, None, seed=1)
    assert attackers(20, None, [3, 5], seed=0) == {3, 5}
