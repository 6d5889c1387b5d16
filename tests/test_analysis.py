"""Volumes, EF, mass, BSA and exports on a hand-made phantom whose numbers are checked by hand."""

import csv
import json

import numpy as np
import pytest

from napari_cardiac_motion.analysis import bsa_mosteller, compute_measurements, volume_curves
from napari_cardiac_motion.analysis.report import export_all, write_cohort_csv
from napari_cardiac_motion.errors import InputError

# voxel = 10 x 2 x 2.5 mm = 50 mm³ = 0.05 ml
SPACING = (10.0, 2.0, 2.5)


def _phantom() -> np.ndarray:
    """(T=3, Z=2, 12, 12): per slice LV 30/12/20 voxels, RV 16/10/13, myocardium 21 at ED."""
    lab = np.zeros((3, 2, 12, 12), np.uint8)
    lv = {0: 30, 1: 12, 2: 20}
    rv = {0: 16, 1: 10, 2: 13}
    for t in range(3):
        for z in range(2):
            flat = lab[t, z].reshape(-1)  # a view: fill the first voxels in raster order
            flat[: lv[t]] = 1
            flat[lv[t]: lv[t] + 21] = 2
            flat[100: 100 + rv[t]] = 3
    return lab


def test_volumes_ef_mass_by_hand():
    m = compute_measurements(_phantom(), SPACING, frame_interval_ms=40.0)
    # LV: 60, 24, 40 voxels x 0.05 ml
    assert np.allclose(m.lv_volume_ml, [3.0, 1.2, 2.0])
    assert np.allclose(m.rv_volume_ml, [1.6, 1.0, 1.3])
    assert m.ed_frame == 0 and m.es_frame == 1  # largest / smallest LV
    assert m["lv_edv_ml"] == pytest.approx(3.0)
    assert m["lv_esv_ml"] == pytest.approx(1.2)
    assert m["lv_sv_ml"] == pytest.approx(1.8)
    assert m["lv_ef_percent"] == pytest.approx(60.0)
    assert m["rv_edv_ml"] == pytest.approx(1.6)
    assert m["rv_esv_ml"] == pytest.approx(1.0)
    assert m["rv_ef_percent"] == pytest.approx(37.5)
    assert m["lv_mass_g"] == pytest.approx(42 * 0.05 * 1.05)  # 2.205 g
    assert m["es_time_ms"] == pytest.approx(40.0)
    assert np.allclose(m.time_ms, [0.0, 40.0, 80.0])
    # per-slice area: 30 voxels of 2 x 2.5 mm² at ED
    assert m.slice_area_mm2["lv"][0, 0] == pytest.approx(150.0)
    assert m.slice_area_mm2["rv"].shape == (3, 2)
    assert m["bsa_m2"] is None and m["lv_edv_index_ml_m2"] is None


def test_bsa_and_indexed_values():
    assert bsa_mosteller(180.0, 80.0) == pytest.approx(2.0)  # sqrt(180*80/3600)
    assert bsa_mosteller(None, 80.0) is None
    m = compute_measurements(_phantom(), SPACING, height_cm=180.0, weight_kg=80.0)
    assert m["bsa_m2"] == pytest.approx(2.0)
    assert m["lv_edv_index_ml_m2"] == pytest.approx(1.5)
    assert m["lv_mass_index_g_m2"] == pytest.approx(2.205 / 2.0)
    with pytest.raises(InputError, match="positive"):
        bsa_mosteller(-1.0, 80.0)


def test_ed_es_override_and_errors():
    m = compute_measurements(_phantom(), SPACING, ed_frame=2, es_frame=1)
    assert (m.ed_frame, m.es_frame) == (2, 1)
    assert m["lv_ef_percent"] == pytest.approx(100 * (2.0 - 1.2) / 2.0)
    with pytest.raises(InputError, match="out of range"):
        compute_measurements(_phantom(), SPACING, ed_frame=3)
    with pytest.raises(InputError, match="spacing"):
        volume_curves(_phantom(), (0.0, 1.0, 1.0))
    with pytest.raises(InputError, match="axes"):
        volume_curves(np.zeros((2, 3)), SPACING)
    # unknown frame interval: no times, curves over frame numbers
    m = compute_measurements(_phantom(), SPACING)
    assert m.time_ms is None and m.time_axis()[1] == "frame"


def test_json_keys_units_and_exports(tmp_path):
    m = compute_measurements(_phantom(), SPACING, frame_interval_ms=40.0,
                             model={"name": "net", "version": "2"}, input="case.nii.gz")
    d = m.to_dict()
    for key in ("lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_percent", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml",
                "rv_ef_percent", "lv_mass_g", "ed_frame", "es_frame", "lv_volume_ml", "rv_volume_ml", "time_ms",
                "strain", "units", "help"):
        assert key in d
    assert d["units"]["lv_edv_ml"] == "ml" and d["units"]["lv_mass_g"] == "g" and d["units"]["time_ms"] == "ms"
    assert d["strain"] is None  # no motion given
    json.dumps(d, allow_nan=False)  # strict JSON: no NaN
    paths = export_all(m, tmp_path / "exp")
    assert json.loads(paths["json"].read_text())["lv_ef_percent"] == pytest.approx(60.0)
    rows = {r["measure"]: r for r in csv.DictReader(paths["csv"].open())}
    assert float(rows["lv_mass_g"]["value"]) == pytest.approx(2.205)
    assert rows["lv_mass_g"]["unit"] == "g" and rows["model_name"]["value"] == "net"
    assert rows["input"]["value"] == "case.nii.gz"
    curves = list(csv.DictReader(paths["curves_csv"].open()))
    assert [float(r["lv_volume_ml"]) for r in curves] == pytest.approx([3.0, 1.2, 2.0])
    assert paths["volumes"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["html"].read_text()
    assert "case.nii.gz" in page and "60.0" in page and "data:image/png;base64" in page
    cohort = write_cohort_csv([dict(m.summary_row(), case="a"), {"case": "b", "lv_ef_percent": 50.0}],
                              tmp_path / "cohort.csv")
    got = list(csv.DictReader(cohort.open()))
    assert got[0]["case"] == "a" and float(got[0]["lv_ef_percent"]) == pytest.approx(60.0)
    assert got[1]["lv_edv_ml"] == ""


def test_readout_says_what_the_labels_cannot_give():
    """One frame (or ED = ES) leaves ESV, SV and EF undefined: shown as missing with a note, not as EF 0 %;
    no LV at ED and label values that are not the model's structures are named in the notes."""
    from napari_cardiac_motion.analysis import compute_measurements

    lab = np.zeros((1, 3, 64, 64), np.uint8)
    lab[:, :, 20:40, 20:40] = 1
    lab[:, :, 16:20, 16:44] = 2
    lab[:, :, 20:40, 45:55] = 3
    one = compute_measurements(lab, (8.0, 1.5, 1.5), 40.0)
    assert one.scalars["lv_edv_ml"] > 0 and one.scalars["lv_mass_g"] > 0
    for key in ("lv_esv_ml", "lv_sv_ml", "lv_ef_percent", "rv_esv_ml", "rv_ef_percent"):
        assert one.scalars[key] is None, key
    assert any("one frame" in n and "EF" in n for n in one.notes), one.notes
    still = compute_measurements(np.repeat(lab, 4, axis=0), (8.0, 1.5, 1.5), 40.0)  # no change over time
    assert still.scalars["lv_ef_percent"] is None and any("same frame" in n for n in still.notes)
    odd = np.repeat(lab, 2, axis=0)
    odd[1, :, 22:38, 22:38] = 0  # it contracts
    odd[1, :, 22:38, 22:38][:, 4:12, 4:12] = 1
    odd[0, 0, 0, :3] = (7, 9, 9)
    m = compute_measurements(odd, (8.0, 1.5, 1.5), 40.0)
    assert m.scalars["lv_ef_percent"] is not None and m.scalars["lv_ef_percent"] > 0
    assert any("7, 9" in n and "not structures" in n for n in m.notes), m.notes
    empty = compute_measurements(np.zeros((3, 2, 32, 32), np.uint8), (8.0, 1.5, 1.5), 40.0)
    assert any("no LV blood pool at ED" in n for n in empty.notes), empty.notes


def test_volume_plot_of_a_clip_without_pixel_size_says_so():
    """An echo video has no pixel size, so no volumes: the plot says so instead of an empty axis and legend."""
    import dataclasses

    from matplotlib.figure import Figure

    from napari_cardiac_motion.analysis.report import plot_volumes

    lab = np.zeros((3, 1, 32, 32), np.uint8)
    lab[:, :, 8:20, 8:20] = 1
    m = compute_measurements(lab, (1.0, 1.0, 1.0), 40.0)
    m = dataclasses.replace(m, lv_volume_ml=np.full(3, np.nan))
    ax = Figure().add_subplot()
    plot_volumes(ax, m)
    assert any("no pixel size" in t.get_text() for t in ax.texts) and ax.get_legend() is None
