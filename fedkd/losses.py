"""Distillation losses: pure functions of tensors.

Naming: ``*_logits`` are pre-softmax scores, ``*_probs`` are probabilities.
"""

import torch
import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_probs: Tensor, temperature: float) -> Tensor:
    """Temperature-scaled distillation loss (Hinton, Vinyals & Dean, 2015, arXiv:1503.02531).

    ``T**2 * KL(teacher_probs || softmax(student_logits / T))``, averaged over the batch.
    The ``T**2`` factor keeps gradient magnitudes comparable across temperatures. The teacher's
    probabilities are taken as given: whoever built them already applied their own temperature
    (e.g. ``softmax(teacher_logits / T)``, or DS-FL's sharpened ERA consensus).

    Parameters
    ----------
    student_logits : Tensor, shape (N, K)
    teacher_probs : Tensor, shape (N, K), rows summing to 1
    temperature : float, > 0

    Returns
    -------
    Tensor
        Scalar loss.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_student = F.log_softmax(student_logits / temperature, dim=-1)  # (N, K)
    # kl_div(input=log q, target=p) = sum p * (log p - log q); xlogy makes 0 * log 0 = 0.
    teacher = teacher_probs.to(log_student.dtype)
    kl = (torch.xlogy(teacher, teacher) - teacher * log_student).sum(dim=-1)  # (N,)
    return temperature**2 * kl.mean()


def distillation_loss(
    student_logits: Tensor,
    teacher_probs: Tensor,
    labels: Tensor | None,
    temperature: float,
    kd_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Mix of distillation and cross-entropy: ``kd_weight * KD + (1 - kd_weight) * CE``.

    Parameters
    ----------
    student_logits : Tensor, shape (N, K)
    teacher_probs : Tensor, shape (N, K)
    labels : Tensor of int64, shape (N,), or None
        Hard labels; without them the loss is pure distillation (``kd_weight`` is ignored).
    temperature : float
    kd_weight : float in [0, 1]

    Returns
    -------
    dict[str, Tensor]
        ``{"kd": ..., "ce": ..., "total": ...}`` (``ce`` is 0 without labels).
    """
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"kd_weight must be in [0, 1], got {kd_weight}")
    kd = kd_loss(student_logits, teacher_probs, temperature)
    if labels is None:
        return {"kd": kd, "ce": torch.zeros_like(kd), "total": kd}
    ce = F.cross_entropy(student_logits, labels)
    return {"kd": kd, "ce": ce, "total": kd_weight * kd + (1.0 - kd_weight) * ce}
