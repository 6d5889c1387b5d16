"""Quality control from the joint model's own evidence (no Qt, no napari).

A score per (frame, slice) of how likely the labels there are wrong (higher = more likely wrong), from
three kinds of evidence:

* **uncertainty** of the segmentation: sums over the soft-max maps gathered inside the segmenting pass of
  :func:`.inference.predict_cine` by :func:`softmax_evidence` (``(T, Z, n_evidence(C))``, in mm²);
* **motion**: the frame's segmentation against the ED labels carried to that frame by the estimated motion
  (``label_t(p) = label_ED(p + u_t(p))``, :func:`.model.transformer.warp_array`);
* **anatomy**: a blood pool without a myocardial ring, holes, a myocardium of implausible thickness, a
  structure that appears or vanishes between neighbouring slices or frames, and the slice's position in
  the heart (basal and apical slices are where most errors are).

The features are combined by gradient-boosted decision trees (:mod:`.qc_boost`, the model in
``qc_model.json``: :data:`MODEL`, :data:`THRESHOLD`) fitted on the 80 ACDC training patients by
``benchmarks/qc_benchmark.py --fit`` (see there); the 20 validation patients stay out of the fit.
:func:`flag` marks the pairs whose score reaches :data:`THRESHOLD`, at most the worst
:data:`MAX_FLAGGED_FRACTION` of a cine.
Frame and slice indices are 0-based, as on napari's sliders. Arrays: labels ``(T, Z, Y, X)``, motion ``(T, Z, Y, X, 2)`` ``(dy, dx)`` voxels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from . import qc_boost
from .errors import InputError

#: the soft-max evidence of one (frame, slice), areas in mm² of the model grid: per foreground class c (1, 2,
#: 3 for the MR model) Σ p_c, area(argmax = c), Σ p_c·[argmax = c]; then Σ impurity (1 − Σ_c p_c², ·mm²)
#: over the heart zone (p_background < 0.9), the zone's area, the zone's area where max_c p_c < 0.75
EVIDENCE_PER_CLASS = 3
EVIDENCE_EXTRA = 3

#: the features of the score, in the order of the constants below
FEATURES = (
    "soft_gap",        # 1 − min over classes of the Dice between the soft-max and its argmax
    "impurity",        # mean impurity 1 − Σ_c p_c² of the soft-max in the heart zone
    "unsure",          # area where the most likely class has p < 0.75, relative to the labelled area
    "carried_gap",     # 1 − min over classes of Dice(labels_t, ED labels carried by the motion)
    "no_ring",         # fraction of the LV blood pool's border not touching myocardium
    "holes",           # holes and extra pieces, relative to the labelled area
    "thickness_off",   # mm of myocardial thickness outside 3–15 mm
    "z_jump",          # largest |log area ratio| to the neighbouring slices of a class present in both
    "z_vanish",        # log(1 + largest neighbouring-slice area of a class absent here, mm²)
    "t_jump",          # largest |log area ratio| of a class to its neighbouring frames
    "edge_base",       # 1 / (1 + slices to the basal end of the labelled stack)
    "edge_apex",       # 1 / (1 + slices to the apical end (the end whose half has the smaller LV))
    "base_systole",    # edge_base × the frame's contraction (1 − LV area / largest): basal slices in systole
    "small",           # 1 − this slice's LV-and-Myo area / the largest over slices (apical slices)
    "tiny",            # 1 / (1 + smallest labelled structure's area / 100 mm²)
    "lost_mass",       # log(1 + largest soft-max area of a class missing from the labels, mm²)
    "volume_gap",      # largest |soft-max area − labelled area| / (sum + 10 mm²) of a class
    "rv_no_lv",        # log((1 + RV area) / (1 + LV and Myo area)), ≥ 0: an RV without a left ventricle
)
#: the fitted score (gradient-boosted trees, :mod:`.qc_boost`), its threshold and where it came from; written
#: by ``benchmarks/qc_benchmark.py --fit --write``
MODEL_FILE = Path(__file__).with_name("qc_model.json")
MODEL: dict[str, Any] = json.loads(MODEL_FILE.read_text())
#: flag a (frame, slice) whose score is at least this
THRESHOLD = float(MODEL["threshold"])
FIT_NOTE = str(MODEL["fit"])

THICKNESS_MM = (3.0, 15.0)
#: at most this fraction of a cine's (frame, slice) pairs is flagged (the worst ones)
MAX_FLAGGED_FRACTION = 0.25


def n_evidence(n_classes: int) -> int:
    """Length of :func:`softmax_evidence`'s rows for a model of ``n_classes`` (background included)."""
    return EVIDENCE_PER_CLASS * (n_classes - 1) + EVIDENCE_EXTRA


def softmax_evidence(probs):
    """Per-frame sums over soft-max maps ``(N, C, H, W)`` (a torch tensor) → ``(N, n_evidence(C))``
    float32 tensor on the same device, in pixels (the caller scales them to mm²; see the comment at
    :data:`EVIDENCE_PER_CLASS`); cheap: one max over the classes, two bincounts and a few sums."""
    import torch

    p = probs.float()
    n, c = p.shape[:2]
    pmax, hard = p.max(1)
    soft = p[:, 1:].sum((2, 3))
    idx = (hard + c * torch.arange(n, device=p.device).view(n, 1, 1)).flatten()
    area = torch.bincount(idx, minlength=n * c).view(n, c)[:, 1:].float()
    agree = torch.bincount(idx, weights=pmax.flatten().double(), minlength=n * c).view(n, c)[:, 1:].float()
    zone = p[:, 0] < 0.9
    impurity = 1.0 - (p * p).sum(1)
    extra = torch.stack([(impurity * zone).sum((1, 2)), zone.sum((1, 2)).float(),
                         (zone & (pmax < 0.75)).sum((1, 2)).float()], 1)
    return torch.cat([torch.stack([soft, area, agree], 2).flatten(1), extra], 1)


@dataclass
class QCResult:
    """Scores of :func:`assess`: ``scores`` ``(T, Z)`` float (higher = more likely wrong), ``flagged``
    ``(T, Z)`` bool (:func:`flag`: score ≥ ``threshold``, at most the worst :data:`MAX_FLAGGED_FRACTION`),
    ``features`` ``(T, Z, len(FEATURES))``, ``evidence`` the soft-max sums they came from
    ``(T, Z, n_evidence)`` (or None), ``reasons`` why each flagged (frame, slice) was flagged, in words
    (:func:`.qc_reasons.reasons`)."""

    scores: np.ndarray
    flagged: np.ndarray
    threshold: float
    features: np.ndarray
    evidence: np.ndarray | None = None
    reasons: dict[tuple[int, int], str] = field(default_factory=dict)

    def worst(self, flagged_only: bool = True) -> list[tuple[int, int, float]]:
        """``(frame, slice, score)`` sorted worst first (only flagged ones by default)."""
        pairs = [(int(t), int(z), float(self.scores[t, z])) for t, z in np.ndindex(*self.scores.shape)
                 if self.flagged[t, z] or not flagged_only]
        return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))

    def summary(self) -> dict[str, Any]:
        """Short summary for ``result.json``: flagged count, worst score, where it is and why (when flagged)."""
        if self.scores.size == 0:
            return {"flagged": 0, "slices": 0, "worst_score": None, "worst": None, "worst_reason": ""}
        t, z = np.unravel_index(int(np.argmax(self.scores)), self.scores.shape)
        return {"flagged": int(self.flagged.sum()), "slices": int(self.scores.size),
                "worst_score": round(float(self.scores[t, z]), 4), "worst": {"frame": int(t), "slice": int(z)},
                "worst_reason": self.reasons.get((int(t), int(z)), ""), "threshold": self.threshold}

    def to_json(self) -> dict[str, Any]:
        """``qc.json``: every (frame, slice) with its score and flag, worst first; the threshold and the
        largest fraction of a cine flagged."""
        return {"slices": [{"frame": t, "slice": z, "score": round(s, 4), "flagged": bool(self.flagged[t, z]),
                            **({"reason": self.reasons[(t, z)]} if (t, z) in self.reasons else {})}
                           for t, z, s in self.worst(flagged_only=False)],
                "threshold": self.threshold, "max_flagged_fraction": MAX_FLAGGED_FRACTION,
                "flagged": int(self.flagged.sum()),
                "score": "higher = labels more likely wrong (gradient-boosted trees on the model's own evidence)",
                "features": list(FEATURES), "fit": FIT_NOTE}


def uncertainty_features(evidence: np.ndarray) -> np.ndarray:
    """``(…, n_evidence)`` soft-max sums → ``(…, 3)``: soft_gap, impurity, unsure."""
    ev = np.asarray(evidence, dtype=np.float64)
    n_cls = (ev.shape[-1] - EVIDENCE_EXTRA) // EVIDENCE_PER_CLASS
    gaps = class_soft_gaps(ev)
    imp, zone, low = (ev[..., -EVIDENCE_EXTRA + j] for j in range(3))
    hard = sum(ev[..., EVIDENCE_PER_CLASS * k + 1] for k in range(n_cls))
    return np.stack([gaps.max(-1) if n_cls else np.zeros(imp.shape), imp / np.maximum(zone, 1.0),
                     low / np.maximum(hard, 1.0)], -1)


def class_soft_gaps(evidence: np.ndarray) -> np.ndarray:
    """``(…, n_evidence)`` soft-max sums → ``(…, n_classes − 1)``: per foreground class, 1 − the Dice between
    the soft-max and its arg-max (0 where the class is absent: no arg-max pixel and Σ p < 10 mm²)."""
    ev = np.asarray(evidence, dtype=np.float64)
    n_cls = (ev.shape[-1] - EVIDENCE_EXTRA) // EVIDENCE_PER_CLASS
    gaps = []
    for k in range(n_cls):
        s, h, i = (ev[..., EVIDENCE_PER_CLASS * k + j] for j in range(3))
        gaps.append(np.where((h > 0) | (s >= 10.0), 1.0 - 2.0 * i / np.maximum(s + h, 1e-6), 0.0))
    return np.stack(gaps, -1) if gaps else np.zeros(ev.shape[:-1] + (0,))


#: in-plane connectivity for a stack of slices ``(N, Y, X)``: slices never touch each other
_PLANE = np.zeros((3, 3, 3), bool)
_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _per_slice(mask: np.ndarray) -> np.ndarray:
    """Pixel count of each slice of a ``(N, Y, X)`` mask → ``(N,)`` float."""
    return mask.reshape(mask.shape[0], -1).sum(1).astype(np.float64)


def _grow(mask: np.ndarray) -> np.ndarray:
    """In-plane 4-neighbour dilation of each slice of a ``(N, Y, X)`` mask (numpy shifts; cheap)."""
    out = mask.copy()
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


def _holes(fg: np.ndarray) -> np.ndarray:
    """Background pixels enclosed by foreground, per slice of a ``(N, Y, X)`` mask → ``(N,)``."""
    lbl, _ = ndimage.label(~fg, structure=_PLANE)
    edge = np.unique(np.concatenate([lbl[:, 0].ravel(), lbl[:, -1].ravel(), lbl[:, :, 0].ravel(),
                                     lbl[:, :, -1].ravel()]))
    return _per_slice((lbl > 0) & ~np.isin(lbl, edge))


def _extra_pieces(mask: np.ndarray) -> np.ndarray:
    """Connected pieces beyond the first of each slice of a ``(N, Y, X)`` mask → ``(N,)``."""
    lbl, n = ndimage.label(mask, structure=_PLANE)
    counts = np.zeros(mask.shape[0])
    for sl in ndimage.find_objects(lbl):
        counts[sl[0].start] += 1
    return np.clip(counts - 1, 0, None)


def anatomy(lab: np.ndarray, n_cls: int, pixel_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Anatomical checks of every slice of a stack ``(N, Y, X)`` of labels (classes 1 LV, 2 Myo, …):
    class areas ``(N, n_cls)`` (pixels), no_ring, holes, thickness_off ``(N,)`` (see :data:`FEATURES`)."""
    areas = np.stack([_per_slice(lab == c) for c in range(1, n_cls + 1)], 1)
    fg = lab > 0
    n_fg = _per_slice(fg)
    lv, myo = lab == 1, lab == 2
    border = _grow(lv) & ~lv
    n_border = _per_slice(border)
    no_ring = np.where(n_border > 0, 1.0 - _per_slice(border & myo) / np.maximum(n_border, 1), 0.0)
    holes = _holes(fg)
    for c in range(1, n_cls + 1):
        holes += 10.0 * _extra_pieces(lab == c)
    holes = np.where(n_fg > 0, holes / np.maximum(n_fg, 1), 0.0)
    endo = _per_slice(border & myo)
    wall = lv | myo
    epi = _per_slice(wall & _grow(~wall))
    th = 2.0 * _per_slice(myo) * pixel_mm / np.maximum(endo + epi, 1)
    lo, hi = THICKNESS_MM
    off = np.clip(lo - th, 0, None) + np.clip(th - hi, 0, None)
    thickness_off = np.where((areas[:, 0] > 0) & (areas[:, 1] > 0) if n_cls >= 2 else False, off, 0.0)
    return areas, no_ring, holes, thickness_off


def _log_jump(a: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """Largest |log((1 + a) / (1 + neighbour))| over the neighbours, per class (areas ``(C,)``)."""
    if not others:
        return np.zeros_like(a)
    return np.max([np.abs(np.log1p(a) - np.log1p(o)) for o in others], 0)


def carried_gap(labels: np.ndarray, motion: np.ndarray, ed_frame: int, n_cls: int) -> np.ndarray:
    """``(T, Z)``: 1 − min over present classes of Dice(labels_t, labels_ED carried by the motion)."""
    from .model.transformer import warp_array

    n_t, n_z = labels.shape[:2]
    out = np.zeros((n_t, n_z))
    others = [t for t in range(n_t) if t != ed_frame]
    if not others:
        return out
    h, w = labels.shape[2:]
    src = np.broadcast_to(labels[ed_frame][None], (len(others), n_z, h, w)).reshape(-1, 1, h, w)
    flow = np.asarray(motion[others], dtype=np.float32).reshape(-1, h, w, 2)
    carried = np.rint(warp_array(src, flow, mode="nearest")[:, 0]).astype(np.uint8)
    own = labels[others].reshape(-1, h, w)
    worst = np.zeros(own.shape[0])
    for c in range(1, n_cls + 1):
        a, b = own == c, carried == c
        total = _per_slice(a) + _per_slice(b)
        dice = np.where(total > 0, 2.0 * _per_slice(a & b) / np.maximum(total, 1), 1.0)
        worst = np.maximum(worst, 1.0 - dice)
    out[others] = worst.reshape(len(others), n_z)
    return out


def _crop_box(labels: np.ndarray, margin: int = 4) -> tuple[slice, slice]:
    fg = (labels > 0).any((0, 1))
    if not fg.any():
        return slice(0, 1), slice(0, 1)
    ys, xs = np.nonzero(fg)
    h, w = fg.shape
    return (slice(max(ys.min() - margin, 0), min(ys.max() + margin + 1, h)),
            slice(max(xs.min() - margin, 0), min(xs.max() + margin + 1, w)))


def features(labels: np.ndarray, motion: np.ndarray | None, evidence: np.ndarray | None, ed_frame: int,
             pixel_mm: float = 1.0, n_classes: int = 4) -> np.ndarray:
    """The features :data:`FEATURES` of every (frame, slice) → ``(T, Z, len(FEATURES))``.

    Args:
        labels: ``(T, Z, Y, X)`` integer labels; motion: ``(T, Z, Y, X, 2)`` or None (no motion term);
        evidence: ``(T, Z, n_evidence)`` from :func:`softmax_evidence`, in mm², or None (no uncertainty term);
        ed_frame: the frame the motion refers to; pixel_mm: in-plane pixel size of the labels (mm);
        n_classes: classes of the model, background included.
    """
    labels = np.asarray(labels)
    if labels.ndim != 4:
        raise InputError(f"QC needs labels (T, Z, Y, X); got shape {labels.shape}.")
    n_t, n_z = labels.shape[:2]
    if not 0 <= int(ed_frame) < n_t:
        raise InputError(f"QC: ED frame {ed_frame} is out of range 0–{n_t - 1}.")
    if motion is not None and tuple(np.shape(motion)) != labels.shape + (2,):
        raise InputError(f"QC needs motion (T, Z, Y, X, 2) on the labels' grid {labels.shape}; got "
                         f"{np.shape(motion)}. Pass the motion of the same prediction.")
    n_cls = n_classes - 1
    ys, xs = _crop_box(labels)
    lab = labels[:, :, ys, xs]
    f = np.zeros((n_t, n_z, len(FEATURES)))
    col = {k: i for i, k in enumerate(FEATURES)}
    checks = anatomy(lab.reshape(-1, *lab.shape[2:]), n_cls, pixel_mm)
    areas = checks[0].reshape(n_t, n_z, n_cls) * pixel_mm ** 2  # mm²
    for name, v in zip(("no_ring", "holes", "thickness_off"), checks[1:]):
        f[..., col[name]] = v.reshape(n_t, n_z)
    if evidence is not None:
        ev = np.asarray(evidence, dtype=np.float64)
        if ev.shape[:2] != (n_t, n_z) or ev.shape[2] != n_evidence(n_classes):
            raise InputError(f"QC evidence {ev.shape} does not match the labels' (T, Z) = {(n_t, n_z)} and "
                             f"{n_classes} classes; pass the evidence of the same prediction.")
        f[..., 0:3] = uncertainty_features(ev)
        soft = ev[..., 0:EVIDENCE_PER_CLASS * n_cls:EVIDENCE_PER_CLASS]  # Σ p_c, mm²
        f[..., col["lost_mass"]] = np.log1p(np.where(areas > 0, 0.0, soft).max(2))
        f[..., col["volume_gap"]] = (np.abs(soft - areas) / (soft + areas + 10.0)).max(2)
    if motion is not None:
        f[..., col["carried_gap"]] = carried_gap(lab, np.asarray(motion)[:, :, ys, xs], int(ed_frame), n_cls)
    _neighbour_features(areas, f, col)
    _position_features(areas, f, col, int(ed_frame))
    return f


def _neighbour_features(areas: np.ndarray, f: np.ndarray, col: dict[str, int]) -> None:
    """z_jump, z_appear, t_jump, tiny from class areas ``(T, Z, C)`` mm² (written into ``f``)."""
    n_t, n_z = areas.shape[:2]
    present = areas > 0
    for t, z in np.ndindex(n_t, n_z):
        nz = [areas[t, k] for k in (z - 1, z + 1) if 0 <= k < n_z]
        a = areas[t, z]
        both = [np.where((o > 0) & (a > 0), np.abs(np.log(np.maximum(a, 1e-6) / np.maximum(o, 1e-6))), 0.0)
                for o in nz]
        f[t, z, col["z_jump"]] = np.max(both) if both else 0.0
        f[t, z, col["z_vanish"]] = np.log1p(np.max([np.where(a > 0, 0.0, o) for o in nz])) if nz else 0.0
        if a.size >= 3:
            f[t, z, col["rv_no_lv"]] = max(0.0, float(np.log1p(a[2]) - np.log1p(a[0] + a[1])))
        nt = [areas[k % n_t, z] for k in (t - 1, t + 1) if n_t > 1 and k % n_t != t]
        f[t, z, col["t_jump"]] = _log_jump(areas[t, z], nt).max()
        a = areas[t, z][present[t, z]]
        f[t, z, col["tiny"]] = 1.0 / (1.0 + a.min() / 100.0) if a.size else 0.0


def _position_features(areas: np.ndarray, f: np.ndarray, col: dict[str, int], ed: int) -> None:
    """edge_base, edge_apex, base_systole, small from class areas ``(T, Z, C)`` (written into ``f``). The
    apex is the end of the stack whose half holds the smaller LV (classes 1 and 2)."""
    n_t, n_z = areas.shape[:2]
    any_lab = (areas > 0).any(2)  # (T, Z)
    heart = areas[..., :2].sum(2)
    lv = areas[..., 0].sum(1)
    contraction = 1.0 - lv / max(lv.max(), 1e-6)
    for t in range(n_t):
        zs = np.nonzero(any_lab[t] | any_lab[ed])[0]
        if zs.size == 0:
            continue
        lo, hi = int(zs.min()), int(zs.max())
        mid = (lo + hi) / 2.0
        first, last = heart[ed, lo:int(np.floor(mid)) + 1].mean(), heart[ed, int(np.ceil(mid)):hi + 1].mean()
        base, apex = (lo, hi) if first >= last else (hi, lo)
        for z in range(n_z):
            f[t, z, col["edge_base"]] = 1.0 / (1.0 + abs(z - base)) if lo <= z <= hi else 0.0
            f[t, z, col["edge_apex"]] = 1.0 / (1.0 + abs(z - apex)) if lo <= z <= hi else 0.0
            f[t, z, col["base_systole"]] = f[t, z, col["edge_base"]] * contraction[t]
        top = heart[t].max()
        f[t, :, col["small"]] = np.where(any_lab[t], 1.0 - heart[t] / max(top, 1e-6), 0.0)


def score_features(feats: np.ndarray) -> np.ndarray:
    """The fitted model's log-odds that the labels are wrong, ``(…, len(FEATURES))`` features → ``(…)``."""
    return qc_boost.predict(MODEL, np.asarray(feats, dtype=np.float64))


def flag(scores: np.ndarray, threshold: float | None = None, max_fraction: float | None = None) -> np.ndarray:
    """``(T, Z)`` bool: score ≥ ``threshold`` (default :data:`THRESHOLD`) and among the worst
    ``max_fraction`` (default :data:`MAX_FLAGGED_FRACTION`) of this cine's (frame, slice) pairs: an
    annotator's time is the scarce resource."""
    s = np.asarray(scores, dtype=np.float64)
    thr = float(THRESHOLD if threshold is None else threshold)
    frac = float(MAX_FLAGGED_FRACTION if max_fraction is None else max_fraction)
    out = s >= thr
    cap = int(np.ceil(frac * s.size))
    if out.sum() > cap:
        keep = np.zeros(s.size, bool)
        keep[np.argsort(-s.ravel(), kind="stable")[:cap]] = True
        out &= keep.reshape(s.shape)
    return out


def assess(labels: np.ndarray, motion: np.ndarray | None, evidence: np.ndarray | None, ed_frame: int,
           pixel_mm: float = 1.0, n_classes: int = 4, threshold: float | None = None) -> QCResult:
    """Score every (frame, slice) of a prediction (see :func:`features`) and :func:`flag` the worst."""
    feats = features(labels, motion, evidence, ed_frame, pixel_mm, n_classes)
    scores = score_features(feats)
    from .qc_reasons import reasons

    thr = float(THRESHOLD if threshold is None else threshold)
    flagged = flag(scores, thr)
    ev = None if evidence is None else np.asarray(evidence)
    pairs = [(int(t), int(z)) for t, z in zip(*np.nonzero(flagged))]
    why = dict(zip(pairs, reasons(MODEL, feats[flagged], FEATURES, evidence=None if ev is None else ev[flagged])))
    return QCResult(scores=scores, flagged=flagged, threshold=thr, features=feats, evidence=ev, reasons=why)
