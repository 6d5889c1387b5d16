"""Quality control (``napari_cardiac_motion.qc``): the wrong slice ranks worst, qc.json's schema, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import tiny_net
from napari_cardiac_motion import qc
from napari_cardiac_motion.errors import InputError
from napari_cardiac_motion.inference import predict_cine

T, Z, H, W = 4, 7, 48, 48
BAD = (2, 3)  # the deliberately wrong (frame, slice), mid-stack


def _heart(t: int, z: int) -> np.ndarray:
    """A plausible short-axis slice: LV blood pool in a myocardial ring, RV beside it; smaller to the apex."""
    yy, xx = np.mgrid[:H, :W]
    r = 7.0 - 0.4 * z - 0.5 * np.cos(np.pi * t / T)
    d = np.hypot(yy - 24, xx - 22)
    lab = np.zeros((H, W), np.uint8)
    lab[(np.hypot(yy - 24, xx - 36) < r + 1) & (xx > 31)] = 3
    lab[d < r + 4] = 2
    lab[d < r] = 1
    return lab


def _case():
    """Labels with one wrong slice (a blood pool without its ring, a hole, an RV that appears from nowhere)
    and soft-max evidence as the segmenting pass gathers it (confident except on the wrong slice)."""
    labels = np.stack([np.stack([_heart(t, z) for z in range(Z)]) for t in range(T)])
    wrong = labels[BAD].copy()
    wrong[wrong == 2] = 0
    wrong[22:26, 20:24] = 0
    wrong[2:12, 2:40] = 3
    labels[BAD] = wrong
    onehot = np.eye(4, dtype=np.float32)[labels]  # (T, Z, H, W, 4)
    probs = 0.02 + 0.92 * onehot
    probs[BAD] = 0.25 + 0.2 * onehot[BAD]  # unsure
    probs /= probs.sum(-1, keepdims=True)
    p = torch.from_numpy(probs.reshape(T * Z, H, W, 4)).permute(0, 3, 1, 2)
    evidence = qc.softmax_evidence(p).numpy().reshape(T, Z, -1)
    return labels, np.zeros(labels.shape + (2,), np.float32), evidence


def test_wrong_slice_ranks_worst():
    labels, motion, evidence = _case()
    res = qc.assess(labels, motion, evidence, ed_frame=0, pixel_mm=1.5)
    assert res.scores.shape == (T, Z) and res.flagged.shape == (T, Z)
    assert np.isfinite(res.scores).all()
    t, z, s = res.worst(flagged_only=False)[0]
    assert (t, z) == BAD
    assert res.flagged[BAD]
    assert res.flagged.sum() < res.flagged.size / 4  # a few, not everything
    # the anatomical checks on their own point at it: no ring, a hole, an RV jumping between slices and frames
    f = qc.features(labels, None, None, ed_frame=0, pixel_mm=1.5)
    for name in ("no_ring", "holes", "z_jump", "t_jump"):
        col = f[..., qc.FEATURES.index(name)]
        assert col[BAD] == col.max() > 0, name


def test_motion_disagreement_is_seen():
    """ED labels carried by a motion that does not fit frame t: carried_gap is high there only."""
    labels, motion, _ = _case()
    labels[:] = labels[0]
    labels[BAD] = labels[0, 3]
    motion[1, 3, ..., 1] = 0.0
    motion[BAD][..., 1] = 9.0  # frame 2 of slice 3 claims a 9-pixel shift its labels do not show
    f = qc.features(labels, motion, None, ed_frame=0, pixel_mm=1.5)
    gap = f[..., qc.FEATURES.index("carried_gap")]
    assert gap[BAD] > 0.3
    assert np.delete(gap.ravel(), np.ravel_multi_index(BAD, (T, Z))).max() < 0.05


def test_qc_json_schema_and_summary():
    labels, motion, evidence = _case()
    res = qc.assess(labels, motion, evidence, ed_frame=0, pixel_mm=1.5)
    doc = json.loads(json.dumps(res.to_json()))
    assert set(doc) >= {"slices", "threshold", "flagged"}
    assert len(doc["slices"]) == T * Z
    assert {(e["frame"], e["slice"]) for e in doc["slices"]} == {(t, z) for t in range(T) for z in range(Z)}
    for e in doc["slices"]:
        assert set(e) == {"frame", "slice", "score", "flagged"} | ({"reason"} if e["flagged"] else set())
        assert isinstance(e["flagged"], bool)
        assert e["score"] >= doc["threshold"] - 1e-4 or not e["flagged"]
    scores = [e["score"] for e in doc["slices"]]
    assert scores == sorted(scores, reverse=True)  # worst first
    flags = [e["flagged"] for e in doc["slices"]]
    assert flags == sorted(flags, reverse=True)  # the flagged ones are the worst ones
    assert 1 <= sum(flags) <= np.ceil(doc["max_flagged_fraction"] * T * Z)
    assert (doc["slices"][0]["frame"], doc["slices"][0]["slice"]) == BAD
    summ = res.summary()
    assert summ["flagged"] == doc["flagged"] == sum(e["flagged"] for e in doc["slices"])
    assert summ["worst"] == {"frame": BAD[0], "slice": BAD[1]}
    assert summ["worst_reason"] == doc["slices"][0]["reason"] != ""
    assert summ["worst_score"] == pytest.approx(max(scores), abs=1e-3)


def test_flagged_slices_say_why():
    """The wrong slice's reasons name what is wrong with it (the structure, where the evidence tells); a
    feature set back to 0 never raises the score (monotone trees); a slice with every feature clean gets no
    reason."""
    from napari_cardiac_motion.qc_reasons import REASON_TEXT, STRUCTURE_TEXT, STRUCTURES, contributions, reasons

    labels, motion, evidence = _case()
    res = qc.assess(labels, motion, evidence, ed_frame=0, pixel_mm=1.5)
    why = res.reasons
    assert set(why) == {(t, z) for t, z, _ in res.worst()}
    phrase = {k: {REASON_TEXT[k]} | {STRUCTURE_TEXT[k].format(s) for s in STRUCTURES if k in STRUCTURE_TEXT}
              for k in REASON_TEXT}
    assert why[BAD] and all(any(part in v for v in phrase.values()) for part in why[BAD].split("; "))
    doc = res.to_json()
    assert doc["slices"][0]["reason"] == why[BAD]
    c = contributions(qc.MODEL, res.features.reshape(-1, len(qc.FEATURES)))
    assert (c >= -1e-9).all()
    top = qc.FEATURES[int(np.argmax(c[np.ravel_multi_index(BAD, (T, Z))]))]
    assert why[BAD].split("; ")[0] in phrase[top]
    assert reasons(qc.MODEL, np.zeros((1, len(qc.FEATURES))), qc.FEATURES) == [""]
    # the per-structure checks name the structure the evidence points at: here the RV, the only one unsure
    ev = np.zeros(qc.n_evidence(4))
    ev[6:9] = (200.0, 100.0, 60.0)  # RV: Σp 200 mm², arg-max area 100 mm², agreement 60 mm²
    ev[0:3] = (900.0, 900.0, 890.0)  # LV blood pool: confident
    one = np.zeros((1, len(qc.FEATURES)))
    one[0, qc.FEATURES.index("soft_gap")] = 0.9
    assert reasons(qc.MODEL, one, qc.FEATURES, evidence=ev[None]) == [STRUCTURE_TEXT["soft_gap"].format("RV")]
    assert reasons(qc.MODEL, one, qc.FEATURES) == [REASON_TEXT["soft_gap"]]  # no evidence: no structure named


def test_flag_threshold_and_cap():
    scores = np.arange(40, dtype=float).reshape(4, 10)  # worst: (3, 9)
    assert qc.flag(scores, threshold=35.0, max_fraction=1.0).sum() == 5
    capped = qc.flag(scores, threshold=0.0, max_fraction=0.15)  # at most ⌈15 % of 40⌉ = 6, the worst ones
    assert capped.sum() == 6 and capped[3, 4:].all() and not capped[3, :4].any()
    assert not qc.flag(scores, threshold=100.0).any()


def test_shipped_model_matches_features():
    """The fitted score in qc_model.json names the features qc computes, in the same order, uses none
    beyond them, and carries its threshold and fit note."""
    assert tuple(qc.MODEL["features"]) == qc.FEATURES
    assert qc.MODEL["kind"] == "boosted-trees" and len(qc.MODEL["trees"]) > 0
    used = {f for t in qc.MODEL["trees"] for f in t["feature"] if f >= 0}
    assert used and max(used) < len(qc.FEATURES)
    assert np.isfinite(qc.THRESHOLD) and "training patients" in qc.FIT_NOTE


def test_shipped_score_only_rises_with_each_feature():
    """Every feature is built so that more = more suspicious; the score must never fall when one rises."""
    rng = np.random.default_rng(1)
    base = rng.random((64, len(qc.FEATURES))) * 2.0
    for j in range(len(qc.FEATURES)):
        lo, hi = base.copy(), base.copy()
        hi[:, j] += rng.random(64) * 3.0
        assert (qc.score_features(hi) >= qc.score_features(lo) - 1e-12).all(), qc.FEATURES[j]


def test_bad_input():
    labels, motion, evidence = _case()
    with pytest.raises(InputError, match="labels \\(T, Z, Y, X\\)"):
        qc.assess(labels[0], None, None, ed_frame=0)
    with pytest.raises(InputError, match="ED frame 9 is out of range"):
        qc.assess(labels, None, None, ed_frame=9)
    with pytest.raises(InputError, match="motion"):
        qc.assess(labels, motion[:, :, :10], None, ed_frame=0)
    with pytest.raises(InputError, match="evidence"):
        qc.assess(labels, None, evidence[:, :2], ed_frame=0)


def test_predict_cine_scores_every_slice(tiny_cine):
    torch.manual_seed(0)
    res = predict_cine(tiny_cine, tiny_net(), device="cpu", ed_frame=0)
    n_t, n_z = tiny_cine.shape[:2]
    assert res.qc is not None and res.qc.scores.shape == (n_t, n_z)
    assert res.qc.evidence.shape == (n_t, n_z, qc.n_evidence(4))
    assert (res.qc.evidence >= 0).all()
    assert res.metadata["qc"] == res.qc.summary()
    off = predict_cine(tiny_cine, tiny_net(), device="cpu", ed_frame=0, qc=False)
    assert off.qc is None and off.metadata["qc"] is None
