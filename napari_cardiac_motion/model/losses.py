"""Losses of the joint model (weakly supervised segmentation, unsupervised motion, joint label warping).

Axis orders: images ``(B, 1, H, W)``, flows ``(B, 2, H, W)`` (dy, dx) in pixels, logits
``(B, C, H, W)``, integer labels ``(B, H, W)`` (int64) with ``ignore_index`` marking unlabelled voxels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..conventions import UNLABELLED
from .transformer import warp

#: the target value the losses ignore: the unlabelled value of corrections files
IGNORE_INDEX = UNLABELLED


def charbonnier_smoothness(flow: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean Charbonnier penalty ``sqrt(g² + eps²)`` of the flow's spatial finite differences."""
    dy = flow[..., 1:, :] - flow[..., :-1, :]
    dx = flow[..., :, 1:] - flow[..., :, :-1]
    return torch.sqrt(dy**2 + eps**2).mean() + torch.sqrt(dx**2 + eps**2).mean()


def motion_loss(
    source: torch.Tensor, target: torch.Tensor, flow: torch.Tensor, smooth_weight: float = 5e-3
) -> torch.Tensor:
    """Unsupervised motion loss ``MSE(warp(I_ED, u_t), I_t) + λ·smooth(u_t)``."""
    return F.mse_loss(warp(source, flow), target) + smooth_weight * charbonnier_smoothness(flow)


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """1 − mean soft Dice over the foreground classes, ignoring voxels labelled ``ignore_index``."""
    probs = torch.softmax(logits, dim=1)
    return dice_loss_from_probs(probs, labels, ignore_index)


def dice_loss_from_probs(probs: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Soft Dice loss of class probabilities ``(B, C, H, W)`` against integer labels."""
    c = probs.shape[1]
    valid = (labels != ignore_index).unsqueeze(1).to(probs.dtype)
    onehot = F.one_hot(labels.clamp(0, c - 1).long(), c).permute(0, 3, 1, 2).to(probs.dtype) * valid
    p = probs * valid
    dims = (0, 2, 3)
    inter = (p * onehot).sum(dims)
    denom = p.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return 1.0 - dice[1:].mean()


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, dice_weight: float = 1.0, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Cross-entropy + Dice on labelled voxels. Returns 0 (with grad) if nothing is labelled."""
    labels = labels.long()
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits, labels, ignore_index=ignore_index)
    return ce + dice_weight * soft_dice_loss(logits, labels, ignore_index)


def warped_label_loss(
    source_probs: torch.Tensor, flow: torch.Tensor, target_labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Joint loss: warp ED class probabilities ``(B, C, H, W)`` (one-hot labels or softmax
    predictions) by ``u_t`` and score them against frame t's labels (NLL + Dice)."""
    target_labels = target_labels.long()
    if not bool((target_labels != ignore_index).any()):
        return flow.sum() * 0.0
    warped = warp(source_probs, flow).clamp_min(1e-6)
    nll = F.nll_loss(torch.log(warped), target_labels, ignore_index=ignore_index)
    return nll + dice_loss_from_probs(warped, target_labels, ignore_index)


def one_hot_labels(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``(B, H, W)`` int labels → ``(B, C, H, W)`` float one-hot (ignored voxels → all zero)."""
    valid = (labels != ignore_index).unsqueeze(1)
    oh = F.one_hot(labels.clamp(0, num_classes - 1).long(), num_classes).permute(0, 3, 1, 2).float()
    return oh * valid


# -- fine-tuning terms (see training/finetune.py) ---------------------------------------------------

def consistency_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean-teacher consistency: ``KL(p_teacher || p_student)`` of the class probabilities
    ``(B, C, H, W)``, summed over classes, mean over voxels (Wu et al. 2022)."""
    t = teacher_logits.detach()
    p_t = torch.softmax(t, 1)
    return (p_t * (torch.log_softmax(t, 1) - torch.log_softmax(student_logits, 1))).sum(1).mean()


def l2sp_penalty(params, start_params) -> torch.Tensor:
    """L2-SP: ``Σ ||θ − θ₀||²`` over matching parameter tensors (keeps fine-tuning near the start)."""
    return sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start_params))


@torch.no_grad()
def propagated_pseudo_labels(labels: torch.Tensor, flow: torch.Tensor, num_classes: int,
                             ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Labels ``(B, H, W)`` of the source frame carried by ``flow`` ``(B, 2, H, W)`` (nearest neighbour,
    no gradient): ``out(p) = labels(p + flow(p))``; voxels whose source is ``ignore_index`` stay ignored."""
    valid = (labels != ignore_index).float().unsqueeze(1)
    src = torch.cat([one_hot_labels(labels, num_classes, ignore_index), valid], 1)
    warped = warp(src, flow.detach(), mode="nearest")
    out = warped[:, :num_classes].argmax(1)
    out[warped[:, num_classes] < 0.5] = ignore_index
    return out
