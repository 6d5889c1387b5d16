"""Echo read-out: Simpson's method of discs on synthetic shapes, the measure-echo CLI, CAMUS expert labels."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_cardiac_motion.analysis.echo import (
    EchoView,
    biplane_ml,
    ejection_fraction,
    longitudinal_strain_percent,
    measure_echo,
    view_geometry,
)
from napari_cardiac_motion.cli import main
from napari_cardiac_motion.errors import InputError

CAMUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "echo" / "camus_fullres"


def half_ellipse_labels(a_mm: float, b_mm: float, spacing=(0.3, 0.3), size=(160, 140), myo=True, la=True):
    """``(Y, X)`` labels: LV cavity = half ellipse (long semi-axis ``a`` up from the base line, half width ``b``)
    with the apex at the top; myocardium 3 mm around it except at the base; left atrium below the base."""
    dy, dx = spacing
    yy, xx = np.mgrid[: size[0], : size[1]].astype(float)
    y, x = yy * dy, xx * dx
    y0, x0 = 0.75 * size[0] * dy, 0.5 * size[1] * dx  # base line depth, centre
    r = ((y - y0) / a_mm) ** 2 + ((x - x0) / b_mm) ** 2
    above = y <= y0
    lab = np.zeros(size, np.uint8)
    if myo:
        r_out = ((y - y0) / (a_mm + 3)) ** 2 + ((x - x0) / (b_mm + 3)) ** 2
        lab[(r_out <= 1) & above] = 2
    if la:
        lab[(((y - y0) / 12.0) ** 2 + ((x - x0) / b_mm) ** 2 <= 1) & ~above] = 3
    lab[(r <= 1) & above] = 1
    return lab, (y0, x0)


def half_ellipsoid_ml(a_mm: float, b_mm: float) -> float:
    return 2.0 / 3.0 * np.pi * b_mm ** 2 * a_mm / 1000.0


@pytest.mark.parametrize("spacing", [(0.3, 0.3), (0.15, 0.3)])
@pytest.mark.parametrize("myo,la", [(True, True), (False, True), (False, False)])
def test_single_plane_matches_half_ellipsoid(spacing, myo, la):
    a, b = 25.0, 12.0
    lab, (y0, x0) = half_ellipse_labels(a, b, spacing, size=(int(40 / spacing[0]), int(40 / spacing[1])),
                                        myo=myo, la=la)
    g = view_geometry(lab, spacing)
    assert g.base_from == ("myocardium" if myo else "atrium" if la else "shape")
    assert g.apex[0] == pytest.approx(y0 - a, abs=1.0) and g.apex[1] == pytest.approx(x0, abs=2.0)  # flat-ish top
    np.testing.assert_allclose(sorted(g.annulus[:, 1]), [x0 - b, x0 + b], atol=1.5)
    assert g.length_mm == pytest.approx(a, abs=1.5)
    assert g.single_plane_ml() == pytest.approx(half_ellipsoid_ml(a, b), rel=0.05)


def test_biplane_and_ef_rules():
    ed, _ = half_ellipse_labels(25.0, 12.0)
    es, _ = half_ellipse_labels(20.0, 9.0)
    view = EchoView("a4c", np.stack([ed, es]), (0.3, 0.3))
    g_ed = view_geometry(ed, (0.3, 0.3))
    assert biplane_ml(g_ed, g_ed) == pytest.approx(g_ed.single_plane_ml(), rel=1e-9)
    per = measure_echo(a4c=view, length_rule="per-frame")
    camus = measure_echo(a4c=view)
    # analytic: EF = 1 - (81*20)/(144*25) = 55 %; CAMUS rule: the ES discs get the ED long axis (25 mm)
    assert per["lv_ef_percent"] == pytest.approx(55.0, abs=2.5)
    assert camus["lv_ef_percent"] == pytest.approx(100 * (1 - 81 * 25 / (144 * 25)), abs=2.5)
    assert per["views"]["a4c"]["ed_frame"] == 0 and per["views"]["a4c"]["es_frame"] == 1
    assert camus["lv_edv_ml"] == pytest.approx(half_ellipsoid_ml(25, 12), rel=0.05)
    both = measure_echo(a2c=view, a4c=view)
    assert both["lv_ef_percent"] == pytest.approx(camus["lv_ef_percent"], abs=1e-6)
    assert "biplane" in both["method"] and "single-plane" in camus["method"]
    assert both["gls_percent"] is None
    assert ejection_fraction(0.0, 0.0) is None


def test_ed_es_given_and_errors():
    ed, _ = half_ellipse_labels(25.0, 12.0)
    es, _ = half_ellipse_labels(20.0, 9.0)
    view = EchoView("a2c", np.stack([es, ed, es]), (0.3, 0.3), ed=1, es=2)
    m = measure_echo(a2c=view)
    assert (m["views"]["a2c"]["ed_frame"], m["views"]["a2c"]["es_frame"]) == (1, 2)
    with pytest.raises(InputError, match="outside"):
        measure_echo(a2c=EchoView("a2c", np.stack([ed, es]), (0.3, 0.3), ed=0, es=5))
    with pytest.raises(InputError, match="no LV cavity"):
        view_geometry(np.zeros((50, 50), np.uint8), (0.3, 0.3))
    with pytest.raises(InputError, match="No view"):
        measure_echo()
    with pytest.raises(InputError, match="one frame"):
        measure_echo(a2c=EchoView("a2c", ed[None], (0.3, 0.3)))


def test_longitudinal_strain_hook():
    border = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    assert longitudinal_strain_percent(border, border * 0.8) == pytest.approx(-20.0)


def _save(path, arr_xy_t, spacing=0.3, units=True):
    img = nib.Nifti1Image(arr_xy_t, np.diag([-spacing, -spacing, 1.0, 1.0]))
    if units:
        img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return str(path)


def test_measure_echo_cli(tmp_path, capsys):
    ed, _ = half_ellipse_labels(25.0, 12.0)
    es, _ = half_ellipse_labels(20.0, 9.0)
    clip = _save(tmp_path / "a4c_gt.nii.gz", np.stack([es, ed, es], -1).transpose(1, 0, 2))
    f_ed = _save(tmp_path / "a2c_ED_gt.nii.gz", ed.T)
    f_es = _save(tmp_path / "a2c_ES_gt.nii.gz", es.T)
    assert main(["measure-echo", "--a2c", f_ed, f_es, "--a4c", clip, "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "measurements.json").read_text())
    assert {"lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "gls_percent"} <= set(res)
    assert res["views"]["a4c"]["ed_frame"] == 1 and res["views"]["a2c"]["files"] == [f_ed, f_es]
    assert res["lv_edv_ml"] == pytest.approx(half_ellipsoid_ml(25, 12), rel=0.05)
    assert "EF" in capsys.readouterr().out
    # unknown pixel size: no ml, EF kept
    nosp = _save(tmp_path / "nosp.nii.gz", np.stack([ed, es], -1).transpose(1, 0, 2), 1.0, units=False)
    assert main(["measure-echo", "--a4c", nosp, "--out", str(tmp_path / "o2")]) == 0
    res2 = json.loads((tmp_path / "o2" / "measurements.json").read_text())
    assert res2["lv_edv_ml"] is None and res2["lv_ef_percent"] > 0 and "spacing_note" in res2
    # one-line errors
    assert main(["measure-echo", "--out", str(tmp_path / "o3")]) == 2
    small = _save(tmp_path / "small.nii.gz", ed[:100, :100].T)
    assert main(["measure-echo", "--a2c", f_ed, small, "--out", str(tmp_path / "o4")]) == 2
    err = capsys.readouterr().err
    assert "different sizes" in err and "Traceback" not in err


def test_measure_echo_mhd_labels(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    ed, _ = half_ellipse_labels(25.0, 12.0, spacing=(0.15, 0.3), size=(267, 133))
    es, _ = half_ellipse_labels(20.0, 9.0, spacing=(0.15, 0.3), size=(267, 133))
    img = sitk.GetImageFromArray(np.stack([ed, es]))
    img.SetSpacing((0.3, 0.15, 1.0))
    sitk.WriteImage(img, str(tmp_path / "a2c_sequence_gt.mhd"), False)
    assert main(["measure-echo", "--a2c", str(tmp_path / "a2c_sequence_gt.mhd"), "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "measurements.json").read_text())
    assert res["views"]["a2c"]["spacing_mm"] == [0.15, 0.3]
    assert res["lv_edv_ml"] == pytest.approx(half_ellipsoid_ml(25, 12), rel=0.05)


@pytest.mark.skipif(not CAMUS.is_dir(), reason="../shared/data/echo not present")
def test_camus_expert_labels_ef_matches_reference():
    from napari_cardiac_motion.training.echo_data import camus_expert_ef

    rows = camus_expert_ef(CAMUS)
    errors = [abs(r["ef_percent"] - r["reference_ef_percent"]) for r in rows if r["reference_ef_percent"] is not None]
    assert len(rows) == 6 and len(errors) == 5
    assert float(np.mean(errors)) <= 2.0
