"""Fine-tune the joint model on one cine from the user's corrected slices (no Qt, no napari).

Inputs: the cine ``(T, Z, Y, X)`` and a corrections array of the same shape where a voxel equal to
:data:`~napari_cardiac_motion.conventions.UNLABELLED` (255) is unlabelled; a (frame, slice) that is
not all 255 is a correction (labels 0–3).

A COPY of the model is trained (the caller's model is never modified, so cancelling — which raises
:class:`~napari_cardiac_motion.errors.CancelledError` at the next step — keeps the previous model).
Each step takes ``batch`` slices; for each, a short sequence that starts at ED and follows the cycle
(``ED, ED+a, ED+b, …``, the order the motion branch runs in at inference) on a crop around the heart:

* **segmentation loss** (cross-entropy + Dice) on corrected (frame, slice) pairs only;
* **motion loss** (warped-ED MSE + smoothness) on every frame of the sequence;
* **joint loss**: corrected labels carried through the motion. With a corrected ED slice: (a) the
  warped ED labels are scored against any other corrected frame (trains the motion) and (b) they
  are pseudo-labels for the uncorrected frames (nearest-neighbour warp through the detached flow;
  trains the segmentation of frames nobody corrected). With only a non-ED frame corrected, the ED
  prediction warped to that frame is scored against it;
* a **guard against forgetting**: ``"teacher"`` = mean-teacher consistency (KL divergence of the class
  probabilities) on uncorrected frames to an EMA copy of the model; ``"l2sp"`` = L2 penalty toward the
  starting weights; ``None``.

BatchNorm layers are kept in eval mode by default (running statistics frozen, affine parameters
trained): with 1–2 slices per step, batch statistics are noise, and inference uses running stats.

The crop is the network's inference field of view (192², centred on the corrected structures): measured
on ACDC patient031 (ED ground truth as corrections), 40 steps on 112² or 144² crops *lowered* ES LV Dice
(0.775 → 0.53 / 0.57, and even ED LV Dice, the frame that was taught), while 192² raised it to 0.92 (20
steps: 0.82) — the network's predictions depend on the context it sees at inference.
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

from .cine import Cine, validate_cine_array
from .conventions import LV_BLOOD_POOL, UNLABELLED
from .devices import resolve_device
from .errors import CancelledError, InputError
from .inference import cycle_order
from .model.losses import IGNORE_INDEX, motion_loss, one_hot_labels, segmentation_loss, warped_label_loss
from .model.network import JointMotionSegNet
from .model.transformer import warp
from .preprocessing import normalize_intensity

FinetuneProgress = Callable[[int, int, dict], None]
GUARDS = ("teacher", "l2sp", None)


@dataclass
class FinetuneSettings:
    """Hyper-parameters (defaults measured with ``benchmarks/finetune_benchmark.py``; ``crop`` = 192 is
    the default model's inference size, see the module docstring)."""

    steps: int = 20
    lr: float = 1e-4
    guard: str | None = "teacher"
    freeze_bn: bool = True
    crop: int = 192
    seq_len: int = 4
    batch: int = 1
    motion_weight: float = 10.0
    joint_weight: float = 0.5
    prop_weight: float = 0.3
    teacher_weight: float = 1.0
    teacher_decay: float = 0.99
    l2sp_weight: float = 1e-2
    seed: int = 0


def _freeze_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def validate_corrections(corrections: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Check a corrections array against the image shape ``(T, Z, Y, X)``; returns it as uint8."""
    corr = np.asarray(corrections)
    if corr.shape != tuple(shape):
        raise InputError(
            f"The corrections have shape {tuple(corr.shape)} (T, Z, Y, X) but the image has shape {tuple(shape)}; "
            "they must be on the image's grid (in a NIfTI file: X×Y×Z×T = "
            f"{'×'.join(str(s) for s in tuple(shape)[::-1])})."
        )
    if corr.size and (corr.min() < 0 or corr.max() > 255):
        raise InputError("Correction labels must be 0–3, with 255 for unlabelled voxels.")
    corr = corr.astype(np.uint8)
    bad = (corr != UNLABELLED) & (corr > 3)
    if bad.any():
        raise InputError(
            f"The corrections contain label values {sorted(set(np.unique(corr[bad]).tolist()))}; only 0–3 "
            "(background, LV, myocardium, RV) and 255 (unlabelled) are allowed."
        )
    return corr


def labelled_mask(corrections: np.ndarray) -> np.ndarray:
    """``(T, Z)`` bool: the (frame, slice) pairs that carry a correction (not all 255)."""
    c = np.asarray(corrections)
    return (c != UNLABELLED).reshape(c.shape[0], c.shape[1], -1).any(-1)


def _heart_box(corrections: np.ndarray, mask: np.ndarray, crop: tuple[int, int], hw: tuple[int, int]
               ) -> tuple[int, int]:
    """Top-left corner of a ``crop`` box centred on the corrected foreground (else the image centre)."""
    fg = np.zeros(hw, bool)
    for t, z in zip(*np.nonzero(mask)):
        sl = corrections[t, z]
        fg |= (sl != UNLABELLED) & (sl > 0)
    if fg.any():
        ys, xs = np.nonzero(fg)
        cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
    else:
        cy, cx = hw[0] / 2.0, hw[1] / 2.0
    y0 = int(round(cy - crop[0] / 2.0))
    x0 = int(round(cx - crop[1] / 2.0))
    return (min(max(y0, 0), hw[0] - crop[0]), min(max(x0, 0), hw[1] - crop[1]))


def estimate_ed_frame(model: JointMotionSegNet, image: np.ndarray, slices: list[int], device: torch.device) -> int:
    """Frame of the largest predicted LV blood pool over ``slices`` of a normalised ``(T, Z, Y, X)`` image."""
    n_t = image.shape[0]
    lv = np.zeros(n_t)
    model.eval()
    with torch.inference_mode():
        for z in slices:
            x = torch.from_numpy(image[:, z]).unsqueeze(1).to(device)
            lv += (model.segment(x).argmax(1) == LV_BLOOD_POOL).flatten(1).sum(1).cpu().numpy()
    return int(np.argmax(lv))


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
    """Fine-tune a copy of ``model`` on ``cine`` from ``corrections``.

    Args:
        model: the current model (left untouched).
        cine: a :class:`Cine` or ``(T, Z, Y, X)`` image.
        corrections: ``(T, Z, Y, X)`` uint8, 255 = unlabelled (see module docstring).
        steps, lr, guard: override ``settings`` (guard: ``"teacher"``, ``"l2sp"`` or ``None``).
        device: ``auto|cpu|cuda|mps``.
        progress: ``progress(step, total, losses)`` after every step (losses: floats by name).
        cancel: returns True to stop; checked before every step (raises :class:`CancelledError`).
        ed_frame: reference frame; default: largest predicted LV blood pool on the corrected slices.
    Returns:
        ``(new_model in eval mode on device, history)``; history has ``losses`` (one dict per step),
        ``seconds``, ``ed_frame``, ``corrected`` (list of [t, z]), ``steps``, ``lr``, ``guard``.
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
    corr = validate_corrections(corrections, data.shape)
    mask = labelled_mask(corr)
    if not mask.any():
        raise InputError(
            "No corrected slice: every (frame, slice) of the corrections is unlabelled (255). Correct at "
            "least one slice of the segmentation before fine-tuning."
        )
    n_t, n_z, h, w = data.shape
    dev = resolve_device(device)
    rng = np.random.default_rng(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    image = normalize_intensity(data)

    student = copy.deepcopy(model).to(dev)
    corrected_slices = sorted({int(z) for z in np.nonzero(mask)[1]})
    if ed_frame is None:
        ed_frame = estimate_ed_frame(student, image, corrected_slices, dev)
    ed = int(ed_frame)
    if not 0 <= ed < n_t:
        raise InputError(f"ED frame {ed} is out of range: the cine has frames 0–{n_t - 1}.")
    order = cycle_order(n_t, ed)  # ED first

    ch, cw = min(s.crop, h), min(s.crop, w)
    y0, x0 = _heart_box(corr, mask, (ch, cw), (h, w))
    jitter = max(0, min(12, (s.crop - 32) // 8))

    teacher = None
    if s.guard == "teacher":
        teacher = copy.deepcopy(student).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    start_params = None
    if s.guard == "l2sp":
        start_params = [p.detach().clone() for p in student.parameters()]

    opt = torch.optim.Adam(student.parameters(), lr=s.lr)
    losses: list[dict] = []
    num_classes = student.config.num_classes
    report = progress or (lambda *_: None)

    def crop_box() -> tuple[slice, slice]:
        dy = int(rng.integers(-jitter, jitter + 1)) if jitter else 0
        dx = int(rng.integers(-jitter, jitter + 1)) if jitter else 0
        yy = min(max(y0 + dy, 0), h - ch)
        xx = min(max(x0 + dx, 0), w - cw)
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
        # all sequences in a batch share the length: trim to the shortest
        length = min(len(f) for _, f in seqs)
        seqs = [(z, f[:length]) for z, f in seqs]
        by, bx = crop_box()
        imgs = np.stack([image[f, z][:, by, bx] for z, f in seqs])  # (B, L, H, W)
        labs = np.stack([corr[f, z][:, by, bx] for z, f in seqs])  # (B, L, H, W), 255 = unlabelled
        lab_mask = np.stack([mask[f, z] for z, f in seqs])  # (B, L)
        scale = 1.0 + 0.1 * (torch.rand(len(seqs), 1, 1, 1, generator=gen) * 2 - 1)
        x = (torch.from_numpy(imgs) * scale).unsqueeze(2).to(dev)  # (B, L, 1, H, W)
        y = torch.from_numpy(labs.astype(np.int64)).to(dev)
        lm = torch.from_numpy(lab_mask).to(dev)

        seg, flows, _ = student(x[:, 0], x)
        b, length = x.shape[:2]
        terms: dict[str, torch.Tensor] = {}
        # segmentation on corrected pairs
        if bool(lm.any()):
            terms["seg"] = segmentation_loss(seg[lm], y[lm])
        # motion on every frame
        src = x[:, 0].unsqueeze(1).expand(-1, length, -1, -1, -1).flatten(0, 1)
        terms["motion"] = s.motion_weight * motion_loss(src, x.flatten(0, 1), flows.flatten(0, 1))
        # joint: labels through the motion
        joint, prop = [], []
        ed_lab = lm[:, 0]
        for k in range(1, length):
            fk = flows[:, k]
            tgt_lab = lm[:, k]
            both = ed_lab & tgt_lab
            if bool(both.any()):  # corrected ED warped onto a corrected frame: trains the motion
                src_p = one_hot_labels(y[both, 0], num_classes)
                tgt = y[both, k].clone()
                with torch.no_grad():  # voxels whose ED source is unlabelled (255) carry no target
                    src_valid = (y[both, 0] != IGNORE_INDEX).float().unsqueeze(1)
                    tgt[warp(src_valid, fk[both].detach())[:, 0] < 0.5] = IGNORE_INDEX
                joint.append(warped_label_loss(src_p, fk[both], tgt))
            only_t = (~ed_lab) & tgt_lab
            if bool(only_t.any()):  # predicted ED warped onto a corrected frame
                src_p = torch.softmax(seg[only_t, 0], 1)
                joint.append(warped_label_loss(src_p, fk[only_t], y[only_t, k]))
            only_ed = ed_lab & (~tgt_lab)
            if bool(only_ed.any()) and s.prop_weight > 0:  # pseudo-labels for uncorrected frames
                with torch.no_grad():
                    ed_y = y[only_ed, 0]
                    valid = (ed_y != IGNORE_INDEX).float().unsqueeze(1)
                    src_p = torch.cat([one_hot_labels(ed_y, num_classes), valid], 1)
                    warped = warp(src_p, fk[only_ed].detach(), mode="nearest")
                    pseudo = warped[:, :num_classes].argmax(1)
                    pseudo[warped[:, num_classes] < 0.5] = IGNORE_INDEX
                prop.append(segmentation_loss(seg[only_ed, k], pseudo))
        if joint:
            terms["joint"] = s.joint_weight * torch.stack(joint).mean()
        if prop:
            terms["prop"] = s.prop_weight * torch.stack(prop).mean()
        # guard
        if teacher is not None:
            unl = ~lm
            if bool(unl.any()):
                with torch.no_grad():
                    t_logits = teacher.segment(x[unl])
                # KL(teacher || student) of the class probabilities, mean over voxels
                p_t = torch.softmax(t_logits, 1)
                kl = (p_t * (torch.log_softmax(t_logits, 1) - torch.log_softmax(seg[unl], 1))).sum(1).mean()
                terms["teacher"] = s.teacher_weight * kl
        if start_params is not None:
            pen = sum(((p - p0) ** 2).sum() for p, p0 in zip(student.parameters(), start_params))
            terms["l2sp"] = s.l2sp_weight * pen
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
    history = {
        "losses": losses,
        "seconds": time.perf_counter() - t_start,
        "ed_frame": ed,
        "corrected": [[int(t), int(z)] for t, z in zip(*np.nonzero(mask))],
        "steps": s.steps,
        "lr": s.lr,
        "guard": s.guard,
        "freeze_bn": s.freeze_bn,
        "crop": [ch, cw],
    }
    return student, history
