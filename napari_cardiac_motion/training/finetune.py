"""Fine-tune the joint model on one cine from the user's corrected slices, safely (no Qt, no napari).

Inputs: the cine ``(T, Z, Y, X)`` and a corrections array of the same shape where a voxel equal to
:data:`~napari_cardiac_motion.conventions.UNLABELLED` (255) is unlabelled; a (frame, slice) that is
not all 255 is a correction (labels 0–3).

A COPY of the model is trained (the caller's model is never modified, so cancelling — which raises
:class:`~napari_cardiac_motion.errors.CancelledError` at the next step — keeps the previous model).

**Held-out check (the guard that makes fine-tuning never hurt on the user's own labels).** Before
training, part of the corrections is set aside: every third corrected slice (whole slices, so the check
is on anatomy the training never saw); with a single corrected slice, every third corrected frame of
it; with a single corrected (frame, slice), its labels carried by the *starting* model's motion to up to
four other frames of that slice (a weaker check: those labels are only as good as that motion).
After training, the starting model and weight-space blends ``θ₀ + α(θ − θ₀)`` of the fine-tuned
weights ``θ`` (``α`` in :attr:`FinetuneSettings.blends`; the raw fine-tuned model is ``α = 1``) are scored
on the held-out labels (Dice per structure, only on labelled voxels) and on those labels carried by the
starting model's motion to the frames nobody corrected (ES, …). A candidate is kept only if its mean Dice
on the held-out labels is HIGHER than the starting model's with no structure there lower by more than
``check_tolerance`` (0.005), and no structure of the propagated labels is lower at all; otherwise the starting
model is returned unchanged (``history["check"]["kept"] == 0.0``). So the result is never worse than the
starting model on the held-out check's score. The held-out labels are not used for training.

Training (each step: ``batch`` slices, each a short sequence that starts at ED and follows the cycle,
``ED, ED+a, ED+b, …``, the order the motion branch runs in at inference, on a crop around the heart):

* **segmentation loss** (cross-entropy + Dice) on corrected (frame, slice) pairs only;
* **motion loss** (warped-ED MSE + smoothness) on every frame of the sequence;
* **joint loss**: corrected labels carried through the motion. With a corrected ED slice: (a) the
  warped ED labels are scored against any other corrected frame (trains the motion) and (b) with
  ``prop_weight`` > 0 they are pseudo-labels for the uncorrected frames (off by default: on the ACDC
  validation patients they taught wrong ES labels wherever the motion was off, and the check — which
  also uses propagated labels — could not see it); with only a non-ED frame corrected, the ED
  prediction warped to that frame is scored against it;
* a **regulariser against forgetting** (``guard``): ``"teacher"`` = mean-teacher consistency (KL of the
  class probabilities) on uncorrected frames to an EMA copy of the model (Wu et al. 2022);
  ``"l2sp"`` = L2 penalty toward the starting weights; ``None``.

BatchNorm layers are kept in eval mode (running statistics frozen, affine parameters trained): with
1–2 slices per step batch statistics are noise, and inference uses the running statistics.

Geometry: the cine is seen exactly as inference sees it (:mod:`napari_cardiac_motion.geometry`):
resampled to the model's pixel size on the region around the heart (here: around the corrected
structures), at least the model's ``input_size``; training crops of that size are jittered by up to
``jitter`` model pixels. Memory: only that region of the cine is kept, as float32
(``T·Z·(H+2·jitter)·(W+2·jitter)·4`` bytes), built frame by frame.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from ..cine import Cine, validate_cine_array
from ..conventions import LV_BLOOD_POOL, STRUCTURE_KEYS, UNLABELLED, ed_es_from_lv_volumes
from ..devices import resolve_device
from ..errors import CancelledError, InputError
from ..evaluation.metrics import dice
from ..inference import cycle_order
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
from ..geometry import Region, model_step, region_for_heart, to_model
from ..preprocessing import apply_window, intensity_window

FinetuneProgress = Callable[[int, int, dict], None]
GUARDS = ("teacher", "l2sp", None)


@dataclass
class FinetuneSettings:
    """Hyper-parameters (defaults measured with ``benchmarks/finetune_benchmark.py``).

    ``check`` turns the held-out check on (see the module docstring); ``holdout_every`` = k holds out
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


# --------------------------------------------------------------------------------------------------
# input checks

def validate_corrections(corrections: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Check a corrections array against the image shape ``(T, Z, Y, X)``; returns it as uint8
    (no copy when it already is)."""
    corr = np.asarray(corrections)
    if corr.shape != tuple(shape):
        raise InputError(
            f"The corrections have shape {tuple(corr.shape)} (T, Z, Y, X) but the image has shape {tuple(shape)}; "
            "they must be on the image's grid (in a NIfTI file: X×Y×Z×T = "
            f"{'×'.join(str(s) for s in tuple(shape)[::-1])})."
        )
    if corr.size and (corr.min() < 0 or corr.max() > 255):
        raise InputError("Correction labels must be 0–3, with 255 for unlabelled voxels.")
    corr = corr.astype(np.uint8, copy=False)
    bad: set[int] = set()
    for frame in corr:  # frame by frame: no cine-sized temporaries
        v = np.unique(frame)
        bad |= {int(x) for x in v if 3 < x < UNLABELLED}
    if bad:
        raise InputError(
            f"The corrections contain label values {sorted(bad)}; only 0–3 "
            "(background, LV, myocardium, RV) and 255 (unlabelled) are allowed."
        )
    return corr


def labelled_mask(corrections: np.ndarray) -> np.ndarray:
    """``(T, Z)`` bool: the (frame, slice) pairs that carry a correction (not all 255)."""
    c = np.asarray(corrections)
    return np.stack([(f != UNLABELLED).reshape(c.shape[1], -1).any(-1) for f in c])


# --------------------------------------------------------------------------------------------------
# geometry: fine-tuning sees the cine exactly as inference does (geometry.py's region and sampling)

def _foreground_box(corrections: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Input-pixel box ``(y0, y1, x0, x1)`` (half-open) of the corrected structures (labels 1–3)."""
    fg = np.zeros(corrections.shape[-2:], bool)
    for t, z in zip(*np.nonzero(mask)):
        sl = corrections[t, z]
        fg |= (sl != UNLABELLED) & (sl > 0)
    if not fg.any():
        return None
    ys, xs = np.nonzero(fg)
    return float(ys.min()), float(ys.max() + 1), float(xs.min()), float(xs.max() + 1)


def finetune_regions(corrections: np.ndarray, mask: np.ndarray, model: JointMotionSegNet,
                     spacing_yx: tuple[float, float] | None, margin: int) -> tuple[Region, Region]:
    """``(check, train)`` regions on the model grid: ``check`` is the region inference would run on
    around the corrected structures (:func:`geometry.region_for_heart`, at least the model's
    ``input_size``); ``train`` is the same grid grown by ``margin`` model pixels on every side, so that
    ``check`` = ``train[margin:-margin, margin:-margin]`` and training crops can be jittered."""
    h, w = corrections.shape[-2:]
    pixel = getattr(model.config, "pixel_mm", None)
    step = model_step(spacing_yx, pixel)
    box = _foreground_box(corrections, mask)
    # larger than inference's minimum (112 at 1.5 mm) on purpose: with 112 the held-out check let a
    # −0.021 LV drop through on ACDC patient071 (benchmarks/finetune_benchmark.py --cases patient071)
    min_size = int(max(model.config.input_size))
    if spacing_yx is None or pixel is None:
        pixel = float(np.mean(step))
    check = region_for_heart(box, step, (h, w), pixel_mm=float(pixel), min_size=min_size)
    (oy, ox), (sy, sx), (rh, rw) = check.origin, check.step, check.size
    train = Region((oy - margin * sy, ox - margin * sx), (sy, sx), (rh + 2 * margin, rw + 2 * margin), (h, w))
    return check, train


def sample_region(data: np.ndarray, corrections: np.ndarray, region: Region, device: torch.device
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The cine ``(T, Z, Y, X)`` normalised with the cine's own intensity window (as inference does:
    :func:`preprocessing.intensity_window`) and resampled onto ``region`` like inference
    (:func:`geometry.to_model`), and the corrections resampled by nearest neighbour (outside the image:
    255). Returns float32 and uint8 arrays ``(T, Z, H, W)``; works frame by frame (no normalised copy of
    the whole cine)."""
    window = intensity_window(data)
    n_t, n_z = data.shape[:2]
    image = np.empty((n_t, n_z) + tuple(region.size), np.float32)
    labels = np.empty((n_t, n_z) + tuple(region.size), np.uint8)
    with torch.inference_mode():
        for t in range(n_t):
            x = torch.from_numpy(apply_window(data[t], window)).unsqueeze(1).to(device)
            image[t] = to_model(x, region)[:, 0].cpu().numpy()
            c = torch.from_numpy(corrections[t].astype(np.float32)).unsqueeze(1).to(device)
            labels[t] = to_model(c, region, mode="nearest", fill=float(UNLABELLED))[:, 0].round().cpu().numpy()
    return image, labels


# --------------------------------------------------------------------------------------------------
# model helpers

def _freeze_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def blend_models(start: JointMotionSegNet, tuned: JointMotionSegNet, alpha: float) -> JointMotionSegNet:
    """A new model with weights ``θ₀ + α(θ − θ₀)`` (floating buffers blended too; α = 1 → ``tuned``)."""
    out = copy.deepcopy(tuned)
    if alpha == 1.0:
        return out.eval()
    sd0, sd1 = start.state_dict(), tuned.state_dict()
    new = {}
    for k, v1 in sd1.items():
        v0 = sd0[k].to(v1.device)
        new[k] = v0 + alpha * (v1 - v0) if v1.is_floating_point() else (v1 if alpha > 0 else v0)
    out.load_state_dict(new)
    return out.eval()


def estimate_ed_frame(model: JointMotionSegNet, image: np.ndarray, slices: list[int], device: torch.device) -> int:
    """Frame of the largest predicted LV blood pool over ``slices`` of a normalised ``(T, Z, Y, X)`` image."""
    n_t = image.shape[0]
    lv = np.zeros(n_t)
    model.eval()
    with torch.inference_mode():
        for z in slices:
            x = torch.from_numpy(image[:, z]).unsqueeze(1).to(device)
            lv += (model.segment(x).argmax(1) == LV_BLOOD_POOL).flatten(1).sum(1).cpu().numpy()
    return ed_es_from_lv_volumes(lv)[0]


def _segment_pairs(model: JointMotionSegNet, image: np.ndarray, pairs: list[tuple[int, int]],
                   device: torch.device, chunk: int = 8) -> np.ndarray:
    """Predicted labels ``(N, H, W)`` uint8 of the (frame, slice) ``pairs`` of ``image`` (T, Z, H, W)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(pairs), chunk):
            x = np.stack([image[t, z] for t, z in pairs[i:i + chunk]])[:, None]
            out.append(model.segment(torch.from_numpy(x).to(device)).argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------------
# the held-out check

def split_holdout(mask: np.ndarray, every: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Split the corrected (frame, slice) pairs into a training mask ``(T, Z)`` and held-out pairs.

    Whole slices are held out (every ``every``-th corrected slice, starting with the second); with one
    corrected slice, every ``every``-th corrected frame of it (starting with the second); with a single
    corrected pair nothing is held out (``[]``).
    """
    every = max(2, int(every))
    pairs = [(int(t), int(z)) for t, z in zip(*np.nonzero(mask))]
    slices = sorted({z for _, z in pairs})
    if len(slices) >= 2:
        held_z = set(slices[1::every])
        held = [(t, z) for t, z in pairs if z in held_z]
    else:
        held = sorted(pairs)[1::every]
    train = mask.copy()
    for t, z in held:
        train[t, z] = False
    return train, held


def check_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice per structure of predicted labels vs the held-out labels (both ``(N, H, W)``), on the voxels
    the held-out labels cover (255 = not covered)."""
    valid = truth != UNLABELLED
    p, g = pred[valid], truth[valid]
    return {key: dice(p, g, c) for c, key in STRUCTURE_KEYS.items()}


def propagated_check(model: JointMotionSegNet, image: np.ndarray, corr: np.ndarray, mask: np.ndarray,
                     pairs: list[tuple[int, int]], device: torch.device, n_max: int = 4
                     ) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Check labels for the frames nobody corrected: for each slice of ``pairs``, the labels of its first
    listed pair carried by ``model``'s motion (the *starting* model) to up to ``n_max`` uncorrected
    frames of that slice (spread over the cycle). Returns ``(pairs, labels (N, H, W) uint8, 255 = none)``."""
    n_t = image.shape[0]
    out_pairs, out = [], []
    for z in sorted({z for _, z in pairs}):
        t = min(tt for tt, zz in pairs if zz == z)
        order = [f for f in cycle_order(n_t, t)[1:] if not mask[f, z]]
        if not order:
            continue
        idx = sorted({int(round(i)) for i in np.linspace(0, len(order) - 1, min(n_max, len(order)))})
        frames = [t] + [order[i] for i in idx]
        x = torch.from_numpy(np.ascontiguousarray(image[frames, z])[None]).to(device)
        model.eval()
        with torch.inference_mode():
            _, flows = model.forward_sequence(x)
            src = torch.from_numpy(corr[t, z].astype(np.int64))[None].to(device)
            for k in range(1, len(frames)):
                lab = propagated_pseudo_labels(src, flows[:, k], model.config.num_classes)[0]
                out.append(lab.to(torch.uint8).cpu().numpy())  # IGNORE_INDEX is UNLABELLED
                out_pairs.append((frames[k], z))
    shape = (0,) + image.shape[2:]
    return out_pairs, (np.stack(out) if out else np.zeros(shape, np.uint8))


CheckSet = tuple[str, list[tuple[int, int]], np.ndarray]


def select_model(start: JointMotionSegNet, tuned: JointMotionSegNet, image: np.ndarray,
                 checks: list[CheckSet], blends: tuple[float, ...], device: torch.device,
                 tolerance: float = 0.005) -> tuple[JointMotionSegNet, dict[str, Any]]:
    """Score the starting model and the blends ``α`` of ``tuned`` on every check set
    ``(name, pairs, labels)`` (the first set is the primary one).

    A candidate qualifies when (1) its mean Dice over the structures of the primary set is higher than
    the starting model's and no structure of it loses more than ``tolerance``, and (2) no structure of
    any other set (labels carried by the motion to frames nobody corrected) is lower at all. The
    qualifying candidate with the highest mean over all sets is
    returned (else a copy of the start), with a report
    ``{name: {"pairs", "original", "candidates": {"α": scores}}, "kept": α, "tolerance"}``."""
    checks = [c for c in checks if len(c[1])]
    report: dict[str, Any] = {"kept": 0.0, "tolerance": tolerance}
    base = {}
    for name, pairs, truth in checks:
        base[name] = check_scores(_segment_pairs(start, image, pairs, device), truth)
        report[name] = {"pairs": [list(p) for p in pairs], "original": base[name], "candidates": {}}
    best, best_mean = None, -1.0
    for alpha in sorted({float(a) for a in blends if a > 0}, reverse=True) if checks else []:
        cand = tuned if alpha == 1.0 else blend_models(start, tuned, alpha)
        ok, vals = True, []
        for i, (name, pairs, truth) in enumerate(checks):
            scores = check_scores(_segment_pairs(cand, image, pairs, device), truth)
            report[name]["candidates"][f"{alpha:g}"] = scores
            if i == 0:
                ok &= float(np.mean(list(scores.values()))) > float(np.mean(list(base[name].values())))
            ok &= all(scores[k] >= base[name][k] - (tolerance if i == 0 else 0.0) for k in scores)
            vals += list(scores.values())
        if ok and float(np.mean(vals)) > best_mean:
            best, best_mean, report["kept"] = cand, float(np.mean(vals)), alpha
    if best is None:
        best = copy.deepcopy(start)
    return best.eval(), report


# --------------------------------------------------------------------------------------------------
# training

def _train(student: JointMotionSegNet, image: np.ndarray, corr: np.ndarray, mask: np.ndarray, ed: int,
           crop: tuple[int, int], s: FinetuneSettings, device: torch.device, report: FinetuneProgress,
           cancel: Callable[[], bool] | None) -> list[dict]:
    """The optimisation loop on ``image``/``corr`` (T, Z, H, W) region arrays; ``mask`` (T, Z) marks the
    corrected pairs it may learn from. Trains ``student`` in place; returns the losses per step."""
    n_t, n_z, h, w = image.shape
    rng = np.random.default_rng(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    order = cycle_order(n_t, ed)  # ED first
    corrected_slices = sorted({int(z) for z in np.nonzero(mask)[1]})
    ch, cw = crop
    teacher = None
    if s.guard == "teacher":
        teacher = copy.deepcopy(student).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    start_params = [p.detach().clone() for p in student.parameters()] if s.guard == "l2sp" else None
    opt = torch.optim.Adam(student.parameters(), lr=s.lr)
    num_classes = student.config.num_classes
    losses: list[dict] = []

    def crop_box() -> tuple[slice, slice]:
        yy = int(rng.integers(0, h - ch + 1)) if h > ch else 0
        xx = int(rng.integers(0, w - cw + 1)) if w > cw else 0
        return slice(yy, yy + ch), slice(xx, xx + cw)

    def sample_slice() -> tuple[int, list[int]]:
        """A slice (half the time a corrected one) and a sequence of frames starting at ED."""
        if rng.random() < 0.5 or len(corrected_slices) == n_z:
            z = int(rng.choice(corrected_slices))
        else:
            z = int(rng.integers(n_z))
        rest = order[1:]
        if len(rest) <= s.seq_len - 1:
            pos = list(range(len(rest)))
        else:
            must = [i for i, f in enumerate(rest) if mask[f, z]]
            must = list(rng.permutation(must)[: max(0, s.seq_len - 2)]) if must else []
            others = [i for i in range(len(rest)) if i not in must]
            pos = sorted(must + list(rng.choice(others, s.seq_len - 1 - len(must), replace=False)))
        return z, [ed] + [rest[i] for i in pos]

    for step in range(1, s.steps + 1):
        if cancel is not None and cancel():
            raise CancelledError(f"Fine-tuning cancelled at step {step - 1}/{s.steps}; the previous model is kept.")
        student.train()
        if s.freeze_bn:
            _freeze_batchnorm(student)
        seqs = [sample_slice() for _ in range(s.batch)]
        length = min(len(f) for _, f in seqs)  # all sequences of a batch share the length
        seqs = [(z, f[:length]) for z, f in seqs]
        by, bx = crop_box()
        imgs = np.stack([image[f, z][:, by, bx] for z, f in seqs])  # (B, L, H, W)
        labs = np.stack([corr[f, z][:, by, bx] for z, f in seqs])  # (B, L, H, W), 255 = unlabelled
        lab_mask = np.stack([mask[f, z] for z, f in seqs])  # (B, L)
        scale = 1.0 + 0.1 * (torch.rand(len(seqs), 1, 1, 1, generator=gen) * 2 - 1)
        x = (torch.from_numpy(imgs) * scale).to(device)  # (B, L, H, W)
        y = torch.from_numpy(labs.astype(np.int64)).to(device)
        y[~torch.from_numpy(lab_mask).to(device)] = IGNORE_INDEX  # held-out pairs carry no label
        lm = torch.from_numpy(lab_mask).to(device)

        seg, flows = student.forward_sequence(x)  # source = frame 0 = ED
        b, length = x.shape[:2]
        terms: dict[str, torch.Tensor] = {}
        if bool(lm.any()):
            terms["seg"] = segmentation_loss(seg[lm], y[lm])
        src = x[:, :1].expand(-1, length, -1, -1).reshape(b * length, 1, *x.shape[-2:])
        terms["motion"] = s.motion_weight * motion_loss(src, x.reshape(b * length, 1, *x.shape[-2:]),
                                                        flows.flatten(0, 1))
        joint, prop = [], []
        ed_lab = lm[:, 0]
        for k in range(1, length):
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
        total = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if teacher is not None:
            with torch.no_grad():
                for pt, ps in zip(teacher.parameters(), student.parameters()):
                    pt.mul_(s.teacher_decay).add_(ps.detach(), alpha=1 - s.teacher_decay)
                for bt, bs in zip(teacher.buffers(), student.buffers()):
                    bt.copy_(bs)
        rec = {k: float(v.detach()) for k, v in terms.items()}
        rec["total"] = float(total.detach())
        if not math.isfinite(rec["total"]):
            raise InputError("Fine-tuning diverged (non-finite loss); try a smaller learning rate.")
        losses.append(rec)
        report(step, s.steps, rec)
    student.eval()
    return losses


def finetune(
    model: JointMotionSegNet,
    cine: Cine | np.ndarray,
    corrections: np.ndarray,
    steps: int | None = None,
    lr: float | None = None,
    device: str | torch.device = "cpu",
    progress: FinetuneProgress | None = None,
    cancel: Callable[[], bool] | None = None,
    guard: str | None | type[Ellipsis] = ...,
    ed_frame: int | None = None,
    settings: FinetuneSettings | None = None,
) -> tuple[JointMotionSegNet, dict[str, Any]]:
    """Fine-tune a copy of ``model`` on ``cine`` from ``corrections`` (see the module docstring).

    Args:
        model: the current model (left untouched).
        cine: a :class:`Cine` or ``(T, Z, Y, X)`` image.
        corrections: ``(T, Z, Y, X)`` uint8, 255 = unlabelled.
        steps, lr, guard: override ``settings`` (guard: ``"teacher"``, ``"l2sp"`` or ``None``).
        device: ``auto|cpu|cuda|mps``.
        progress: ``progress(step, total, losses)`` after every step (losses: floats by name).
        cancel: returns True to stop; checked before every step (raises :class:`CancelledError`).
        ed_frame: reference frame; default: largest predicted LV blood pool on the corrected slices.
    Returns:
        ``(new_model in eval mode on device, history)``; history has ``losses`` (one dict per step),
        ``seconds`` (and ``seconds_parts``: prepare, train, check), ``ed_frame``, ``corrected`` (list of
        [t, z]), ``steps``, ``lr``, ``guard``, ``region`` (:meth:`geometry.Region.to_dict`), ``check``
        (``None`` when off; else ``kept`` = α of the returned model, 0.0 = the starting model,
        ``tolerance``, and per check set — ``held_out`` (true labels) and/or ``propagated`` (labels
        carried by the starting model's motion) — its ``pairs`` [[t, z]], the ``original`` Dice per
        structure and the ``candidates`` {"α": Dice per structure}) and ``kept_original`` (bool).
    """
    s = copy.deepcopy(settings) if settings is not None else FinetuneSettings()
    if steps is not None:
        s.steps = int(steps)
    if lr is not None:
        s.lr = float(lr)
    if guard is not ...:
        s.guard = guard  # type: ignore[assignment]
    if s.guard not in GUARDS:
        raise ValueError(f"guard must be one of {GUARDS}, got {s.guard!r}")
    if s.steps < 1:
        raise InputError(f"Fine-tuning needs at least 1 step (got {s.steps}).")
    t_start = time.perf_counter()
    data = cine.data if isinstance(cine, Cine) else validate_cine_array(cine)
    corr_full = validate_corrections(corrections, data.shape)
    mask = labelled_mask(corr_full)
    if not mask.any():
        raise InputError(
            "No corrected slice: every (frame, slice) of the corrections is unlabelled (255). Correct at "
            "least one slice of the segmentation before fine-tuning."
        )
    n_t = data.shape[0]
    dev = resolve_device(device)
    spacing_yx = None
    if isinstance(cine, Cine) and cine.spacing is not None:
        spacing_yx = (float(cine.spacing[1]), float(cine.spacing[2]))
    m = max(0, int(s.jitter))
    check_region, train_region = finetune_regions(corr_full, mask, model, spacing_yx, m)
    image, corr = sample_region(data, corr_full, train_region, dev)  # (T, Z, H+2m, W+2m)
    ch, cw = check_region.size
    image_c, corr_c = image[..., m:m + ch, m:m + cw], corr[..., m:m + ch, m:m + cw]  # the check's view

    start = copy.deepcopy(model).to(dev).eval()
    corrected_slices = sorted({int(z) for z in np.nonzero(mask)[1]})
    if ed_frame is None:
        ed_frame = estimate_ed_frame(start, image_c, corrected_slices, dev)
    ed = int(ed_frame)
    if not 0 <= ed < n_t:
        raise InputError(f"ED frame {ed} is out of range: the cine has frames 0–{n_t - 1}.")

    train_mask, held = (split_holdout(mask, s.holdout_every) if s.check else (mask, []))
    checks: list[CheckSet] = []
    if s.check and held:  # true labels of the held-out slices, and those labels carried to other frames
        checks.append(("held_out", held, np.stack([corr_c[t, z] for t, z in held])))
        if s.check_propagated:
            checks.append(("propagated", *propagated_check(start, image_c, corr_c, mask, held, dev)))
    elif s.check:  # a single corrected pair: only its labels carried by the starting model's motion
        only = [(int(t), int(z)) for t, z in zip(*np.nonzero(mask))]
        checks.append(("propagated", *propagated_check(start, image_c, corr_c, mask, only, dev)))

    student = copy.deepcopy(start)
    t_train = time.perf_counter()
    losses = _train(student, image, corr, train_mask, ed, (ch, cw), s, dev, progress or (lambda *_: None), cancel)

    t_check = time.perf_counter()
    check = None
    result = student
    if checks and any(len(c[1]) for c in checks):
        if cancel is not None and cancel():
            raise CancelledError("Fine-tuning cancelled before the check; the previous model is kept.")
        result, check = select_model(start, student, image_c, checks, s.blends, dev, s.check_tolerance)
    history = {
        "losses": losses,
        "seconds": time.perf_counter() - t_start,
        "seconds_parts": {"prepare": t_train - t_start, "train": t_check - t_train,
                          "check": time.perf_counter() - t_check},
        "ed_frame": ed,
        "corrected": [[int(t), int(z)] for t, z in zip(*np.nonzero(mask))],
        "steps": s.steps,
        "lr": s.lr,
        "guard": s.guard,
        "freeze_bn": s.freeze_bn,
        "region": check_region.to_dict(spacing_yx),
        "check": check,
        "kept_original": bool(check is not None and check["kept"] == 0.0),
    }
    return result, history


__all__ = [
    "GUARDS",
    "FinetuneProgress",
    "FinetuneSettings",
    "blend_models",
    "check_scores",
    "estimate_ed_frame",
    "finetune",
    "finetune_regions",
    "labelled_mask",
    "sample_region",
    "propagated_check",
    "select_model",
    "split_holdout",
    "validate_corrections",
]
