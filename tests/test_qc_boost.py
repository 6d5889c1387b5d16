"""The QC score's gradient-boosted trees (``napari_cardiac_motion.qc_boost``): they learn, stay monotone, and
round-trip through JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cardiac_motion import qc_boost


def _data(n: int = 1500, seed: int = 0):
    """Labels from an interaction a linear score cannot express: wrong when feature 0 AND feature 1 are high."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4))
    y = ((x[:, 0] > 0.6) & (x[:, 1] > 0.6)).astype(float)
    flip = rng.random(n) < 0.05
    y[flip] = 1 - y[flip]
    return x, y


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    pos, neg = score[y > 0], score[y == 0]
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


def test_learns_an_interaction_on_held_out_rows():
    x, y = _data()
    m = qc_boost.fit(x[:1000], y[:1000], qc_boost.BoostSettings(trees=60))
    s = qc_boost.predict(m, x[1000:])
    assert _auc(s, y[1000:]) > 0.85  # 5 % of the labels are flipped: about 0.9 is the ceiling
    # the base score alone (no trees) knows nothing
    assert _auc(np.full(500, m["base"]), y[1000:]) == pytest.approx(0.5)


def test_monotone_in_every_feature():
    rng = np.random.default_rng(3)
    x = rng.random((1200, 3))
    y = (rng.random(1200) < 1 / (1 + np.exp(-(4 * x[:, 0] - 3 * x[:, 1] + np.sin(8 * x[:, 2]))))).astype(float)
    m = qc_boost.fit(x, y, qc_boost.BoostSettings(trees=80))
    probe = x[:100].copy()
    for j in range(3):
        curve = []
        for v in np.linspace(0, 1, 21):
            probe[:, j] = v
            curve.append(qc_boost.predict(m, probe))
        assert (np.diff(np.array(curve), axis=0) >= -1e-12).all()
    # without the constraint, feature 1 (which lowers the risk) makes the score fall somewhere
    free = qc_boost.fit(x, y, qc_boost.BoostSettings(trees=80, monotone=False))
    probe = x[:100].copy()
    curve = []
    for v in np.linspace(0, 1, 21):
        probe[:, 1] = v
        curve.append(qc_boost.predict(free, probe))
    assert (np.diff(np.array(curve), axis=0) < 0).any()


def test_json_round_trip_and_shapes():
    x, y = _data(400)
    m = qc_boost.fit(x, y, qc_boost.BoostSettings(trees=10), features=("a", "b", "c", "d"))
    back = json.loads(json.dumps(m))
    assert back["features"] == ["a", "b", "c", "d"]
    grid = x[:24].reshape(2, 3, 4, 4)
    assert qc_boost.predict(back, grid).shape == (2, 3, 4)
    np.testing.assert_allclose(qc_boost.predict(back, grid).ravel(), qc_boost.predict(m, x[:24]))


def test_bad_input():
    with pytest.raises(ValueError, match="x \\(n, d\\) and y \\(n,\\)"):
        qc_boost.fit(np.zeros((5, 2)), np.zeros(4))
