"""The label clean-up (postprocess.py): per slice and by anatomy, not by 3D connectivity alone."""

from __future__ import annotations

import numpy as np

from napari_cardiac_motion.conventions import LV_BLOOD_POOL, LV_MYOCARDIUM, RV_BLOOD_POOL
from napari_cardiac_motion.postprocess import clean_labels, heart_axis, keep_largest_components


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def _hypertrophic_es_case() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """ED (frame 0) and ES (frame 1) of a thick-walled LV over 6 slices, 64×64 pixels.

    At ES the cavity is small: slice 2 holds a piece left of the axis and slice 3 a piece right of
    it, so they do not touch across slices (no 3D connection), and the apical slices 4-5 hold a small
    cavity of their own. A false "LV" ringed by false myocardium lies far from the heart in slice 4,
    touching more myocardium than any real piece: the 3D rule keeps it and deletes the real cavity."""
    shape = (64, 64)
    c = (24.0, 24.0)
    lab = np.zeros((2, 6, *shape), np.uint8)
    for z in range(1, 6):
        lab[0, z][_disc(shape, c, 11)] = LV_MYOCARDIUM
        lab[0, z][_disc(shape, c, 7 if z < 5 else 3)] = LV_BLOOD_POOL
        lab[0, z][_disc(shape, (24, 40), 5) & (lab[0, z] == 0)] = RV_BLOOD_POOL
        lab[1, z][_disc(shape, c, 11)] = LV_MYOCARDIUM
        lab[1, z][_disc(shape, (24, 40), 4) & (lab[1, z] == 0)] = RV_BLOOD_POOL
    pieces = {
        "es_z2": _disc(shape, (24, 21.5), 2.2),  # 3D-separate from slice 3's piece
        "es_z3": _disc(shape, (24, 26.5), 2.2),
        "es_z4": _disc(shape, c, 1.5),
    }
    lab[1, 2][pieces["es_z2"]] = LV_BLOOD_POOL
    lab[1, 3][pieces["es_z3"]] = LV_BLOOD_POOL
    lab[1, 4][pieces["es_z4"]] = LV_BLOOD_POOL
    lab[1, 5][pieces["es_z4"]] = LV_BLOOD_POOL
    far = _disc(shape, (53, 53), 6)
    lab[1, 4][_disc(shape, (53, 53), 9.5)] = LV_MYOCARDIUM  # false wall around a false cavity
    lab[1, 4][far] = LV_BLOOD_POOL
    pieces["far"] = far
    return lab, pieces


def test_es_cavity_split_across_slices_survives_and_far_blob_goes():
    lab, p = _hypertrophic_es_case()
    out = keep_largest_components(lab)
    es = out[1]
    assert (es[2][p["es_z2"]] == LV_BLOOD_POOL).all()
    assert (es[3][p["es_z3"]] == LV_BLOOD_POOL).all()
    assert (es[4][p["es_z4"]] == LV_BLOOD_POOL).all()
    assert not (es[4][p["far"]] == LV_BLOOD_POOL).any()
    assert not (es[4, 44:64, 44:64] == LV_MYOCARDIUM).any()  # the false wall goes with its cavity
    assert (out[0] == lab[0]).all()  # ED was clean already
    assert (es == LV_MYOCARDIUM).sum() == (lab[1, :, :40, :40] == LV_MYOCARDIUM).sum()


def test_inplace_and_single_frame():
    lab, p = _hypertrophic_es_case()
    copy = lab.copy()
    out = keep_largest_components(lab, inplace=True)
    assert out is lab and not (lab == copy).all()
    one = keep_largest_components(copy[1])  # (Z, Y, X): the frame is its own reference
    assert one.shape == copy[1].shape


def test_no_rescue_off_axis_or_outside_myocardium():
    """A second piece beside the kept cavity that is not ringed by myocardium, or that lies off the
    axis, still goes; so does a piece larger than the ED cavity of its slice."""
    lab, p = _hypertrophic_es_case()
    shape = lab.shape[-2:]
    lab[1, 2][p["es_z2"]] = 0
    lab[1, 2][_disc(shape, (24, 58), 2.2)] = LV_BLOOD_POOL  # outside the wall, off axis
    out = keep_largest_components(lab)
    assert not (out[1, 2] == LV_BLOOD_POOL).any()
    assert (out[1, 3][p["es_z3"]] == LV_BLOOD_POOL).all()


def test_heart_axis_follows_reference_frame():
    lab, _ = _hypertrophic_es_case()
    axis = heart_axis(lab)
    assert axis is not None and axis.ref_frame == 0
    assert np.allclose(axis.centre[1:], 24.0, atol=0.01)
    assert not axis.present[0] and axis.present[1:].all()
    assert np.allclose(axis.radius[1:5], np.sqrt(_disc((64, 64), (24, 24), 11).sum() / np.pi))
    assert heart_axis(np.zeros((2, 3, 8, 8), np.uint8)) is None


def test_second_piece_beside_the_cavity_is_not_rescued():
    """A ringed piece in a slice whose cavity the anchor already holds is a hole in the wall."""
    lab, p = _hypertrophic_es_case()
    hole = _disc(lab.shape[-2:], (24, 32), 1.5)  # inside the ES wall of slice 3, beside its cavity
    lab[1, 3][hole] = LV_BLOOD_POOL
    out = keep_largest_components(lab)
    assert not (out[1, 3][hole] == LV_BLOOD_POOL).any()
    assert (out[1, 3][p["es_z3"]] == LV_BLOOD_POOL).all()


def test_valve_slice_with_less_than_half_a_ring_is_emptied():
    """At ES the base has descended: the most basal slice shows atrium (blood pool with a sliver of
    myocardium); it is emptied of blood pool and myocardium. The same slice at ED, fully ringed, stays."""
    lab, _ = _hypertrophic_es_case()
    shape = lab.shape[-2:]
    lab[:, 0] = 0
    lab[0, 0][_disc(shape, (24, 24), 11)] = LV_MYOCARDIUM  # ED: a basal slice ringed by myocardium
    lab[0, 0][_disc(shape, (24, 24), 8)] = LV_BLOOD_POOL
    lab[1, 0][_disc(shape, (24, 24), 8)] = LV_BLOOD_POOL  # ES: atrium, a sliver of wall on one side
    lab[1, 1][_disc(shape, (24, 24), 2.2)] = LV_BLOOD_POOL  # and the cavity below it
    sliver = _disc(shape, (24, 24), 11) & ~_disc(shape, (24, 24), 8) & (np.arange(64)[None, :] < 17)
    lab[1, 0][sliver] = LV_MYOCARDIUM
    out = keep_largest_components(lab)
    assert (out[0, 0] == lab[0, 0]).all()
    assert not (out[1, 0] == LV_BLOOD_POOL).any() and not (out[1, 0] == LV_MYOCARDIUM).any()
    kept = clean_labels(lab, valve_slice=False)
    assert (kept[1, 0] == LV_BLOOD_POOL).any()
    dropped: list[tuple[int, int]] = []
    again = clean_labels(lab, dropped=dropped)
    assert dropped == [(1, 0)] and (again == out).all()  # the emptied (frame, slice), same labels
    via_inference_name: list[tuple[int, int]] = []
    keep_largest_components(lab, dropped=via_inference_name)
    assert via_inference_name == [(1, 0)]


def test_slice_rules_see_the_same_ring_as_the_valve_rule():
    """Without the clean-up's valve rule, the read-out's basal-ring rule leaves the same slice out of the
    ES volume (same criterion, the labels kept)."""
    from napari_cardiac_motion.analysis.slices import decide_slices

    lab, _ = _hypertrophic_es_case()
    shape = lab.shape[-2:]
    lab[:, 0] = 0
    lab[0, 0][_disc(shape, (24, 24), 11)] = LV_MYOCARDIUM
    lab[0, 0][_disc(shape, (24, 24), 8)] = LV_BLOOD_POOL
    lab[1, 0][_disc(shape, (24, 24), 8)] = LV_BLOOD_POOL
    lab[1, 1][_disc(shape, (24, 24), 2.2)] = LV_BLOOD_POOL
    sliver = _disc(shape, (24, 24), 11) & ~_disc(shape, (24, 24), 8) & (np.arange(64)[None, :] < 17)
    lab[1, 0][sliver] = LV_MYOCARDIUM
    kept = clean_labels(lab, valve_slice=False)
    decisions = decide_slices(kept, (10.0, 1.0, 1.0), 0, 1)
    d = next(x for x in decisions if (x.frame, x.slice, x.structure) == (1, 0, "LV"))
    assert not d.included and "< 0.5" in d.reason
