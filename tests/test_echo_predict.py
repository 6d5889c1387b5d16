"""``predict --model echo`` end to end, the echo path of predict_cine, GLS from the motion, measure-echo with flows."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_cardiac_motion.analysis.echo_strain import (border_length_mm, endocardial_border, gls_readout,
                                                        track_points)
from napari_cardiac_motion.cli import main
from napari_cardiac_motion.errors import CheckpointError
from napari_cardiac_motion.io import read_nifti_flow
from napari_cardiac_motion.model_description import ECHO_DEFAULT

from conftest import tiny_net
from test_echo_measure import half_ellipse_labels

ROOT = Path(__file__).resolve().parents[1]
CAMUS = ROOT.parent / "shared" / "data" / "echo" / "camus_fullres"
ECHO_CKPT = ROOT / "napari_cardiac_motion" / "checkpoints" / "echo.pt"


def scaled_clip(scales=(1.0, 0.92, 0.85), spacing=(0.3, 0.3)):
    """Labels ``(T, Y, X)`` of a half-ellipse LV shrunk by ``scales[t]`` about the base midpoint, and the exact
    pull motion ``(T, Y, X, 2)`` frame t → ED (``u_t(q) = (q − c)(1/s − 1)``, pixels)."""
    labs, motion = [], []
    lab0, (y0, x0) = half_ellipse_labels(40.0, 18.0, spacing=spacing, size=(200, 180))
    c = np.array([y0 / spacing[0], x0 / spacing[1]])
    yy, xx = np.mgrid[:200, :180].astype(np.float64)
    for s in scales:
        lab, _ = half_ellipse_labels(40.0 * s, 18.0 * s, spacing=spacing, size=(200, 180))
        labs.append(lab)
        motion.append(np.stack([(yy - c[0]) * (1 / s - 1), (xx - c[1]) * (1 / s - 1)], -1))
    return np.stack(labs), np.stack(motion).astype(np.float32), lab0


def test_gls_of_a_border_shrinking_by_a_known_fraction():
    labels, motion, _ = scaled_clip()
    g = gls_readout(labels, motion, (0.3, 0.3), es=2, ed=0)
    # a uniform scaling by s shortens every curve by s: strain (s - 1) * 100
    assert g["gls_percent"] == pytest.approx(-15.0, abs=1.0)
    assert g["strain_curve_percent"][1] == pytest.approx(-8.0, abs=1.0)
    assert g["strain_curve_percent"][0] == 0.0 and g["strain_reference_frame"] == 0
    # ED is found as the motion's zero frame when not given
    assert gls_readout(labels, motion, (0.3, 0.3), es=2)["gls_percent"] == g["gls_percent"]


def test_endocardial_border_leaves_out_the_mitral_segment():
    labels, motion, _ = scaled_clip()
    b = endocardial_border(labels[0], (0.3, 0.3))
    base_row = 0.75 * 200
    # both ends on the mitral annulus (the base line, ~18 mm either side of the centre), the middle at the apex
    assert abs(b[0, 0] - base_row) < 4 and abs(b[-1, 0] - base_row) < 4
    assert abs(abs(b[0, 1] - b[-1, 1]) * 0.3 - 36.0) < 4.0
    assert b[:, 0].min() < base_row - 40.0 / 0.3 + 5
    # half-ellipse arc length (Ramanujan), not the closed loop
    a, c = 40.0, 18.0
    half = np.pi * (3 * (a + c) - np.sqrt((3 * a + c) * (a + 3 * c))) / 2
    assert border_length_mm(b, (0.3, 0.3)) == pytest.approx(half, rel=0.05)
    # the tracked border lies on frame 2's cavity border
    q = track_points(b, motion[2])
    assert np.abs(q[8] - (np.array([150.0, 90.0]) + (b[8] - [150.0, 90.0]) * 0.85)).max() < 1.0


def write_clip(path: Path, t_n: int = 5, four_d: bool = False, spacing: float = 0.5) -> np.ndarray:
    """A synthetic echo clip (an LV-like dark cavity in a bright wall) as NIfTI ``(X, Y, T)`` or ``(X, Y, 1, T)``."""
    yy, xx = np.mgrid[:96, :80].astype(np.float32)
    frames = []
    for t in range(t_n):
        r = np.hypot((yy - 50) / (30 - 2 * t), (xx - 40) / 14)
        frames.append(np.where(r < 1, 20.0, np.where(r < 1.4, 200.0, 60.0)) + t)
    arr = np.stack(frames, -1).transpose(1, 0, 2)  # (X, Y, T)
    if four_d:
        arr = arr[:, :, None, :]
    img = nib.Nifti1Image(arr.astype(np.float32), np.diag([spacing, spacing, 1.0, 1.0]))
    img.header.set_zooms((spacing, spacing, 1.0) + ((1.0,) if four_d else ()))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return arr


@pytest.fixture(scope="module")
def echo_tiny(tmp_path_factory):
    """A tiny random-weight network with the echo description (modality US, 1 mm pixels) that labels most
    pixels LV cavity, and a small motion."""
    import torch

    from napari_cardiac_motion.model import save_checkpoint

    torch.manual_seed(0)
    net = tiny_net(max_flow=4.0, pixel_mm=1.0)
    with torch.no_grad():
        net.seg_head[-1].bias.copy_(torch.tensor([0.0, 3.0, 0.0, 0.0]))
        net.flow_out.bias.fill_(0.05)
    meta = {"name": "tiny-echo", "version": "0", **ECHO_DEFAULT.to_metadata()}
    return save_checkpoint(net, tmp_path_factory.mktemp("echo") / "tiny_echo.pt", meta)


@pytest.mark.parametrize("four_d", [False, True])
def test_predict_echo_plumbing_keeps_the_input_layout(tmp_path, echo_tiny, four_d):
    src = tmp_path / "clip_4CH.nii.gz"
    arr = write_clip(src, four_d=four_d)
    out = tmp_path / "out"
    assert main(["predict", str(src), "--out", str(out), "--model", str(echo_tiny), "--device", "cpu"]) == 0
    lab = nib.load(out / "labels.nii.gz")
    assert lab.shape == arr.shape and lab.get_data_dtype() == np.uint8
    x, y, t = arr.shape[0], arr.shape[1], arr.shape[-1]
    flow = read_nifti_flow(out / "flow.nii.gz")
    assert flow.shape == (t, 1, y, x, 2)
    res = json.loads((out / "result.json").read_text())
    assert res["modality"] == "US" and res["model"]["modality"] == "US"
    assert res["classes"]["3"] == "left atrium" and res["spacing_known"] is True
    assert res["qc"] is None and "MR" in res["qc_note"] and not (out / "qc.json").exists()
    # the whole frame at the model's 1 mm: 0.5 mm pixels -> 2 input pixels per model pixel, no heart finding
    assert res["region"]["found"] == "whole frame (echo)" and res["region"]["whole_slice"]
    assert res["region"]["model_pixel_mm_yx"] == [1.0, 1.0]
    assert res["motion"]["refine"]["closed_cycle"] is False
    assert not flow[res["ed_frame"]].any()
    meas = json.loads((out / "measurements.json").read_text())
    assert meas["modality"] == "US" and meas["ed_frame"] == res["ed_frame"] and meas["view"] == "a4c"
    assert "lv_ef_percent" in meas and "gls_percent" in meas and "rv_edv_ml" not in meas


def test_predict_mr_model_keeps_the_mr_path(tmp_path, model_path):
    """A checkpoint without a description (MR) on an echo clip forced to 2D+t: the MR read-out, QC run."""
    src = tmp_path / "clip.nii.gz"
    write_clip(src)
    out = tmp_path / "out"
    assert main(["predict", str(src), "--out", str(out), "--model", str(model_path), "--layout", "2d+t"]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["qc"] is not None and res["qc_note"] is None and res["region"]["found"] != "whole frame (echo)"
    assert "lv_mass_g" in json.loads((out / "measurements.json").read_text())
    assert nib.load(out / "labels.nii.gz").ndim == 4


def test_model_names_resolve_and_a_missing_echo_model_is_one_line(tmp_path, monkeypatch, capsys):
    from napari_cardiac_motion import model_store
    from napari_cardiac_motion.model import default_checkpoint_path

    assert model_store.resolve_model(None) == default_checkpoint_path() == model_store.resolve_model("default")
    assert model_store.resolve_model(str(tmp_path / "m.pt")) == tmp_path / "m.pt"
    monkeypatch.setattr(model_store, "shipped_model_path", lambda name: tmp_path / "nothing" / f"{name}.pt")
    with pytest.raises(CheckpointError, match="echo model is not installed"):
        model_store.resolve_model("echo")
    src = tmp_path / "clip.nii.gz"
    write_clip(src)
    assert main(["predict", str(src), "--out", str(tmp_path / "o"), "--model", "echo"]) == 2
    err = capsys.readouterr().err.strip()
    assert "echo model is not installed" in err and len(err.splitlines()) == 1



def test_predict_echo_refuses_a_multi_slice_cine(tmp_path, echo_tiny, capsys):
    from napari_cardiac_motion._sample_data import sample_cine_path

    args = ["predict", str(sample_cine_path()), "--out", str(tmp_path / "o"), "--model", str(echo_tiny)]
    assert main(args) == 2  # an echo model reads a 3D/4D file as 2D+t: the reader refuses X×Y×Z×T
    assert "2D+t image is X×Y×T" in capsys.readouterr().err
    assert main(args + ["--layout", "volume"]) == 2  # read as a volume cine: the echo model refuses Z > 1
    assert "one apical 2D+t clip" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_predict_echo_refuses_flip_tta(tmp_path, echo_tiny, capsys):
    src = tmp_path / "clip.nii.gz"
    write_clip(src)
    out = tmp_path / "o"
    assert main(["predict", str(src), "--out", str(out), "--model", str(echo_tiny), "--tta", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "not mirror-symmetric" in err and "Run without --tta" in err and "Traceback" not in err
    assert not out.exists()


def test_measure_echo_fills_gls_from_flow_files(tmp_path):
    from napari_cardiac_motion.io import write_nifti_flow

    labels, motion, _ = scaled_clip()
    aff = np.diag([0.3, 0.3, 1.0, 1.0])
    lab_path = tmp_path / "labels.nii.gz"
    img = nib.Nifti1Image(labels.transpose(2, 1, 0), aff)
    img.header.set_zooms((0.3, 0.3, 1.0))
    nib.save(img, str(lab_path))
    write_nifti_flow(tmp_path / "flow.nii.gz", motion[:, None], aff, (1.0, 0.3, 0.3))
    out = tmp_path / "m"
    assert main(["measure-echo", "--a4c", str(lab_path), "--a4c-flow", str(tmp_path / "flow.nii.gz"),
                 "--out", str(out)]) == 0
    m = json.loads((out / "measurements.json").read_text())
    assert m["gls_percent"] == pytest.approx(-15.0, abs=1.0) and m["views"]["a4c"]["es_frame"] == 2
    assert len(m["views"]["a4c"]["strain_curve_percent"]) == 3
    assert main(["measure-echo", "--a2c-flow", str(tmp_path / "flow.nii.gz"), "--a4c", str(lab_path),
                 "--out", str(out)]) == 2


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


@pytest.mark.skipif(not CAMUS.is_dir(), reason="shared CAMUS data not found beside the repository")
@pytest.mark.skipif(not ECHO_CKPT.exists(), reason="the shipped echo checkpoint is not in this checkout")
def test_predict_echo_on_a_real_camus_clip(tmp_path):
    """A validation patient's full-resolution 2CH half cycle (never trained on) through predict --model echo."""
    folder = CAMUS / "patient0015"
    src = folder / "patient0015_2CH_seq.nii.gz"
    out = tmp_path / "out"
    assert main(["predict", str(src), "--out", str(out), "--model", "echo", "--device", "cpu"]) == 0
    lab = np.asarray(nib.load(out / "labels.nii.gz").dataobj)
    gt = np.asarray(nib.load(folder / "patient0015_2CH_seq_gt.nii.gz").dataobj)
    assert lab.shape == gt.shape == nib.load(src).shape
    lv = [dice(lab[..., t] == 1, gt[..., t] == 1) for t in range(gt.shape[-1])]
    # measured with echo-joint-v1 at 1,500 and 1,800 steps: mean 0.88-0.89, lowest frame 0.835; floors 0.15 below
    assert np.mean(lv) > 0.73 and min(lv) > 0.7
    m = json.loads((out / "measurements.json").read_text())
    assert np.isfinite(m["lv_ef_percent"]) and 20 < m["lv_ef_percent"] < 80
    assert m["gls_percent"] is not None and -35 < m["gls_percent"] < -5
    assert m["view"] == "a2c" and m["lv_edv_ml"] > m["lv_esv_ml"] > 0


def test_a_clip_without_pixel_size_is_read_at_the_training_views_scale():
    """A video has no pixel size: the echo model resizes the frame so its larger side spans 224 model pixels,
    the scale of the 224² training views (read pixel for pixel, a full-resolution frame showed the heart three
    times too big). Measured on the four validation views: LV ED/ES Dice 0.39–0.85 → 0.90–0.94."""
    import torch

    from napari_cardiac_motion.cine import Cine
    from napari_cardiac_motion.inference import echo_region, predict_cine
    from napari_cardiac_motion.model import load_checkpoint
    from napari_cardiac_motion.model_description import describe
    from napari_cardiac_motion.model_store import resolve_model

    assert echo_region((224, 224), None, 1.0).step == (1.0, 1.0)  # the CAMUS 224² files: as trained
    assert echo_region((388, 448), None, 1.0).step == (2.0, 2.0)
    assert echo_region((112, 90), None, 1.0).step == (0.5, 0.5)
    assert echo_region((388, 448), (0.5, 0.5), 1.0).step == (2.0, 2.0)  # a known pixel size: the model's 1 mm
    from napari_cardiac_motion.training.finetune import cine_spacing_yx  # teaching reads a clip as inference does

    no_size = Cine(np.random.default_rng(0).random((2, 1, 32, 32)).astype(np.float32), spacing=(1.0, 1.0, 1.0),
                   spacing_known=False)
    assert cine_spacing_yx(no_size, echo=True) is None and cine_spacing_yx(no_size) == (1.0, 1.0)
    folder = CAMUS / "patient0008"
    if not folder.is_dir() or not resolve_model("echo").is_file():
        pytest.skip("the shared CAMUS data or the shipped echo model is not here")
    torch.set_num_threads(2)
    model, meta = load_checkpoint(resolve_model("echo"))
    image = np.asarray(nib.load(folder / "patient0008_4CH_ED.nii.gz").dataobj, np.float32)
    gt = np.asarray(nib.load(folder / "patient0008_4CH_ED_gt.nii.gz").dataobj)
    frame = np.stack([image.squeeze().T, image.squeeze().T])[:, None]  # (T=2, Z=1, Y, X), rows = depth
    video = Cine(frame, spacing=(1.0, 1.0, 1.0), name="video-like", spacing_known=False, modality="US")
    r = predict_cine(video, model, description=describe(meta), device="cpu", ed_frame=0)
    assert r.metadata["region"]["input_pixels_per_model_pixel_yx"][0] == pytest.approx(max(frame.shape[-2:]) / 224)
    assert dice(r.labels[0, 0] == 1, gt.squeeze().T == 1) > 0.85  # 0.39 read pixel for pixel
    assert "model_pixel_mm_yx" not in r.metadata["region"]  # no size in mm claimed for a clip that has none


def test_function_panel_readout_of_an_echo_result(tmp_path):
    """The "Cardiac function" panel's worker body on an echo model's labels and motion: EDV, ESV, EF, GLS and
    the curves, no MR rows."""
    pytest.importorskip("qtpy")
    from napari_cardiac_motion.analysis.report import export_all, measures_table
    from napari_cardiac_motion.widgets._function_context import compute_readout, hide_row

    labels, motion, _ = scaled_clip()
    inputs = {"labels": labels[:, None], "motion": motion[:, None], "motion_ed": 0, "spacing": (1.0, 0.3, 0.3),
              "interval": 40.0, "affine": None, "model": {"name": "echo"}, "input": "clip",
              "description": ECHO_DEFAULT, "spacing_known": True}
    out = compute_readout(inputs, None, None, None, None, {"width_px": 300, "height_px": 300})
    m, rendered = out
    assert m["gls_percent"] == pytest.approx(-15.0, abs=1.0) and m.ed_frame == 0 and m.es_frame == 2
    # the CAMUS length rule keeps one disc height for ED and ES: the volume ratio is that of the diameters²
    assert m["lv_ef_percent"] == pytest.approx(100 * (1 - 0.85 ** 2), abs=2.0)
    assert m["lv_edv_ml"] > m["lv_esv_ml"] > 0 and np.all(np.isfinite(m.lv_volume_ml))
    assert m.longitudinal_strain_percent.shape == (3,) and rendered.rgba.shape[-1] == 4
    shown = [k for k, v, _, _ in measures_table(m) if not hide_row(m, k, v)]
    assert {"lv_edv_ml", "lv_esv_ml", "lv_ef_percent", "gls_percent"} <= set(shown)
    assert not {"rv_edv_ml", "lv_mass_g", "peak_radial_strain_percent"} & set(shown)
    d = m.to_dict()
    assert d["gls_percent"] == m["gls_percent"] and len(d["longitudinal_strain_percent"]) == 3
    written = export_all(m, tmp_path)  # the panel's Export: every file written for an echo read-out too
    assert json.loads(written["json"].read_text())["gls_percent"] == m["gls_percent"]


def test_run_panel_offers_the_echo_model(make_napari_viewer, qtbot, monkeypatch, tmp_path):
    pytest.importorskip("qtpy")
    from napari_cardiac_motion import model_store
    from napari_cardiac_motion.widgets import run_widget as rw

    monkeypatch.setattr(model_store, "shipped_model_path", lambda name: tmp_path / f"{name}.pt")
    widget = rw.RunWidget(make_napari_viewer())
    qtbot.waitUntil(lambda: widget.warmed_up, timeout=60_000)  # its warm-up worker, before the viewer closes
    assert widget.model_combo.findData("echo") < 0  # not installed: not offered
    (tmp_path / "echo.pt").write_bytes(b"x")
    widget.refresh_models()
    assert widget.model_combo.itemText(widget.model_combo.findData("echo")) == rw.ECHO_MODEL_LABEL
    widget.set_model_path("echo")
    assert widget.model_path() == "echo"
    assert model_store.resolve_model(widget.model_path()) == tmp_path / "echo.pt"


def test_echo_clean_up_keeps_the_cavity_ringed_by_myocardium():
    """Two "LV cavity" regions: a larger one without a wall (the RV of a 4-chamber view, mislabelled) and the
    true LV inside a myocardial ring; specks go too."""
    from napari_cardiac_motion.postprocess import clean_echo_labels

    lab = np.zeros((1, 1, 80, 100), np.uint8)
    lab[0, 0, 10:60, 55:85] = 2
    lab[0, 0, 14:60, 59:81] = 1  # LV: 46 x 22, ringed by myocardium except at the base
    lab[0, 0, 20:75, 5:45] = 1  # RV-like: 55 x 40, larger, no wall
    lab[0, 0, 2:4, 50:52] = 1  # speck
    out = clean_echo_labels(lab)
    assert (out[0, 0, 14:60, 59:81] == 1).all() and not (out[0, 0, :, :50] == 1).any()
    assert not (out[0, 0, 2:4, 50:52] == 1).any() and (out == 2).sum() == (lab == 2).sum()
    assert clean_echo_labels(lab, inplace=True) is lab


def test_echo_clean_up_keeps_one_wall_and_one_atrium():
    """A stray myocardium blob and a second, smaller atrium piece go; the wall and the atrium stay whole.
    Only the classes asked for are touched."""
    from napari_cardiac_motion.postprocess import clean_echo_labels

    lab = np.zeros((1, 1, 90, 100), np.uint8)
    lab[0, 0, 10:60, 40:70] = 2
    lab[0, 0, 14:60, 44:66] = 1
    lab[0, 0, 62:85, 42:68] = 3  # the atrium below the cavity
    lab[0, 0, 5:9, 5:9] = 2  # stray wall
    lab[0, 0, 80:84, 5:12] = 3  # a second, smaller "atrium"
    out = clean_echo_labels(lab)
    assert (out[0, 0, 62:85, 42:68] == 3).all() and (out[0, 0, 80:84, 5:12] == 0).all()
    assert (out[0, 0, 5:9, 5:9] == 0).all() and (out == 2).sum() == (lab[0, 0, 10:60, 40:70] == 2).sum()
    assert (out == 1).sum() == (lab == 1).sum()
    kept = clean_echo_labels(lab, others=())
    assert (kept == 3).sum() == (lab == 3).sum() and (kept == 2).sum() == (lab == 2).sum()


def test_echo_clean_up_keeps_the_atrium_next_to_the_ventricle():
    """A larger false "atrium" away from the heart loses to the smaller one under the LV cavity (the atrium
    meets the ventricle at the mitral valve); with no atrium near the cavity the largest stays."""
    from napari_cardiac_motion.postprocess import clean_echo_labels

    lab = np.zeros((1, 1, 100, 120), np.uint8)
    lab[0, 0, 10:60, 40:70] = 2
    lab[0, 0, 14:60, 44:66] = 1
    lab[0, 0, 60:75, 46:64] = 3  # the true atrium, right under the cavity: 15 x 18
    lab[0, 0, 60:95, 85:115] = 3  # a larger false one far to the side: 35 x 30
    out = clean_echo_labels(lab)
    assert (out[0, 0, 60:75, 46:64] == 3).all() and not (out[0, 0, :, 80:] == 3).any()
    lab[0, 0, 60:75, 46:64] = 0  # no atrium near the cavity: the largest stays
    out = clean_echo_labels(lab)
    assert (out[0, 0, 60:95, 85:115] == 3).all()
