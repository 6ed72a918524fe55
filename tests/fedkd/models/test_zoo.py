"""Tests for the model zoo: shapes, gradients, (de)serialisation, seeding, learning."""

import itertools
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedkd.models import ARCHITECTURES, build_model, count_parameters

NAMES = sorted(ARCHITECTURES)
# Fashion-MNIST, sklearn digits, and an odd non-square RGB shape that exercises ceil-mode sizes.
INPUT_SHAPES = [(1, 28, 28), (1, 8, 8), (3, 10, 13)]
NUM_CLASSES = 10
BATCH = 5


@pytest.fixture(autouse=True)
def _restore_rng() -> Iterator[None]:
    # Tests seed the global torch RNG; leave it as found so test order cannot matter elsewhere.
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


def _seeded_model(name: str, input_shape: tuple[int, int, int], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, input_shape, NUM_CLASSES)


def _images(input_shape: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, *input_shape, generator=generator)  # (N, C, H, W)


@pytest.mark.parametrize("input_shape", INPUT_SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_output_is_logits_of_shape_n_by_k(name: str, input_shape: tuple[int, int, int]) -> None:
    model = _seeded_model(name, input_shape, seed=0)
    for train in (True, False):
        model.train(train)
        logits = model(_images(input_shape))
        assert logits.shape == (BATCH, NUM_CLASSES)
        assert logits.dtype == torch.float32
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("input_shape", INPUT_SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name: str, input_shape: tuple[int, int, int]) -> None:
    model = _seeded_model(name, input_shape, seed=0).train()
    labels = torch.arange(BATCH) % NUM_CLASSES
    F.cross_entropy(model(_images(input_shape)), labels).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        # Non-zero somewhere: catches parameters that are registered but unused in forward().
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("input_shape", INPUT_SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_reproduces_outputs(
    name: str, input_shape: tuple[int, int, int]
) -> None:
    source = _seeded_model(name, input_shape, seed=0).eval()
    target = _seeded_model(name, input_shape, seed=1).eval()
    images = _images(input_shape)
    with torch.no_grad():
        assert not torch.equal(source(images), target(images))  # else the test proves nothing
        target.load_state_dict(source.state_dict())
        torch.testing.assert_close(target(images), source(images), rtol=0.0, atol=0.0)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_initialisation(name: str) -> None:
    first = _seeded_model(name, (1, 28, 28), seed=123).state_dict()
    second = _seeded_model(name, (1, 28, 28), seed=123).state_dict()
    other = _seeded_model(name, (1, 28, 28), seed=124).state_dict()
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0.0, atol=0.0)
    assert any(not torch.equal(first[key], other[key]) for key in first)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_training_step(name: str) -> None:
    def one_step(seed: int) -> dict[str, torch.Tensor]:
        model = _seeded_model(name, (1, 28, 28), seed=seed).train()  # dropout draws from the seed
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        labels = torch.arange(BATCH) % NUM_CLASSES
        F.cross_entropy(model(_images((1, 28, 28))), labels).backward()
        optimizer.step()
        return model.state_dict()

    first, second = one_step(seed=7), one_step(seed=7)
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0.0, atol=0.0)


@pytest.mark.parametrize("input_shape", INPUT_SHAPES)
def test_architectures_have_pairwise_distinct_parameter_counts(
    input_shape: tuple[int, int, int],
) -> None:
    counts = {name: count_parameters(build_model(name, input_shape, NUM_CLASSES)) for name in NAMES}
    for a, b in itertools.combinations(NAMES, 2):
        assert counts[a] != counts[b], (a, b, counts)


def test_count_parameters_on_hand_computed_sizes() -> None:
    assert count_parameters(nn.Linear(3, 2)) == 3 * 2 + 2
    # mlp on Fashion-MNIST: 784 -> 256 -> 128 -> 10, weights plus biases.
    expected = (784 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10)
    assert count_parameters(build_model("mlp", (1, 28, 28), 10)) == expected


def test_unknown_name_raises_and_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="'vgg'") as excinfo:
        build_model("vgg", (1, 28, 28), 10)
    for name in NAMES:
        assert name in str(excinfo.value)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("input_shape", "num_classes"), [((1, 0, 28), 10), ((28, 28), 10), ((1, 8, 8), 0)]
)
def test_invalid_dimensions_raise(
    name: str, input_shape: tuple[int, int, int], num_classes: int
) -> None:
    with pytest.raises(ValueError, match=r"input_shape|num_classes"):
        build_model(name, input_shape, num_classes)


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        ARCHITECTURES["mlp"] = ARCHITECTURES["cnn"]  # type: ignore[index]


def _quadrant_task(num_images: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images whose class (0..3) is the one bright 4x4 quadrant, plus Gaussian noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (num_images,), generator=generator)  # (N,)
    images = 0.3 * torch.randn(num_images, 1, 8, 8, generator=generator)  # (N, 1, 8, 8)
    for quadrant in range(4):
        rows = slice(4 * (quadrant // 2), 4 * (quadrant // 2) + 4)
        cols = slice(4 * (quadrant % 2), 4 * (quadrant % 2) + 4)
        images[labels == quadrant, :, rows, cols] += 1.0
    return images, labels


def test_cnn_learns_a_separable_toy_task() -> None:
    images, labels = _quadrant_task(num_images=256, seed=0)
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), num_classes=4).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = torch.randperm(256, generator=torch.Generator().manual_seed(1)).view(-1, 32)
    for step in range(100):
        batch = batches[step % len(batches)]  # (32,)
        optimizer.zero_grad()
        F.cross_entropy(model(images[batch]), labels[batch]).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model.eval()(images).argmax(dim=1) == labels).float().mean().item()
    assert accuracy > 0.9  # chance is 0.25
