"""Strain from the pull-convention motion on a ring with a known analytic deformation.

The phantom: a myocardial ring (ED radii ``ri``..``ro`` mm) that contracts radially, incompressibly
(``r² − r_i(t)² = R² − ri²``: the wall thickens as the cavity shrinks), and twists (each slice rotates by
its own angle). For tissue at ED radius ``R`` now at radius ``r``: circumferential stretch ``r/R``,
radial stretch ``dr/dR = R/r``; rotation changes neither. The motion handed to the code is the
inverse map on the current grid, as the model produces it: ``u_t(x) = X(x) − x`` in voxels ``(dy, dx)``.
"""

import numpy as np
import pytest

from napari_cardiac_motion.analysis import compute_measurements, strain_curves
from napari_cardiac_motion.analysis.strain import segment_ids

SY, SX = 1.2, 0.9  # anisotropic pixels (mm)


def ring_phantom(n_t=8, n_z=6, size=112, ri0=18.0, wall=9.0, contraction=0.3, twist_deg=12.0, rv=False,
                per_slice_truth=False):
    """Labels (T, Z, Y, X), motion (T, Z, Y, X, 2) and per-frame truth (radial %, circumferential %).

    ED is frame 0. Slices shrink from base (z = 0) to apex. The truth is the mean over the ED
    myocardium pixels (each an equal area) of the analytic strain at that pixel's ED radius.
    """
    cy, cx = size / 2 * SY, size / 2 * SX
    yy, xx = np.mgrid[:size, :size].astype(float)
    y, x = yy * SY - cy, xx * SX - cx
    r, th = np.hypot(y, x), np.arctan2(y, x)
    labels = np.zeros((n_t, n_z, size, size), np.uint8)
    motion = np.zeros((n_t, n_z, size, size, 2), np.float32)
    truth_r, truth_c = np.zeros(n_t), np.zeros(n_t)
    per_slice = np.zeros((3, n_t, n_z))  # sums of radial, circumferential strain and pixel counts
    for t in range(n_t):
        s = np.sin(np.pi * t / n_t) ** 2  # 0 at ED, 1 mid-cycle
        num_r = num_c = den = 0.0
        for z in range(n_z):
            ri = ri0 * (1 - 0.08 * z)
            ro = ri + wall
            rit = ri * (1 - contraction * s)
            alpha = np.radians(twist_deg) * s * (1 - 2 * z / (n_z - 1))  # base and apex twist opposite ways
            big_r = np.sqrt(r ** 2 - rit ** 2 + ri ** 2)  # ED radius of the tissue now at r
            big_th = th - alpha
            motion[t, z, ..., 0] = (big_r * np.sin(big_th) - y) / SY
            motion[t, z, ..., 1] = (big_r * np.cos(big_th) - x) / SX
            rot = np.sqrt(ro ** 2 - ri ** 2 + rit ** 2)
            labels[t, z][r < rit] = 1
            labels[t, z][(r >= rit) & (r < rot)] = 2
            if rv:  # RV blood pool hugging the LV on the -x side, over ±60°
                labels[t, z][(r >= rot) & (r < rot + 12) & (np.abs(np.abs(th) - np.pi) < np.radians(60))] = 3
            ed_r = r[(r >= ri) & (r < ro)]  # ED myocardium pixels' radii
            now = np.sqrt(ed_r ** 2 - ri ** 2 + rit ** 2)
            num_c += (now / ed_r - 1).sum()
            num_r += (ed_r / now - 1).sum()
            den += ed_r.size
            per_slice[:, t, z] = (ed_r / now - 1).sum(), (now / ed_r - 1).sum(), ed_r.size
        truth_r[t], truth_c[t] = 100 * num_r / den, 100 * num_c / den
    if per_slice_truth:
        return labels, motion, truth_r, truth_c, per_slice
    return labels, motion, truth_r, truth_c


@pytest.fixture(scope="module")
def phantom():
    return ring_phantom()


def test_global_strain_matches_analytic_truth(phantom):
    labels, motion, truth_r, truth_c = phantom
    res = strain_curves(motion, labels, (8.0, SY, SX), reference_frame=0)
    assert truth_r.max() > 15 and truth_c.min() < -12  # the phantom really deforms
    assert np.abs(res.radial_percent - truth_r).max() < 1.0
    assert np.abs(res.circumferential_percent - truth_c).max() < 1.0
    assert res.radial_percent[0] == pytest.approx(0, abs=1e-9)
    peak, frame = res.peak_circumferential()
    assert frame == 4 and peak == pytest.approx(truth_c.min(), abs=1.0)


def test_twist_alone_gives_no_strain():
    labels, motion, *_ = ring_phantom(n_t=4, n_z=3, contraction=0.0, twist_deg=20.0)
    assert np.abs(motion[2]).max() > 3  # the slices do rotate (several voxels at the wall)
    res = strain_curves(motion, labels, (8.0, SY, SX), reference_frame=0)
    assert np.abs(res.radial_percent).max() < 0.3 and np.abs(res.circumferential_percent).max() < 0.3


def test_aha_segments_numbering_and_curves():
    labels, motion, truth_r, truth_c, per_slice = ring_phantom(n_t=6, n_z=6, rv=True, per_slice_truth=True)
    res = strain_curves(motion, labels, (8.0, SY, SX), reference_frame=0, affine=np.diag([SX, SY, 8.0, 1.0]))
    assert res.segments_available, res.note
    assert list(res.slice_level) == [0, 0, 1, 1, 2, 2]  # base = larger slices at z = 0
    # RV spans 180° ± 60°; with an identity-oriented affine +y is anterior, so the anterior insertion is at 120°
    assert res.insertion_angle_deg == pytest.approx(120, abs=4) and res.septal_direction == 1
    seg = res.extra["segment_map_ed"]
    cy, cx = labels.shape[2] / 2, labels.shape[3] / 2

    def seg_at(z, deg, radius_mm=22.0):
        a = np.radians(deg)
        return int(seg[z, int(round(cy + radius_mm * np.sin(a) / SY)), int(round(cx + radius_mm * np.cos(a) / SX))])

    assert [seg_at(0, d) for d in (90, 150, 210, 270, 330, 30)] == [1, 2, 3, 4, 5, 6]
    assert [seg_at(2, d, 20.0) for d in (90, 150, 210, 270, 330, 30)] == [7, 8, 9, 10, 11, 12]
    assert [seg_at(5, d, 17.0) for d in (90, 180, 270, 0)] == [13, 14, 15, 16]
    # an axisymmetric deformation: every segment of a level follows that level's (two slices') truth
    assert np.isfinite(res.segment_radial_percent).all()
    for level, (zs, segs) in enumerate((([0, 1], range(0, 6)), ([2, 3], range(6, 12)), ([4, 5], range(12, 16)))):
        lvl_r = 100 * per_slice[0][:, zs].sum(1) / per_slice[2][:, zs].sum(1)
        lvl_c = 100 * per_slice[1][:, zs].sum(1) / per_slice[2][:, zs].sum(1)
        assert np.abs(res.segment_radial_percent[list(segs)] - lvl_r).max() < 1.0, level
        assert np.abs(res.segment_circumferential_percent[list(segs)] - lvl_c).max() < 1.0, level


def test_segment_ids_direction():
    # turning the other way round mirrors the numbering
    assert segment_ids(np.radians([10.0]), 0, 0.0, +1)[0] == 2
    assert segment_ids(np.radians([-10.0]), 0, 0.0, -1)[0] == 2
    assert segment_ids(np.radians([-10.0]), 1, 0.0, +1)[0] == 7


def test_measurements_carry_strain_and_peaks(phantom):
    labels, motion, truth_r, truth_c = phantom
    m = compute_measurements(labels, (8.0, SY, SX), 50.0, motion=motion, motion_reference_frame=0, ed_frame=0)
    d = m.to_dict()
    assert d["peak_circumferential_strain_percent"] == pytest.approx(truth_c.min(), abs=1.0)
    assert d["peak_radial_strain_percent"] == pytest.approx(truth_r.max(), abs=1.0)
    assert len(d["strain"]["radial_percent"]) == labels.shape[0]
    assert d["strain"]["segments_available"] is False  # no RV in this phantom
    assert "RV" in d["strain"]["segments_note"]


@pytest.mark.parametrize("patient", ["patient061", "patient031"])
def test_aha_septum_faces_the_rv_on_acdc(shared_data, patient):
    """On expert labels, the myocardium touching the RV falls in the septal segments (2, 3, 8, 9, 14)."""
    import nibabel as nib
    from scipy import ndimage

    folder = shared_data / "acdc" / patient
    img = nib.load(str(folder / "ED_gt.nii.gz"))
    lab = np.asarray(img.dataobj).transpose(2, 1, 0).astype(np.uint8)[None]  # (T=1, Z, Y, X)
    zooms = img.header.get_zooms()
    res = strain_curves(np.zeros(lab.shape + (2,), np.float32), lab, (zooms[2], zooms[1], zooms[0]), 0, img.affine)
    assert res.segments_available, res.note
    seg = res.extra["segment_map_ed"]
    touching = np.stack([ndimage.binary_dilation(lab[0, z] == 3, iterations=2) & (lab[0, z] == 2)
                         for z in range(lab.shape[1])])
    ids = seg[touching & (seg > 0)]
    assert ids.size > 50
    assert np.isin(ids, [2, 3, 8, 9, 14]).mean() > 0.8
    assert set(np.unique(seg[seg > 0])) == set(range(1, 17))


def test_segment_figure_with_bullseye(tmp_path):
    from napari_cardiac_motion.analysis.report import save_figures

    labels, motion, *_ = ring_phantom(n_t=4, n_z=6, size=96, rv=True)
    m = compute_measurements(labels, (8.0, SY, SX), 40.0, motion=motion, motion_reference_frame=0, ed_frame=0,
                             affine=np.diag([SX, SY, 8.0, 1.0]))
    assert m.strain.segments_available
    paths = save_figures(m, tmp_path)
    assert set(paths) == {"volumes", "strain", "segments"}
    assert paths["segments"].read_bytes()[:4] == b"\x89PNG"
    seg = m.to_dict()["strain"]["aha_segments"]
    assert len(seg) == 16 and seg["1"]["name"] == "basal anterior" and len(seg["16"]["radial_percent"]) == 4
