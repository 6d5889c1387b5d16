"""Why quality control flagged a slice (no Qt, no napari).

Every QC feature (:data:`.qc.FEATURES`) is built so that 0 is its clean value and more is more suspicious,
and the fitted trees are monotone in every feature. A feature's share of a slice's score is therefore the
drop of the score when that feature alone is set back to 0 (≥ 0, in logits). :func:`reasons` names the
largest shares in words an annotator can act on ("unsure of the RV's outline; a very small RV"), for the
Corrections panel's list of slices to check, ``qc.json`` and the cohort table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import qc_boost
from .qc import EVIDENCE_EXTRA, EVIDENCE_PER_CLASS, class_soft_gaps

#: a short phrase per feature (see :data:`.qc.FEATURES` for how each is computed)
REASON_TEXT: dict[str, str] = {
    "soft_gap": "unsure of a structure's outline",
    "impurity": "uncertain boundaries",
    "unsure": "a large uncertain area",
    "carried_gap": "differs from the ED labels carried by the motion",
    "no_ring": "blood pool not ringed by myocardium",
    "holes": "holes or stray pieces",
    "thickness_off": "implausible wall thickness",
    "z_jump": "area jumps from the next slice",
    "z_vanish": "a structure missing here but in the next slice",
    "t_jump": "area jumps from the next frame",
    "edge_base": "basal slice",
    "edge_apex": "apical slice",
    "base_systole": "basal slice in systole",
    "small": "small apical section",
    "tiny": "a very small structure",
    "lost_mass": "a half-seen structure left unlabelled",
    "volume_gap": "a structure's size is uncertain",
    "rv_no_lv": "right ventricle without a left ventricle",
}
#: the same phrases naming the structure, where the soft-max evidence tells which one it is
STRUCTURE_TEXT: dict[str, str] = {
    "soft_gap": "unsure of the {}'s outline",
    "tiny": "a very small {}",
    "lost_mass": "a half-seen {} left unlabelled",
    "volume_gap": "the {}'s size is uncertain",
}
#: the MR model's structures (classes 1, 2, 3), as the reasons name them
STRUCTURES = ("LV blood pool", "myocardium", "RV")


def _structure(feature: str, ev: np.ndarray) -> int | None:
    """The class (0-based foreground index) a per-class feature's maximum comes from, from one row of soft-max
    evidence (:func:`.qc.softmax_evidence`: per class Σ p, area of the arg-max, agreement; mm²), or None."""
    n = min(len(STRUCTURES), (len(ev) - EVIDENCE_EXTRA) // EVIDENCE_PER_CLASS)
    soft, area = (np.array([ev[EVIDENCE_PER_CLASS * k + j] for k in range(n)], dtype=np.float64) for j in (0, 1))
    present = (area > 0) | (soft >= 10.0)
    if feature == "soft_gap" and present.any():
        return int(np.argmax(np.where(present, class_soft_gaps(ev)[:n], -1.0)))
    if feature == "volume_gap" and present.any():
        return int(np.argmax(np.abs(soft - area) / (soft + area + 10.0)))
    if feature == "tiny" and (area > 0).any():
        return int(np.argmin(np.where(area > 0, area, np.inf)))
    if feature == "lost_mass" and ((area == 0) & (soft > 0)).any():
        return int(np.argmax(np.where(area == 0, soft, -1.0)))
    return None


def contributions(model: dict[str, Any], feats: np.ndarray) -> np.ndarray:
    """``(n, d)`` features → ``(n, d)`` score drops (logits, ≥ 0 for a monotone model) when each feature
    alone is set to 0."""
    x = np.asarray(feats, dtype=np.float64).reshape(-1, np.shape(feats)[-1])
    n, d = x.shape
    if n == 0:
        return np.zeros((0, d))
    base = qc_boost.predict(model, x)
    off = np.repeat(x[:, None, :], d, axis=1)  # (n, d, d): row j has feature j set to 0
    off[:, np.arange(d), np.arange(d)] = 0.0
    return base[:, None] - qc_boost.predict(model, off.reshape(n * d, d)).reshape(n, d)


def _phrase(feature: str, ev: np.ndarray | None) -> str:
    k = _structure(feature, ev) if ev is not None and feature in STRUCTURE_TEXT else None
    return STRUCTURE_TEXT[feature].format(STRUCTURES[k]) if k is not None else REASON_TEXT.get(feature, feature)


def reasons(model: dict[str, Any], feats: np.ndarray, names: tuple[str, ...] | list[str], top: int = 2,
            min_share: float = 0.25, evidence: np.ndarray | None = None) -> list[str]:
    """One phrase per row of ``feats`` ``(n, d)``: the ``top`` features with the largest shares of the score,
    those of at least ``min_share`` of the largest, joined by "; " ("" where no feature raises the score).
    With the rows' soft-max ``evidence`` ``(n, n_evidence)`` the per-structure checks name the structure."""
    c = contributions(model, feats)
    out = []
    for i, row in enumerate(c):
        order = np.argsort(-row, kind="stable")[:top]
        best = row[order[0]] if len(order) else 0.0
        picked = [names[j] for j in order if row[j] > 0 and row[j] >= min_share * best]
        ev = None if evidence is None else np.asarray(evidence[i], dtype=np.float64)
        out.append("; ".join(_phrase(k, ev) for k in picked))
    return out
