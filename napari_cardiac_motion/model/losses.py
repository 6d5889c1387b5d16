"""Losses of the joint model (weakly supervised segmentation, unsupervised motion, joint label warping).

Axis orders: images ``(B, 1, H, W)``, flows ``(B, 2, H, W)`` (dy, dx) in pixels, logits
``(B, C, H, W)``, integer labels ``(B, H, W)`` (int64) with ``ignore_index`` marking unlabelled voxels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..conventions import NUM_CLASSES, UNLABELLED
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


# --------------------------------------------------------------------------------------------------
# partial labels (training data whose voxels are only partly known)

#: label code: background *or* RV (outside an epicardial contour of a set without RV contours)
NOT_LV_MYO = 10
#: label code: background, myocardium or RV (outside an endocardial contour, myocardium not drawn)
NOT_LV = 11


def allowed_table(device: torch.device, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """``(256, C)`` table: row ``code`` is 1 for the classes a voxel with that label code may be
    (exact codes one class; ``NOT_LV_MYO``/``NOT_LV`` several; ``IGNORE_INDEX`` none)."""
    t = torch.zeros(256, num_classes, device=device)
    for c in range(num_classes):
        t[c, c] = 1
    t[NOT_LV_MYO] = torch.tensor([1.0, 0, 0, 1], device=device)
    t[NOT_LV] = torch.tensor([1.0, 0, 1, 1], device=device)
    return t  # IGNORE_INDEX row stays all zero


def partial_nll_logits(logits: torch.Tensor, codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Mean ``-log Σ_{c allowed by code} softmax(logits)_c`` over voxels with a known code
    (``logits (N, C, H, W)``, ``codes (N, H, W)`` int64)."""
    allowed = table[codes].permute(0, 3, 1, 2)  # (N, C, H, W)
    valid = allowed.sum(1) > 0
    if not bool(valid.any()):
        return logits.sum() * 0.0
    logp = F.log_softmax(logits.float(), 1)
    allowed = torch.where(valid.unsqueeze(1), allowed, torch.ones_like(allowed))
    ll = torch.logsumexp(logp.masked_fill(allowed == 0, -1e4), 1)
    return -(ll[valid]).mean()


def partial_nll_probs(probs: torch.Tensor, codes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """:func:`partial_nll_logits` for probabilities (e.g. warped one-hot labels)."""
    allowed = table[codes].permute(0, 3, 1, 2)
    valid = allowed.sum(1) > 0
    if not bool(valid.any()):
        return probs.sum() * 0.0
    p = (probs.float() * allowed).sum(1).clamp_min(1e-6)
    return -torch.log(p[valid]).mean()


def exact_labels(codes: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Codes → labels with partial codes set to ``IGNORE_INDEX`` (for Dice)."""
    return torch.where(codes < num_classes, codes, torch.full_like(codes, IGNORE_INDEX))


def source_onehot(codes: torch.Tensor, num_classes: int = NUM_CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot ``(B, C, H, W)`` of a source frame's codes (partial codes → background) and a per-sample
    flag: the frame is labelled at all."""
    lab = codes.clone()
    lab[(lab == NOT_LV_MYO) | (lab == NOT_LV)] = 0
    labelled = (lab != IGNORE_INDEX).flatten(1).any(1)
    lab[lab == IGNORE_INDEX] = 0
    return F.one_hot(lab, num_classes).permute(0, 3, 1, 2).float(), labelled


def temporal_roughness(flows: torch.Tensor, closed: bool) -> torch.Tensor:
    """Mean squared second difference in time ``|u_{t−1} − 2 u_t + u_{t+1}|²`` of flows
    ``(B, T, 2, H, W)`` (pixels) sampled at equal steps in cycle order from ED (frame 0). ``closed``:
    the frame after the last is ED again (the sequence covers a whole cycle), with ``u = 0`` there."""
    seq = flows
    if closed:
        seq = torch.cat([seq, torch.zeros_like(seq[:, :1])], 1)
    if seq.shape[1] < 3:
        return flows.sum() * 0.0
    return (seq[:, 2:] - 2 * seq[:, 1:-1] + seq[:, :-2]).pow(2).mean()


def carried_consistency(seg_logits: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """Soft Dice disagreement between every later frame's segmentation and the source frame's (frame 0)
    segmentation carried there by that frame's flow: ``1 − Dice(p_0(p + u_t(p)), p_t(p))`` over the
    foreground classes, for logits ``(B, T, C, H, W)`` and flows ``(B, T, 2, H, W)``. Needs no labels: on a
    whole cine it asks the segmentation and the motion to agree on every frame, which is what the carried
    overlap at the end of the cycle measures. Gradients reach both branches."""
    t = seg_logits.shape[1]
    if t < 2:
        return seg_logits.sum() * 0.0
    probs = torch.softmax(seg_logits.float(), 2)
    src = probs[:, :1].expand(-1, t - 1, -1, -1, -1).flatten(0, 1)
    carried = warp(src, flows[:, 1:].flatten(0, 1).float())[:, 1:]
    target = probs[:, 1:].flatten(0, 1)[:, 1:]
    inter = (carried * target).sum((-2, -1))
    denom = carried.sum((-2, -1)) + target.sum((-2, -1))
    return (1.0 - (2.0 * inter + 1.0) / (denom + 1.0)).mean()
