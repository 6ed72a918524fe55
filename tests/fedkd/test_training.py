"""A small client's local work: enough passes for a minimum of steps, enough teacher samples."""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from fedkd.training import TrainConfig, local_epochs, supervised_loss, train


@given(
    num_examples=st.integers(1, 10_000),
    batch_size=st.integers(1, 512),
    epochs=st.integers(1, 10),
    min_steps=st.integers(0, 500),
)
def test_local_epochs_are_the_fewest_passes_that_give_the_steps(
    num_examples, batch_size, epochs, min_steps
):
    per_epoch = math.ceil(num_examples / batch_size)
    passes = local_epochs(num_examples, batch_size, epochs, min_steps)
    assert passes >= epochs
    assert passes * per_epoch >= min_steps
    if passes > epochs:  # one pass fewer would fall short
        assert (passes - 1) * per_epoch < min_steps


def test_no_local_training_and_no_examples_stay_so():
    assert local_epochs(50, 32, 0, 100) == 0
    assert local_epochs(0, 32, 1, 100) == 1
    assert (local_epochs(50, 32, 1, 20), local_epochs(5000, 32, 1, 20)) == (10, 1)


def test_a_client_with_few_examples_takes_the_minimum_steps():
    """With 40 examples and batches of 32 one epoch is 2 steps; 20 steps fit them."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 4, 4), torch.randint(0, 3, (40,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    steps = []
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    epochs = local_epochs(len(x), 32, 1, 20)
    before = float(supervised_loss(model(x), y)["total"])
    train(model, x, y, supervised_loss, TrainConfig(epochs, 32, 0.05, seed=0), optimizer)
    assert len(steps) == 20
    assert float(supervised_loss(model(x), y)["total"]) < before


def test_a_small_client_gets_at_least_the_minimum_teacher_samples():
    from fedkd.sampling import teacher_subset

    assert len(teacher_subset(2000, 50, seed=3)) == 50  # as many as its private examples
    rows = teacher_subset(2000, 50, seed=3, minimum=500)
    assert len(rows) == len(set(rows)) == 500 and rows.max() < 2000
    assert len(teacher_subset(2000, 900, seed=3, minimum=500)) == 900  # more private: as many
    assert len(teacher_subset(300, 50, seed=3, minimum=500)) == 300  # all there are
