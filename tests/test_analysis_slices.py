"""The slices clinicians count (analysis/slices.py) on small synthetic label stacks."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_cardiac_motion.analysis import compute_measurements
from napari_cardiac_motion.analysis.report import export_all
from napari_cardiac_motion.analysis.slices import (SliceRules, apply_overrides, decide_slices, excluded_slices,
                                                   parse_overrides)
from napari_cardiac_motion.conventions import LV_BLOOD_POOL, LV_MYOCARDIUM, RV_BLOOD_POOL
from napari_cardiac_motion.errors import InputError

SPACING = (10.0, 1.0, 1.0)  # one voxel = 0.01 ml
SHAPE = (48, 48)
CENTRE = (24.0, 20.0)


def _disc(radius: float, centre=CENTRE) -> np.ndarray:
    yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _slice(lv_r: float, ring: float = 1.0, rv: bool = True) -> np.ndarray:
    """One slice: LV blood pool of radius ``lv_r``, a wall 3 px thick covering the fraction ``ring`` of its
    circumference (from angle 0), an RV blob to its right touching the wall."""
    out = np.zeros(SHAPE, np.uint8)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    angle = (np.arctan2(yy - CENTRE[0], xx - CENTRE[1]) + 2 * np.pi) % (2 * np.pi)
    wall = _disc(lv_r + 3) & ~_disc(lv_r) & (angle < 2 * np.pi * ring)
    out[wall] = LV_MYOCARDIUM
    out[_disc(lv_r)] = LV_BLOOD_POOL
    if rv:
        out[_disc(6, (24.0, CENTRE[1] + lv_r + 9)) & (out == 0)] = RV_BLOOD_POOL
    return out


def _stack(basal_ring: float) -> np.ndarray:
    """(T=2: ED, ES; Z=4; 48, 48): slice 0 is basal with a wall covering ``basal_ring`` of its cavity at ED
    and ES; the cavity shrinks from ED to ES and from base to apex."""
    lab = np.zeros((2, 4, *SHAPE), np.uint8)
    for t, scale in enumerate((1.0, 0.7)):
        lab[t, 0] = _slice(10 * scale, basal_ring)
        for z, r in zip(range(1, 4), (10, 8, 5)):
            lab[t, z] = _slice(r * scale)
    return lab


def _decision(decisions, frame, z, structure):
    return next(d for d in decisions if d.frame == frame and d.slice == z and d.structure == structure)


@pytest.mark.parametrize("ring, counted", [(0.3, False), (0.7, True)])
def test_basal_slice_counts_with_half_a_ring(ring, counted):
    lab = _stack(ring)
    decisions = decide_slices(lab, SPACING, 0, 1)
    for frame in (0, 1):
        d = _decision(decisions, frame, 0, "LV")
        assert d.included is counted
        assert ("< 0.5" in d.reason) is (not counted) and "myocardial ring" in d.reason
        assert d.volume_ml == pytest.approx((lab[frame, 0] == LV_BLOOD_POOL).sum() * 0.01)
        assert _decision(decisions, frame, 1, "LV").included  # the next slice is ventricle
    m = compute_measurements(lab, SPACING, ed_frame=0, es_frame=1)
    every = compute_measurements(lab, SPACING, ed_frame=0, es_frame=1, slice_rules=SliceRules.none())
    basal_ed = (lab[0, 0] == LV_BLOOD_POOL).sum() * 0.01
    basal_myo = (lab[0, 0] == LV_MYOCARDIUM).sum() * 0.01 * 1.05
    assert every["lv_edv_ml"] == pytest.approx((lab[0] == LV_BLOOD_POOL).sum() * 0.01)
    assert m["lv_edv_ml"] == pytest.approx(every["lv_edv_ml"] - (0 if counted else basal_ed))
    assert m["lv_mass_g"] == pytest.approx(every["lv_mass_g"] - (0 if counted else basal_myo))
    # the curves stay the labelled volume of every slice
    assert m.lv_volume_ml[0] == pytest.approx(every["lv_edv_ml"])


def test_es_cavity_larger_than_at_ed_is_atrium():
    """The base descends in systole: a basal ES slice whose cavity is larger than at ED does not count."""
    lab = _stack(1.0)
    lab[1, 0] = _slice(12, 1.0)  # ES basal slice: 1.4 times the cavity at ED (radius 10)
    d = _decision(decide_slices(lab, SPACING, 0, 1), 1, 0, "LV")
    assert not d.included and "at ED" in d.reason and "descended" in d.reason
    assert _decision(decide_slices(lab, SPACING, 0, 1, rules=SliceRules(lv_es_growth=False)), 1, 0, "LV").included


def test_rv_counts_only_beside_lv_myocardium():
    lab = _stack(1.0)
    lab[:, 0] = 0
    lab[:, 0][:, _disc(7, (24.0, 36.0))] = RV_BLOOD_POOL  # RV above the LV base: no LV myocardium there
    decisions = decide_slices(lab, SPACING, 0, 1)
    d = _decision(decisions, 0, 0, "RV")
    assert not d.included and "no LV myocardium" in d.reason
    assert _decision(decisions, 0, 1, "RV").included
    assert excluded_slices(decisions, 0, "RV") == [0]
    m = compute_measurements(lab, SPACING, ed_frame=0, es_frame=1)
    assert m["rv_edv_ml"] == pytest.approx((lab[0, 1:] == RV_BLOOD_POOL).sum() * 0.01)


def test_es_basal_rv_much_smaller_than_at_ed_is_the_valve_plane():
    """The base descends in systole: the most basal ES RV slice with less than 0.6 of its ED RV blood pool
    does not count; the next slice does, an RV seen in one slice only always counts, and so does ED."""
    lab = _stack(1.0)
    rv_es = lab[1, 0] == RV_BLOOD_POOL
    ys, xs = np.nonzero(rv_es)
    lab[1, 0][rv_es & ~_disc(3, (float(ys.mean()), float(xs.mean())))] = 0  # ES: a small remnant of the ED RV
    ratio = (lab[1, 0] == RV_BLOOD_POOL).sum() / (lab[0, 0] == RV_BLOOD_POOL).sum()
    assert 0 < ratio < 0.6
    decisions = decide_slices(lab, SPACING, 0, 1)
    d = _decision(decisions, 1, 0, "RV")
    assert not d.included and "descended" in d.reason and "at ED" in d.reason
    assert _decision(decisions, 1, 1, "RV").included and _decision(decisions, 0, 0, "RV").included
    m = compute_measurements(lab, SPACING, ed_frame=0, es_frame=1)
    assert m["rv_esv_ml"] == pytest.approx((lab[1, 1:] == RV_BLOOD_POOL).sum() * 0.01)
    off = decide_slices(lab, SPACING, 0, 1, rules=SliceRules(rv_es_shrink=False))
    assert _decision(off, 1, 0, "RV").included
    only = lab.copy()
    only[:, 1:][only[:, 1:] == RV_BLOOD_POOL] = 0  # the RV in the basal slice only: never emptied
    assert _decision(decide_slices(only, SPACING, 0, 1), 1, 0, "RV").included


def test_base_at_the_end_of_the_stack():
    lab = _stack(0.3)[:, ::-1].copy()  # apex first: the base is the last slice
    decisions = decide_slices(lab, SPACING, 0, 1)
    assert not _decision(decisions, 0, 3, "LV").included and _decision(decisions, 0, 0, "LV").included


def _thick_base_stack() -> np.ndarray:
    """(T=2, Z=5): the base (slice 0) has the widest LV but less cavity than the slices near the apex (a
    thick basal wall, as in ACDC's patient047); the ES basal slice's blood pool has a wall on 30 % only."""
    lab = np.zeros((2, 5, *SHAPE), np.uint8)
    for t, scale in enumerate((1.0, 0.8)):
        for z, (cav, wall) in enumerate(((6, 9), (6, 7), (7, 4), (7, 3), (6, 2))):
            yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1]]
            ring = _disc(cav * scale + wall) & ~_disc(cav * scale)
            if t == 1 and z == 0:
                ring &= np.arctan2(yy - CENTRE[0], xx - CENTRE[1]) % (2 * np.pi) < 0.6 * np.pi
            lab[t, z][ring] = LV_MYOCARDIUM
            lab[t, z][_disc(cav * scale)] = LV_BLOOD_POOL
    return lab


@pytest.mark.parametrize("flip", [False, True])
def test_one_base_rule_for_slices_levels_and_clean_up(flip):
    from napari_cardiac_motion.analysis.strain import slice_levels
    from napari_cardiac_motion.base_end import base_is_first
    from napari_cardiac_motion.postprocess import clean_labels

    lab = _thick_base_stack()
    base, apex = 0, 4
    if flip:
        lab, base, apex = lab[:, ::-1].copy(), 4, 0
    lv_area = (lab[0] == LV_BLOOD_POOL).reshape(5, -1).sum(1)
    assert lv_area[apex] <= lv_area[2]  # the cavity alone would point at the wrong end
    assert base_is_first(np.isin(lab[0], [LV_BLOOD_POOL, LV_MYOCARDIUM]).reshape(5, -1).sum(1)) == (not flip)
    assert slice_levels(lab[0])[base] == 0 and slice_levels(lab[0])[apex] == 2
    decisions = decide_slices(lab, SPACING, 0, 1)
    assert not _decision(decisions, 1, base, "LV").included  # the ES base without half a ring
    assert _decision(decisions, 1, apex, "LV").included
    dropped: list = []
    clean_labels(lab, dropped=dropped)
    assert dropped == [(1, base)]
    assert base_is_first(np.array([0, 0, 3.0, 0])) and base_is_first(np.zeros(4))


def test_overrides_are_honoured_and_round_trip_through_json(tmp_path):
    lab = _stack(0.3)
    basal = (lab[0, 0] == LV_BLOOD_POOL).sum() * 0.01
    apical_rv = (lab[0, 3] == RV_BLOOD_POOL).sum() * 0.01
    m0 = compute_measurements(lab, SPACING, ed_frame=0, es_frame=1)
    overrides = {(0, 0, "LV"): True, (0, 3, "RV"): False, (0, 2, "LV"): True}  # the last equals the rule
    m = compute_measurements(lab, SPACING, ed_frame=0, es_frame=1, slice_overrides=overrides)
    assert m["lv_edv_ml"] == pytest.approx(m0["lv_edv_ml"] + basal)
    assert m["rv_edv_ml"] == pytest.approx(m0["rv_edv_ml"] - apical_rv)
    assert m["lv_esv_ml"] == pytest.approx(m0["lv_esv_ml"])  # ES untouched
    d = _decision(m.slices, 0, 0, "LV")
    assert d.included and d.overridden and "by the user" in d.reason and "< 0.5" in d.reason
    assert not _decision(m.slices, 0, 2, "LV").overridden
    assert m.overrides() == {(0, 0, "LV"): True, (0, 3, "RV"): False}
    paths = export_all(m, tmp_path)
    data = json.loads(paths["json"].read_text())
    entry = next(e for e in data["slices"] if (e["frame"], e["slice"], e["structure"]) == (0, 0, "LV"))
    assert entry["included"] is True and entry["overridden"] is True and entry["reason"]
    assert set(entry) >= {"frame", "slice", "structure", "included", "reason", "overridden"}
    assert parse_overrides(data["slices"]) == m.overrides()  # the exported choices reproduce the read-out
    again = compute_measurements(lab, SPACING, ed_frame=0, es_frame=1, slice_overrides=parse_overrides(data["slices"]))
    assert again["lv_edv_ml"] == pytest.approx(data["lv_edv_ml"])
    rows = list(csv.DictReader(paths["slices_csv"].open()))
    assert len(rows) == len(m.slices) and any(r["overridden"] == "1" for r in rows)
    page = paths["html"].read_text()
    assert "Slices counted" in page and "by the user" in page


def test_apply_overrides_ignores_unknown_slices_and_bad_input():
    lab = _stack(0.7)
    decisions = decide_slices(lab, SPACING, 0, 1)
    assert apply_overrides(decisions, {(0, 9, "LV"): False}) == decisions
    with pytest.raises(InputError, match="axes"):
        decide_slices(np.zeros((4, 4), np.uint8), SPACING, 0, 0)


def test_rules_never_empty_a_stack():
    """Two labelled slices, neither ringed: the last one still counts; RV with no myocardium labelled
    anywhere counts (nothing to judge it against)."""
    lab = np.zeros((2, 2, *SHAPE), np.uint8)
    for t in range(2):
        for z in range(2):
            lab[t, z] = _slice(8 - 2 * t - z, 0.2)
    decisions = decide_slices(lab, SPACING, 0, 1)
    assert [d.included for d in decisions if d.structure == "LV" and d.frame == 0] == [False, True]
    assert compute_measurements(lab, SPACING, ed_frame=0, es_frame=1)["lv_edv_ml"] > 0
    lab[lab == LV_MYOCARDIUM] = 0
    assert all(d.included for d in decide_slices(lab, SPACING, 0, 1) if d.structure == "RV")
