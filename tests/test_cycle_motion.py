"""Motion over a whole cycle with the shipped model: it must come back, and must not alternate.

A synthetic short-axis cine (bright LV blood pool, dark myocardial ring, an RV crescent, 1.5 mm pixels)
contracts and relaxes over 20 frames: the ring's radius follows ``r0 - A·sin²(πt/T)``, so the true
motion rises to a systolic peak and returns to (almost) zero at the last frame. The shipped network run
as one recurrence over the cycle drifts (the displacement grows frame after frame) and alternates
between odd and even frames; these tests fail for it and pass for the pairwise motion.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_cardiac_motion.conventions import cycle_order
from napari_cardiac_motion.evaluation.cycle import cycle_metrics, displacement_curve, roughness
from napari_cardiac_motion.inference import predict_cine

T, Z, H, W = 20, 3, 128, 128
PIXEL = 1.5
AMPLITUDE = 4.0  # px of inward motion of the endocardium at peak systole


def _radii(t: int) -> tuple[float, float]:
    """(endocardial radius, epicardial radius) in pixels at frame t (ED = frame 0)."""
    s = np.sin(np.pi * t / T) ** 2
    r_in = 14.0 - AMPLITUDE * s
    area_wall = np.pi * (22.0 ** 2 - 14.0 ** 2)  # the wall keeps its area (incompressible)
    return r_in, float(np.sqrt(area_wall / np.pi + r_in ** 2))


def synthetic_beating_cine():
    from napari_cardiac_motion.cine import Cine

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:H, :W].astype(np.float32)
    r = np.hypot(yy - 64.0, xx - 70.0)
    rv = np.hypot(yy - 64.0, (xx - 40.0) * 1.6)
    data = np.empty((T, Z, H, W), np.float32)
    for t in range(T):
        r_in, r_out = _radii(t)
        for z in range(Z):
            k = 1.0 - 0.1 * z
            img = np.full((H, W), 0.25, np.float32)
            img[(rv < 16.0 * k) & (r > r_out * k + 2)] = 0.85  # RV blood pool
            img[r < r_out * k] = 0.15  # myocardium
            img[r < r_in * k] = 0.9  # LV blood pool
            data[t, z] = img + 0.03 * rng.standard_normal((H, W)).astype(np.float32)
    return Cine(data * 800.0, (8.0, PIXEL, PIXEL), 40.0, np.diag([PIXEL, PIXEL, 8.0, 1.0]), name="beating")


@pytest.fixture(scope="module")
def beating():
    from napari_cardiac_motion.model import load_checkpoint

    cine = synthetic_beating_cine()
    model, _ = load_checkpoint(None)
    ring = np.zeros((Z, H, W), bool)
    yy, xx = np.mgrid[:H, :W]
    r = np.hypot(yy - 64.0, xx - 70.0)
    for z in range(Z):
        k = 1.0 - 0.1 * z
        ring[z] = (r >= 14.0 * k + 1) & (r < 22.0 * k - 1)  # the true ED myocardium, a pixel inside
    return cine, model, ring


def _curve(cine, model, ring, **kw) -> np.ndarray:
    res = predict_cine(cine, model, device="cpu", ed_frame=0, **kw)
    return displacement_curve(res.motion, ring, (PIXEL, PIXEL), cycle_order(T, 0)), res


def test_motion_returns_to_zero_at_the_end_of_the_cycle(beating):
    cine, model, ring = beating
    disp, _ = _curve(cine, model, ring)
    peak = disp.max()
    assert peak > 2.0, f"systolic peak {peak:.2f} mm: the motion was not found at all"
    assert int(np.argmax(disp)) in range(T // 2 - 4, T // 2 + 5), disp.round(2)
    # the true displacement at the last frame is sin²(π/T)·A ≈ 0.1 px: allow 0.6 mm
    assert disp[-1] < 0.6, f"last frame {disp[-1]:.2f} mm (peak {peak:.2f}): {disp.round(2)}"
    assert disp[-1] < 0.25 * peak


def test_consecutive_frames_do_not_alternate(beating):
    cine, model, ring = beating
    disp, res = _curve(cine, model, ring)
    steps = np.diff(disp)
    signs = np.sign(steps[np.abs(steps) > 0.05])
    changes = int((signs[1:] != signs[:-1]).sum())
    assert changes <= 2, f"{changes} changes of direction (rise then fall is 1): {disp.round(2)}"
    assert roughness(disp) < 0.15, disp.round(2)
    m = cycle_metrics(res.labels, res.motion, 0, cine.spacing, cine.affine)
    for key in ("radial_roughness", "circumferential_roughness"):
        assert m[key] < 0.2, (key, m[key], m["radial_percent"], m["circumferential_percent"])


def test_recurrent_mode_is_kept_for_comparison_and_drifts(beating):
    """The old behaviour stays available (``motion_mode="recurrent"``) and is measurably worse: this is
    what the two tests above guard against."""
    cine, model, ring = beating
    pair, _ = _curve(cine, model, ring, motion_mode="pairwise")
    rec, _ = _curve(cine, model, ring, motion_mode="recurrent")
    assert rec[-1] > pair[-1] + 0.5 or roughness(rec) > roughness(pair) + 0.1, (rec.round(2), pair.round(2))


def test_unknown_motion_mode_is_a_clear_error(beating):
    from napari_cardiac_motion.errors import InputError

    cine, model, _ = beating
    with pytest.raises(InputError, match="pairwise"):
        predict_cine(cine, model, device="cpu", ed_frame=0, motion_mode="sideways")


def test_evaluate_cycles_command_line(beating, tmp_path, capsys):
    """``evaluate --cycles`` on a Sunnybrook-style folder (sa.nii.gz, labels.nii.gz, info.json): the
    whole-cycle figures come out, the true motion is found and comes back, ED→ES propagation is scored."""
    import json

    from napari_cardiac_motion.cli import main
    from napari_cardiac_motion.io.nifti import write_nifti_image, write_nifti_labels

    cine, _, ring = beating
    case = tmp_path / "cines" / "beating"
    case.mkdir(parents=True)
    write_nifti_image(case / "sa.nii.gz", cine)
    yy, xx = np.mgrid[:H, :W]
    r = np.hypot(yy - 64.0, xx - 70.0)
    lab = np.zeros((T, Z, H, W), np.uint8)
    for t in (0, T // 2):
        r_in, r_out = _radii(t)
        for z in range(Z):
            k = 1.0 - 0.1 * z
            if t == 0:
                lab[t, z][r < r_out * k] = 2
            lab[t, z][r < r_in * k] = 1
    write_nifti_labels(case / "labels.nii.gz", lab, cine.affine, cine.spacing)
    (case / "info.json").write_text(json.dumps({
        "epi_contour_frames": {"0": [0, 1, 2]}, "endo_contour_frames": {"0": [0, 1, 2], str(T // 2): [0, 1, 2]}}))
    out = tmp_path / "cycles.json"
    assert main(["evaluate", "--data", str(tmp_path / "cines"), "--cycles", "--device", "cpu",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "beating" in printed and "carried Myo Dice" in printed
    res = json.loads(out.read_text())
    case_res = res["cases"][0]
    assert case_res["frames"] == T and case_res["es_frame"] == T // 2
    assert len(case_res["displacement_mm"]) == T
    assert case_res["last_displacement_mm"] < 0.25 * case_res["peak_displacement_mm"]
    assert case_res["propagation"]["LV"] > 0.8  # the ED cavity carried to ES by the motion
    assert res["motion_mode"] == "pairwise"


def test_last_frame_references_say_what_the_overlap_can_reach(beating):
    """The cycle figures carry their own yardsticks: the model's own myocardium at the last frame against
    its ED myocardium without motion and against the frame before, and demons from ED to the last frame
    (an independent estimate of the last-frame displacement; it reads about 1 mm of noise on this cine,
    whose true last-frame motion is 0.1 px, and much more when the last frame is peak systole)."""
    from napari_cardiac_motion.cine import Cine
    from napari_cardiac_motion.evaluation.cycle import closure_yardstick, demons_last_frame

    cine, model, _ = beating
    res = predict_cine(cine, model, device="cpu", ed_frame=0)
    m = cycle_metrics(res.labels, res.motion, 0, cine.spacing, cine.affine)
    assert 0.5 < m["last_zero_motion_myo_dice"] <= 1.0 and 0.5 < m["last_neighbour_myo_dice"] <= 1.0
    ref = demons_last_frame(cine, 0, res.labels)
    assert ref["carried_myo_dice"] > 0.8, ref
    half = Cine(cine.data[: T // 2 + 1], cine.spacing, cine.frame_interval_ms, cine.affine, name="to-es")
    ref_es = demons_last_frame(half, 0, res.labels[: T // 2 + 1])
    assert ref_es["displacement_mm"] > ref["displacement_mm"] + 0.5, (ref, ref_es)
    # the image yardstick: this cine's motion is symmetric in time, so its last frame is as far from ED as
    # the frame after ED (ratio ≈ 1); a cine cut at ES ends far from ED (its last frame changed far more)
    cl = closure_yardstick(cine, 0, res.labels)
    cl_es = closure_yardstick(half, 0, res.labels[: T // 2 + 1])
    assert 0.8 < cl["ratio"] < 1.25 and cl_es["ratio"] > 2.0, (cl, cl_es)


def test_wall_thickening_from_the_labels_alone():
    """The motion-free yardstick: a ring whose wall thickens by 20 % (same epicardium, smaller cavity) reads
    about +20 % at that frame and 0 where the labels equal ED's; no myocardium at ED: NaN."""
    from napari_cardiac_motion.evaluation.cycle import wall_thickening_curve

    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32.0, xx - 32.0)

    def frame(r_endo: float, r_epi: float) -> np.ndarray:
        lab = np.zeros((2, 64, 64), np.uint8)
        lab[:, r < r_epi] = 2
        lab[:, r < r_endo] = 1
        return lab

    labels = np.stack([frame(12, 20), frame(10.4, 20), frame(12, 20)])  # wall 8 → 9.6 px: +20 %
    curve = wall_thickening_curve(labels, [0, 1, 2])
    assert curve[0] == 0.0 and abs(curve[2]) < 1e-9
    assert 15.0 < curve[1] < 23.0, curve  # rasterised radii: 17.0
    assert np.isnan(wall_thickening_curve(np.zeros_like(labels), [0, 1, 2])).all()
