import math

import pytest
import torch
from torch.testing import assert_close

from fedkd.losses import distillation_loss, kd_loss


def test_kd_loss_hand_computed_value():
    # student logits (0, ln 3) -> softmax (1/4, 3/4); teacher (1/2, 1/2); T = 1.
    student = torch.tensor([[0.0, math.log(3.0)]])
    teacher = torch.tensor([[0.5, 0.5]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert_close(kd_loss(student, teacher, 1.0), torch.tensor(expected))


def test_kd_loss_temperature_scaling_includes_t_squared():
    # With T = 2 the student distribution is softmax((0, ln 9) / 2) = (1/4, 3/4) again,
    # so the KL is the same as above and the loss is T^2 = 4 times it.
    student = torch.tensor([[0.0, math.log(9.0)]])
    teacher = torch.tensor([[0.5, 0.5]])
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert_close(kd_loss(student, teacher, 2.0), torch.tensor(4.0 * kl))


def test_kd_loss_is_zero_when_student_matches_and_handles_zero_probs():
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    student = torch.log(teacher.clamp_min(1e-12))
    loss = kd_loss(student, teacher, 1.0)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_averages_over_batch():
    student = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    teacher = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert_close(kd_loss(student, teacher, 1.0), torch.tensor(kl / 2))


def test_kd_loss_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(1, 2), torch.full((1, 2), 0.5), 0.0)


def test_distillation_loss_mixes_kd_and_ce():
    student = torch.tensor([[0.0, math.log(3.0)]])
    teacher = torch.tensor([[0.5, 0.5]])
    labels = torch.tensor([1])
    terms = distillation_loss(student, teacher, labels, temperature=1.0, kd_weight=0.25)
    ce = -math.log(0.75)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert_close(terms["ce"], torch.tensor(ce))
    assert_close(terms["kd"], torch.tensor(kl))
    assert_close(terms["total"], torch.tensor(0.25 * kl + 0.75 * ce))


def test_distillation_loss_without_labels_is_pure_kd_and_differentiable():
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.softmax(torch.randn(4, 3), dim=1)
    terms = distillation_loss(student, teacher, None, temperature=3.0, kd_weight=0.1)
    assert_close(terms["total"], kd_loss(student, teacher, 3.0))
    terms["total"].backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_distillation_loss_rejects_bad_weight():
    with pytest.raises(ValueError, match="kd_weight"):
        distillation_loss(torch.zeros(1, 2), torch.full((1, 2), 0.5), None, 1.0, kd_weight=1.5)
