"""The fine-tuning optimisation loop and its settings (no Qt, no napari).

:func:`train_loop` trains a student model in place on region arrays ``(T, Z, H, W)`` (see
:mod:`.finetune` for the losses, the guard against forgetting and the geometry); each step samples
``batch`` short sequences that start at ED and follow the cycle, crops them around the heart and sums
the segmentation, motion, joint, pseudo-label and guard terms.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..conventions import cycle_order
from ..errors import CancelledError, InputError
from ..model.losses import (
    IGNORE_INDEX,
    consistency_kl,
    l2sp_penalty,
    motion_loss,
    one_hot_labels,
    propagated_pseudo_labels,
    segmentation_loss,
    warped_label_loss,
)
from ..model.network import JointMotionSegNet
from ..model.transformer import warp

FinetuneProgress = Callable[[int, int, dict], None]
GUARDS = ("teacher", "l2sp", None)
#: which parameters fine-tuning may change: every one, the segmentation branch after the shared encoder
#: (multi-scale fusion + head), or only the head
PARAM_SETS = ("all", "seg", "head")


@dataclass
class FinetuneSettings:
    """Hyper-parameters (defaults measured with ``benchmarks/finetune_benchmark.py``).

    ``check`` turns the held-out check on (see :mod:`.finetune`); ``holdout_every`` = k holds out
    every k-th corrected slice (k ≥ 2); ``blends`` are the α tried besides the starting model (α = 0).
    """

    steps: int = 16
    lr: float = 1e-4
    guard: str | None = "teacher"
    freeze_bn: bool = True
    jitter: int = 12
    seq_len: int = 4
    batch: int = 1
    motion_weight: float = 10.0
    joint_weight: float = 0.5
    prop_weight: float = 0.0  # 0.3 let a −0.13 ES RV drop through the check (patient071, see README)
    teacher_weight: float = 1.0
    teacher_decay: float = 0.99
    l2sp_weight: float = 1e-2
    check: bool = True
    holdout_every: int = 3
    check_propagated: bool = True
    blends: tuple[float, ...] = (0.5, 0.25)
    check_tolerance: float = 0.005
    seed: int = 0
    params: str = "all"
    seg_dice_weight: float = 1.0
    #: sparse corrections: every corrected frame has fewer than ``sparse_fraction`` of its slices corrected
    #: (an annotator fixing a few bad slices, often basal or apical ones). Their Dice term is unstable and
    #: what they teach does not carry to the other slices, so the loop then uses these instead (measured
    #: with ``benchmarks/finetune_benchmark.py --protocol worst-es``); ``sparse_steps`` None keeps ``steps``
    sparse_fraction: float = 0.5
    sparse_steps: int | None = 32
    sparse_teacher_weight: float = 10.0
    sparse_seg_dice_weight: float = 0.0


def is_sparse(mask: np.ndarray, fraction: float) -> bool:
    """True when every corrected frame of ``mask`` ``(T, Z)`` has fewer than ``fraction`` of its slices corrected."""
    frames = np.nonzero(mask.any(1))[0]
    return bool(len(frames)) and max(float(mask[t].mean()) for t in frames) < fraction


def for_corrections(s: FinetuneSettings, mask: np.ndarray) -> FinetuneSettings:
    """``s`` as the loop uses it for the corrected pairs ``mask`` ``(T, Z)``: with sparse corrections
    (:func:`is_sparse`) the ``sparse_*`` values replace steps, teacher weight and Dice weight."""
    if not is_sparse(mask, s.sparse_fraction):
        return s
    return replace(s, steps=s.sparse_steps or s.steps, teacher_weight=s.sparse_teacher_weight,
                   seg_dice_weight=s.sparse_seg_dice_weight)


def trainable_parameters(model: JointMotionSegNet, which: str) -> list[nn.Parameter]:
    """The parameters of ``which`` (:data:`PARAM_SETS`); every other parameter of ``model`` stops
    taking gradients (the shared encoder and the motion branch stay as they were with "seg"/"head")."""
    if which not in PARAM_SETS:
        raise ValueError(f"params must be one of {PARAM_SETS}, got {which!r}")
    if which == "all":
        return list(model.parameters())
    mods = [model.seg_fuse, model.seg_head] if which == "seg" else [model.seg_head]
    keep = {id(p) for m in mods for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return [p for p in model.parameters() if id(p) in keep]


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm layer of ``model`` in eval mode (running statistics frozen)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@dataclass
class LoopInputs:
    """What the loop samples from: ``image`` float32 and ``corr`` uint8 ``(T, Z, H, W)`` region arrays
    (255 = unlabelled), ``mask`` ``(T, Z)`` bool (the corrected pairs it may learn from), the ED frame
    and the crop size ``(h, w)`` in model pixels; ``closed_cycle`` False for a clip that is not a whole cycle (an
    echo half cycle): its frames are visited by distance from ED instead of wrapping round."""

    image: np.ndarray
    corr: np.ndarray
    mask: np.ndarray
    ed: int
    crop: tuple[int, int]
    closed_cycle: bool = True

    def __post_init__(self) -> None:
        n_t = self.image.shape[0]
        self.order = (cycle_order(n_t, self.ed) if self.closed_cycle  # ED first
                      else sorted(range(n_t), key=lambda f: (abs(f - self.ed), f)))
        self.corrected_slices = sorted({int(z) for z in np.nonzero(self.mask)[1]})


def sample_sequence(rng: np.random.Generator, d: LoopInputs, seq_len: int) -> tuple[int, list[int]]:
    """A slice (half the time a corrected one) and a sequence of frames starting at ED."""
    n_z = d.image.shape[1]
    if rng.random() < 0.5 or len(d.corrected_slices) == n_z:
        z = int(rng.choice(d.corrected_slices))
    else:
        z = int(rng.integers(n_z))
    rest = d.order[1:]
    if len(rest) <= seq_len - 1:
        pos = list(range(len(rest)))
    else:
        must = [i for i, f in enumerate(rest) if d.mask[f, z]]
        must = list(rng.permutation(must)[: max(0, seq_len - 2)]) if must else []
        others = [i for i in range(len(rest)) if i not in must]
        pos = sorted(must + list(rng.choice(others, seq_len - 1 - len(must), replace=False)))
    return z, [d.ed] + [rest[i] for i in pos]


def crop_box(rng: np.random.Generator, d: LoopInputs) -> tuple[slice, slice]:
    """A random ``(rows, columns)`` crop of size ``d.crop`` inside the region."""
    (h, w), (ch, cw) = d.image.shape[-2:], d.crop
    yy = int(rng.integers(0, h - ch + 1)) if h > ch else 0
    xx = int(rng.integers(0, w - cw + 1)) if w > cw else 0
    return slice(yy, yy + ch), slice(xx, xx + cw)


def make_batch(rng: np.random.Generator, gen: torch.Generator, d: LoopInputs, s: FinetuneSettings,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step's ``(x (B, L, H, W) float, y (B, L, H, W) int64 with IGNORE_INDEX, labelled (B, L) bool)``."""
    seqs = [sample_sequence(rng, d, s.seq_len) for _ in range(s.batch)]
    length = min(len(f) for _, f in seqs)  # all sequences of a batch share the length
    seqs = [(z, f[:length]) for z, f in seqs]
    by, bx = crop_box(rng, d)
    imgs = np.stack([d.image[f, z][:, by, bx] for z, f in seqs])  # (B, L, H, W)
    labs = np.stack([d.corr[f, z][:, by, bx] for z, f in seqs])  # (B, L, H, W), 255 = unlabelled
    lab_mask = np.stack([d.mask[f, z] for z, f in seqs])  # (B, L)
    scale = 1.0 + 0.1 * (torch.rand(len(seqs), 1, 1, 1, generator=gen) * 2 - 1)
    x = (torch.from_numpy(imgs) * scale).to(device)  # (B, L, H, W)
    y = torch.from_numpy(labs.astype(np.int64)).to(device)
    y[~torch.from_numpy(lab_mask).to(device)] = IGNORE_INDEX  # held-out pairs carry no label
    lm = torch.from_numpy(lab_mask).to(device)
    return x, y, lm


def joint_terms(seg: torch.Tensor, flows: torch.Tensor, y: torch.Tensor, lm: torch.Tensor,
                s: FinetuneSettings, num_classes: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The joint losses (labels carried through the motion) and the pseudo-label losses of one batch."""
    joint, prop = [], []
    ed_lab = lm[:, 0]
    for k in range(1, y.shape[1]):
        fk = flows[:, k]
        tgt_lab = lm[:, k]
        both = ed_lab & tgt_lab
        if bool(both.any()):  # corrected ED warped onto a corrected frame: trains the motion
            src_p = one_hot_labels(y[both, 0], num_classes)
            tgt = y[both, k].clone()
            with torch.no_grad():  # voxels whose ED source is unlabelled carry no target
                src_valid = (y[both, 0] != IGNORE_INDEX).float().unsqueeze(1)
                tgt[warp(src_valid, fk[both].detach())[:, 0] < 0.5] = IGNORE_INDEX
            joint.append(warped_label_loss(src_p, fk[both], tgt))
        only_t = (~ed_lab) & tgt_lab
        if bool(only_t.any()):  # predicted ED warped onto a corrected frame
            joint.append(warped_label_loss(torch.softmax(seg[only_t, 0], 1), fk[only_t], y[only_t, k]))
        only_ed = ed_lab & (~tgt_lab)
        if bool(only_ed.any()) and s.prop_weight > 0:  # pseudo-labels for uncorrected frames
            pseudo = propagated_pseudo_labels(y[only_ed, 0], fk[only_ed], num_classes)
            prop.append(segmentation_loss(seg[only_ed, k], pseudo))
    return joint, prop


def loss_terms(student: JointMotionSegNet, teacher: JointMotionSegNet | None, start_params: list | None,
               x: torch.Tensor, y: torch.Tensor, lm: torch.Tensor, s: FinetuneSettings) -> dict[str, torch.Tensor]:
    """The weighted loss terms of one batch by name (seg, motion, joint, prop, teacher, l2sp)."""
    seg, flows = student.forward_sequence(x)  # source = frame 0 = ED
    b, length = x.shape[:2]
    terms: dict[str, torch.Tensor] = {}
    if bool(lm.any()):
        terms["seg"] = segmentation_loss(seg[lm], y[lm], dice_weight=s.seg_dice_weight)
    if s.params == "all":  # otherwise the motion branch is frozen: its own loss would change nothing
        src = x[:, :1].expand(-1, length, -1, -1).reshape(b * length, 1, *x.shape[-2:])
        terms["motion"] = s.motion_weight * motion_loss(src, x.reshape(b * length, 1, *x.shape[-2:]),
                                                        flows.flatten(0, 1))
    joint, prop = joint_terms(seg, flows, y, lm, s, student.config.num_classes)
    if joint:
        terms["joint"] = s.joint_weight * torch.stack(joint).mean()
    if prop:
        terms["prop"] = s.prop_weight * torch.stack(prop).mean()
    if teacher is not None and bool((~lm).any()):
        with torch.no_grad():
            t_logits = teacher.segment(x[~lm].unsqueeze(1))
        terms["teacher"] = s.teacher_weight * consistency_kl(seg[~lm], t_logits)
    if start_params is not None:
        terms["l2sp"] = s.l2sp_weight * l2sp_penalty(student.parameters(), start_params)
    return terms


def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """Mean teacher: parameters ← decay·teacher + (1 − decay)·student; buffers copied."""
    with torch.no_grad():
        for pt, ps in zip(teacher.parameters(), student.parameters()):
            pt.mul_(decay).add_(ps.detach(), alpha=1 - decay)
        for bt, bs in zip(teacher.buffers(), student.buffers()):
            bt.copy_(bs)


def train_loop(student: JointMotionSegNet, image: np.ndarray, corr: np.ndarray, mask: np.ndarray, ed: int,
               crop: tuple[int, int], s: FinetuneSettings, device: torch.device, report: FinetuneProgress,
               cancel: Callable[[], bool] | None, closed_cycle: bool = True) -> list[dict]:
    """The optimisation loop on ``image``/``corr`` (T, Z, H, W) region arrays; ``mask`` (T, Z) marks the
    corrected pairs it may learn from (``closed_cycle``: see :class:`LoopInputs`). Trains ``student`` in place;
    returns the losses per step."""
    d = LoopInputs(image, corr, mask, ed, crop, closed_cycle)
    rng = np.random.default_rng(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    teacher = None
    if s.guard == "teacher":
        teacher = copy.deepcopy(student).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    start_params = [p.detach().clone() for p in student.parameters()] if s.guard == "l2sp" else None
    opt = torch.optim.Adam(trainable_parameters(student, s.params), lr=s.lr)
    losses: list[dict] = []
    for step in range(1, s.steps + 1):
        if cancel is not None and cancel():
            raise CancelledError(f"Fine-tuning cancelled at step {step - 1}/{s.steps}; the previous model is kept.")
        student.train()
        if s.freeze_bn:
            freeze_batchnorm(student)
        x, y, lm = make_batch(rng, gen, d, s, device)
        terms = loss_terms(student, teacher, start_params, x, y, lm, s)
        total = sum(terms.values(), torch.zeros((), device=x.device))
        opt.zero_grad(set_to_none=True)
        if total.requires_grad:  # a batch with nothing to learn (no label, no regulariser) is skipped
            total.backward()
            opt.step()
        if teacher is not None:
            ema_update(teacher, student, s.teacher_decay)
        rec = {k: float(v.detach()) for k, v in terms.items()}
        rec["total"] = float(total.detach())
        if not math.isfinite(rec["total"]):
            raise InputError("Fine-tuning diverged (non-finite loss); try a smaller learning rate.")
        losses.append(rec)
        report(step, s.steps, rec)
    student.eval()
    return losses
