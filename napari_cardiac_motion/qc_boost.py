"""Gradient-boosted decision trees for the QC score (numpy only; no Qt, no napari).

A small, dependency-free implementation of logistic gradient boosting (Friedman 2001) with shallow
regression trees fitted by exact split search and Newton leaf values. It is what
:func:`napari_cardiac_motion.qc.score_features` uses when the package holds a fitted model
(``qc_model.json``, written by ``benchmarks/qc_benchmark.py --fit --write``): trees see interactions the
logistic score cannot (e.g. "an RV slice that shrank a lot *and* lies at the base").

A model is a plain dict (JSON-ready): ``{"kind": "boosted-trees", "base": b, "rate": η, "features": [...],
"trees": [{"feature": [...], "threshold": [...], "left": [...], "right": [...], "value": [...]}, ...]}``;
node 0 is a tree's root, a leaf has feature −1, and the score of a sample is
``base + η · Σ_trees value(leaf)`` (a logit: higher = more likely wrong).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class BoostSettings:
    """Fit settings: trees, their depth, the learning rate η, the smallest leaf (samples), the L2 of
    the leaf values, the fraction of samples each tree sees (row subsampling, seeded), and whether the
    score may only rise with every feature (``monotone``: every QC feature is built so that more means
    more suspicious; the constraint keeps a slice whose checks all fire above a clean one, even where the
    training data hold no such slice)."""

    trees: int = 150
    depth: int = 3
    rate: float = 0.05
    min_leaf: int = 10
    l2: float = 1.0
    subsample: float = 0.8
    seed: int = 0
    monotone: bool = True


def _best_split(x: np.ndarray, g: np.ndarray, h: np.ndarray, min_leaf: int, l2: float, monotone: bool
                ) -> tuple[int, float, float] | None:
    """(feature, threshold, gain) of the split of rows ``x`` ``(n, d)`` that most lowers the Newton
    objective of gradients ``g`` and hessians ``h``, or None when no split leaves ``min_leaf`` each side
    (with ``monotone``: nor gives the upper side the higher value)."""
    n, d = x.shape
    if n < 2 * min_leaf:
        return None
    gs, hs = g.sum(), h.sum()
    parent = gs * gs / (hs + l2)
    best: tuple[int, float, float] | None = None
    for j in range(d):
        order = np.argsort(x[:, j], kind="stable")
        xs = x[order, j]
        gl = np.cumsum(g[order])[:-1]
        hl = np.cumsum(h[order])[:-1]
        k = np.arange(1, n)
        ok = (k >= min_leaf) & (n - k >= min_leaf) & (xs[1:] > xs[:-1])
        if monotone:
            ok &= -gl / (hl + l2) <= -(gs - gl) / (hs - hl + l2)
        if not ok.any():
            continue
        gain = gl * gl / (hl + l2) + (gs - gl) ** 2 / (hs - hl + l2) - parent
        gain = np.where(ok, gain, -np.inf)
        i = int(np.argmax(gain))
        if best is None or gain[i] > best[2]:
            best = (j, float(0.5 * (xs[i] + xs[i + 1])), float(gain[i]))
    return best if best is not None and best[2] > 1e-12 else None


def _fit_tree(x: np.ndarray, g: np.ndarray, h: np.ndarray, s: BoostSettings) -> dict[str, list]:
    """One regression tree of depth ≤ ``s.depth`` on gradients/hessians (Newton leaf values)."""
    tree: dict[str, list] = {"feature": [], "threshold": [], "left": [], "right": [], "value": []}

    def value(rows: np.ndarray, lo: float, hi: float) -> float:
        return float(np.clip(-g[rows].sum() / (h[rows].sum() + s.l2), lo, hi))

    def node(rows: np.ndarray, depth: int, lo: float, hi: float) -> int:
        i = len(tree["feature"])
        for k in tree:
            tree[k].append(-1 if k in ("feature", "left", "right") else 0.0)
        tree["value"][i] = value(rows, lo, hi)
        split = _best_split(x[rows], g[rows], h[rows], s.min_leaf, s.l2, s.monotone) if depth < s.depth else None
        if split is None:
            return i
        j, thr, _ = split
        go_left = x[rows, j] <= thr
        # monotone: the lower side's values stay below the upper side's (bounds passed down the tree)
        mid = 0.5 * (value(rows[go_left], lo, hi) + value(rows[~go_left], lo, hi)) if s.monotone else None
        tree["feature"][i], tree["threshold"][i] = j, thr
        tree["left"][i] = node(rows[go_left], depth + 1, lo, hi if mid is None else mid)
        tree["right"][i] = node(rows[~go_left], depth + 1, lo if mid is None else mid, hi)
        return i

    node(np.arange(len(g)), 0, -np.inf, np.inf)
    return tree


def fit(x: np.ndarray, y: np.ndarray, settings: BoostSettings | None = None,
        features: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Fit logistic gradient boosting on ``x`` ``(n, d)`` and 0/1 targets ``y`` ``(n,)`` → a model dict."""
    s = settings or BoostSettings()
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"fit needs x (n, d) and y (n,); got {x.shape} and {y.shape}")
    p0 = float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
    base = float(np.log(p0 / (1 - p0)))
    margin = np.full(len(y), base)
    rng = np.random.default_rng(s.seed)
    trees = []
    for _ in range(s.trees):
        p = 1.0 / (1.0 + np.exp(-margin))
        g, h = p - y, np.maximum(p * (1 - p), 1e-6)
        rows = np.nonzero(rng.random(len(y)) < s.subsample)[0] if s.subsample < 1 else np.arange(len(y))
        t = _fit_tree(x[rows], g[rows], h[rows], s)
        trees.append(t)
        margin += s.rate * _tree_values(t, x)
    return {"kind": "boosted-trees", "base": base, "rate": s.rate, "features": list(features),
            "settings": {k: getattr(s, k) for k in s.__dataclass_fields__}, "trees": trees}


def _tree_values(tree: dict[str, list], x: np.ndarray) -> np.ndarray:
    """Leaf value of every row of ``x`` ``(n, d)`` in one tree (vectorised descent)."""
    feat = np.asarray(tree["feature"], dtype=np.int64)
    thr = np.asarray(tree["threshold"], dtype=np.float64)
    left = np.asarray(tree["left"], dtype=np.int64)
    right = np.asarray(tree["right"], dtype=np.int64)
    at = np.zeros(len(x), dtype=np.int64)
    for _ in range(len(feat)):
        f = feat[at]
        inner = f >= 0
        if not inner.any():
            break
        rows = np.nonzero(inner)[0]
        go_left = x[rows, f[rows]] <= thr[at[rows]]
        at[rows] = np.where(go_left, left[at[rows]], right[at[rows]])
    return np.asarray(tree["value"], dtype=np.float64)[at]


def predict(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Scores (logits) of the rows of ``x`` ``(…, d)`` → ``(…)``."""
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1, x.shape[-1])
    out = np.full(len(flat), float(model["base"]))
    for t in model["trees"]:
        out += float(model["rate"]) * _tree_values(t, flat)
    return out.reshape(x.shape[:-1])
