"""Why quality control flagged a slice (no Qt, no napari).

Every QC feature (:data:`.qc.FEATURES`) is built so that 0 is its clean value and more is more suspicious,
and the fitted trees are monotone in every feature. A feature's share of a slice's score is therefore the
drop of the score when that feature alone is set back to 0 (≥ 0, in logits). :func:`reasons` names the
largest shares in words an annotator can act on ("the RV vanishes from the neighbouring slice"), for the
Corrections panel's list of slices to check and for ``qc.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import qc_boost

#: a short phrase per feature (see :data:`.qc.FEATURES` for how each is computed)
REASON_TEXT: dict[str, str] = {
    "soft_gap": "the model is unsure of a structure's extent",
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
    "lost_mass": "a structure the model half-sees is not labelled",
    "volume_gap": "labels and probabilities differ in size",
    "rv_no_lv": "right ventricle without a left ventricle",
}


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


def reasons(model: dict[str, Any], feats: np.ndarray, names: tuple[str, ...] | list[str], top: int = 2,
            min_share: float = 0.25) -> list[str]:
    """One phrase per row of ``feats`` ``(n, d)``: the ``top`` features with the largest shares of the score,
    those of at least ``min_share`` of the largest, joined by "; " ("" where no feature raises the score)."""
    c = contributions(model, feats)
    out = []
    for row in c:
        order = np.argsort(-row, kind="stable")[:top]
        best = row[order[0]] if len(order) else 0.0
        picked = [names[j] for j in order if row[j] > 0 and row[j] >= min_share * best]
        out.append("; ".join(REASON_TEXT.get(k, k) for k in picked))
    return out
