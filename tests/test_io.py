"""NIfTI / DICOM input and output: axis orders, round trips, and user-facing errors."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_cardiac_motion.errors import InputError, InputWarning
from napari_cardiac_motion.io import (
    read_cine,
    read_dicom_folder,
    read_nifti,
    read_nifti_flow,
    read_nifti_labels,
    read_nifti_volume,
    write_nifti_flow,
    write_nifti_image,
    write_nifti_labels,
    write_slicer_displacement,
)
from napari_cardiac_motion.io.nifti import FLOW_DESCRIP

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SB_NIFTI = DATA / "sunnybrook" / "SC-HF-I-1" / "sa.nii.gz"
SB_DICOM = DATA / "sunnybrook_dicom" / "SC-HF-I-1"
needs_data = pytest.mark.skipif(
    not (SB_NIFTI.exists() and SB_DICOM.is_dir()), reason="shared Sunnybrook data not available"
)

AFFINE = np.array(
    [[0.0, -1.5, 0.0, 10.0], [1.2, 0.0, 0.0, -20.0], [0.0, 0.0, 8.0, 5.0], [0, 0, 0, 1.0]]
)


def _save_xyzt(path: Path, arr: np.ndarray, zooms=None, t_unit="msec") -> Path:
    img = nib.Nifti1Image(arr, AFFINE)
    if zooms is not None:
        img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", t_unit)
    nib.save(img, str(path))
    return path


def _random_xyzt(shape=(20, 24, 3, 5), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(np.int16)


# --- NIfTI -> Cine ------------------------------------------------------------------------------


def test_read_nifti_axes_spacing_interval(tmp_path):
    arr = _random_xyzt()
    p = _save_xyzt(tmp_path / "case.nii.gz", arr, zooms=(1.2, 1.5, 8.0, 0.035), t_unit="sec")
    cine = read_nifti(p)
    assert cine.shape == (5, 3, 24, 20)  # (T, Z, Y, X)
    assert cine.data.dtype == np.float32
    # memory[t, z, y, x] == file[x, y, z, t]
    assert cine.data[4, 2, 7, 3] == arr[3, 7, 2, 4]
    np.testing.assert_allclose(cine.data, np.transpose(arr, (3, 2, 1, 0)))
    np.testing.assert_allclose(cine.spacing, (8.0, 1.5, 1.2), rtol=1e-6)
    assert cine.frame_interval_ms == pytest.approx(35.0, rel=1e-5)  # seconds -> ms
    np.testing.assert_allclose(cine.affine, AFFINE)
    assert cine.name == "case"


def test_read_nifti_3d_is_one_frame_and_single_slice_cine(tmp_path):
    vol = _random_xyzt((20, 24, 3))
    cine = read_nifti(_save_xyzt(tmp_path / "vol.nii", vol))
    assert cine.shape == (1, 3, 24, 20)
    assert cine.name == "vol"
    one = _random_xyzt((20, 24, 1, 6))
    cine = read_nifti(_save_xyzt(tmp_path / "one.nii.gz", one, zooms=(1.2, 1.5, 8.0, 30.0)))
    assert cine.shape == (6, 1, 24, 20)
    assert cine.frame_interval_ms == pytest.approx(30.0)
    five = _random_xyzt((20, 24, 3, 5, 1))
    assert read_nifti(_save_xyzt(tmp_path / "five.nii.gz", five)).shape == (5, 3, 24, 20)


def test_write_image_round_trip(tmp_path):
    cine = read_nifti(_save_xyzt(tmp_path / "a.nii.gz", _random_xyzt(), zooms=(1.2, 1.5, 8.0, 40.0)))
    out = write_nifti_image(tmp_path / "b.nii.gz", cine)
    back = read_nifti(out)
    np.testing.assert_array_equal(back.data, cine.data)
    np.testing.assert_allclose(back.affine, cine.affine)
    np.testing.assert_allclose(back.spacing, cine.spacing, rtol=1e-6)
    assert back.frame_interval_ms == pytest.approx(40.0)


# --- labels and flow ------------------------------------------------------------------------------


def test_labels_round_trip_axis_order(tmp_path):
    t, z, y, x = 4, 3, 24, 20
    lab = np.zeros((t, z, y, x), np.uint8)
    lab[1, 2, 5, 17] = 3  # asymmetric: one voxel only
    lab[0, 0, 0:2, 0] = 1
    out = write_nifti_labels(tmp_path / "seg.nii.gz", lab, AFFINE, (8.0, 1.5, 1.2), 40.0)
    # atomic write leaves no temporary file (whatever its name) beside the output
    assert sorted(f.name for f in tmp_path.iterdir()) == ["seg.nii.gz"]
    img = nib.load(str(out))
    assert img.shape == (x, y, z, t)
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, AFFINE)
    raw = np.asanyarray(img.dataobj)
    assert raw[17, 5, 2, 1] == 3
    assert img.header.get_zooms() == pytest.approx((1.2, 1.5, 8.0, 40.0))
    back = read_nifti_labels(out)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, lab)


def test_flow_round_trip_component_order(tmp_path):
    t, z, y, x = 3, 2, 24, 20
    flow = np.zeros((t, z, y, x, 2), np.float32)
    flow[2, 1, 4, 9] = (0.5, -2.0)  # (dy, dx) in memory
    out = write_nifti_flow(tmp_path / "flow.nii.gz", flow, AFFINE, (8.0, 1.5, 1.2), 40.0)
    img = nib.load(str(out))
    assert img.shape == (x, y, z, t, 2)
    raw = np.asanyarray(img.dataobj)
    np.testing.assert_allclose(raw[9, 4, 1, 2], (-2.0, 0.5))  # (dx, dy) in the file
    np.testing.assert_allclose(img.affine, AFFINE)
    back = read_nifti_flow(out)
    assert back.shape == (t, z, y, x, 2)
    np.testing.assert_array_equal(back, flow)


def test_flow_header_says_voxels_pull_and_claims_no_displacement_intent(tmp_path):
    flow = np.zeros((2, 1, 16, 16, 2), np.float32)
    hdr = nib.load(str(write_nifti_flow(tmp_path / "flow.nii.gz", flow, AFFINE, (8.0, 1.5, 1.2), 40.0))).header
    # no vector/displacement intent: ITK and 3D Slicer would read it as an LPS displacement in mm
    assert hdr.get_intent()[0] == "none"
    assert int(hdr["intent_code"]) not in (1006, 1007)
    descrip = hdr["descrip"].item().decode()
    assert descrip == FLOW_DESCRIP and len(FLOW_DESCRIP) <= 80
    for word in ("voxels", "(dx,dy)", "pull", "ED", "NOT mm", "NOT LPS"):
        assert word in descrip


def test_slicer_displacement_is_lps_mm_on_the_cine_grid(tmp_path):
    t, z, y, x = 2, 3, 16, 20
    flow = np.zeros((t, z, y, x, 2), np.float32)
    flow[1, 2, 5, 7] = (0.5, -2.0)  # (dy, dx) voxels at (t=1, z=2, y=5, x=7)
    paths = write_slicer_displacement(tmp_path / "disp", flow, AFFINE)
    assert [p.name for p in paths] == ["displacement_t000.nii.gz", "displacement_t001.nii.gz"]
    img = nib.load(str(paths[1]))
    assert img.shape == (x, y, z, 1, 3)
    assert img.header.get_intent()[0] == "vector"  # ITK reads vectors as stored: LPS
    np.testing.assert_allclose(img.affine, AFFINE)
    u = np.asarray(img.dataobj)[7, 5, 2, 0]
    # the point the pull transform maps voxel (i, j, k) to is voxel (i + dx, j + dy, k), in LPS mm
    ras_from = AFFINE @ [7, 5, 2, 1]
    ras_to = AFFINE @ [7 - 2.0, 5 + 0.5, 2, 1]
    lps = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(lps * ras_from[:3] + u, lps * ras_to[:3], atol=1e-5)
    assert np.count_nonzero(np.asarray(img.dataobj)) == 2  # only that voxel moves (z component is 0)
    assert not np.asarray(nib.load(str(paths[0])).dataobj).any()


# --- voxel size: pixdim vs affine --------------------------------------------------------------------


def _save_inconsistent(path: Path, affine, pixdim) -> Path:
    img = nib.Nifti1Image(_random_xyzt((20, 24, 3, 2)), affine)
    img.header.set_zooms(tuple(pixdim) + (30.0,))
    img.header.set_xyzt_units("mm", "msec")
    nib.save(img, str(path))
    back = nib.load(str(path))  # the file really holds both sizes
    assert back.header.get_zooms()[:3] == pytest.approx(pixdim)
    np.testing.assert_allclose(back.affine, affine)
    return path


def test_unit_affine_with_true_pixdim_uses_pixdim_and_warns(tmp_path):
    """ACDC's original headers: a 1 mm sform, the true voxel size only in pixdim."""
    p = _save_inconsistent(tmp_path / "acdc_like.nii.gz", np.eye(4), (1.4, 1.4, 10.0))
    with pytest.warns(InputWarning) as rec:
        cine = read_nifti(p)
    msg = str(rec[0].message)
    assert "acdc_like.nii.gz" in msg and "(1.4, 1.4, 10)" in msg and "(1, 1, 1)" in msg
    assert "Using (1.4, 1.4, 10) mm from pixdim" in msg
    np.testing.assert_allclose(cine.spacing, (10.0, 1.4, 1.4), rtol=1e-6)
    np.testing.assert_allclose(cine.affine, np.eye(4))  # kept as stored: outputs overlay the input
    assert cine.warnings == [msg]


def test_scaled_affine_disagreeing_with_pixdim_uses_the_affine_and_warns(tmp_path):
    p = _save_inconsistent(tmp_path / "odd.nii.gz", np.diag([1.5, 1.5, 8.0, 1.0]), (1.2, 1.2, 5.0))
    with pytest.warns(InputWarning, match=r"odd\.nii\.gz.*pixdim is \(1\.2, 1\.2, 5\).*affine.*\(1\.5, 1\.5, 8\).*"
                                          r"Using \(1\.5, 1\.5, 8\) mm from the affine"):
        vol = read_nifti_volume(p)
    assert vol.spacing == pytest.approx((8.0, 1.5, 1.5))
    assert vol.data.dtype == np.int16 and vol.data.shape == (2, 3, 24, 20)  # raw dtype, (T, Z, Y, X)
    assert len(vol.warnings) == 1


def test_consistent_header_reads_without_warning(tmp_path):
    import warnings

    p = _save_xyzt(tmp_path / "ok.nii.gz", _random_xyzt(), zooms=(1.2, 1.5, 8.0, 40.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        cine = read_nifti(p)
        vol = read_nifti_volume(p)
    assert cine.warnings == [] and vol.warnings == []
    np.testing.assert_allclose(vol.spacing, (8.0, 1.5, 1.2), rtol=1e-6)


# --- DICOM ----------------------------------------------------------------------------------------


@needs_data
def test_dicom_folder_equals_nifti():
    nii = read_nifti(SB_NIFTI)
    dcm = read_dicom_folder(SB_DICOM)
    assert dcm.shape == nii.shape == (20, 12, 256, 256)
    np.testing.assert_array_equal(dcm.data, nii.data)
    np.testing.assert_allclose(dcm.spacing, nii.spacing, atol=1e-3)
    np.testing.assert_allclose(dcm.affine, nii.affine, atol=1e-3)
    assert 35.0 < dcm.frame_interval_ms < 45.0
    assert dcm.warnings == [] and nii.warnings == []  # a complete, consistent series: nothing to report
    assert read_cine(SB_DICOM).shape == nii.shape
    assert read_cine(SB_NIFTI).shape == nii.shape


@needs_data
def test_dicom_two_series_in_one_folder(tmp_path):
    import pydicom

    files = sorted(SB_DICOM.glob("*.dcm"))[:4]
    for i, f in enumerate(files):
        dst = tmp_path / f.name
        shutil.copy(f, dst)
        if i % 2:
            ds = pydicom.dcmread(str(dst))
            ds.SeriesInstanceUID = "1.2.3.4.5"
            ds.save_as(str(dst))
    with pytest.raises(InputError, match="series"):
        read_dicom_folder(tmp_path)


@needs_data
def test_dicom_inconsistent_phase_counts(tmp_path):
    files = sorted(SB_DICOM.glob("*.dcm"), key=lambda f: int(f.stem))
    for f in files[:41]:  # 2 complete slices of 20 phases + 1 extra image
        shutil.copy(f, tmp_path / f.name)
    with pytest.raises(InputError, match="different numbers of phases"):
        read_dicom_folder(tmp_path)


def test_dicom_empty_and_non_dicom_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="No DICOM"):
        read_dicom_folder(empty)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="No DICOM"):
        read_cine(other)


# --- bad inputs -----------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_nifti(tmp_path / "nope.nii.gz")


def test_2d_picture(tmp_path):
    p = _save_xyzt(tmp_path / "pic.nii.gz", _random_xyzt((32, 32)))
    with pytest.raises(InputError, match="2D"):
        read_nifti(p)


def test_5d_array(tmp_path):
    p = _save_xyzt(tmp_path / "five.nii.gz", _random_xyzt((20, 20, 2, 3, 2)))
    with pytest.raises(InputError, match="5 dimensions"):
        read_nifti(p)


def test_truncated_nii_gz(tmp_path):
    p = _save_xyzt(tmp_path / "cut.nii.gz", _random_xyzt((32, 32, 4, 6)))
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match="truncated or corrupt|corrupt"):
        read_nifti(p)


def test_not_gzip_at_all(tmp_path):
    p = tmp_path / "junk.nii.gz"
    p.write_bytes(gzip.compress(b"hello") + b"garbage")
    with pytest.raises(InputError):
        read_nifti(p)


def test_all_zero_image(tmp_path):
    p = _save_xyzt(tmp_path / "zero.nii.gz", np.zeros((20, 20, 2, 3), np.int16))
    with pytest.raises(InputError, match="constant"):
        read_nifti(p)


def test_nan_image(tmp_path):
    arr = np.random.default_rng(1).random((20, 20, 2, 3)).astype(np.float32)
    arr[3, 4, 1, 2] = np.nan
    p = _save_xyzt(tmp_path / "nan.nii.gz", arr)
    with pytest.raises(InputError, match="NaN"):
        read_nifti(p)


def test_labels_out_of_range(tmp_path):
    with pytest.raises(InputError, match="0..255"):
        write_nifti_labels(tmp_path / "x.nii.gz", np.full((1, 1, 16, 16), 300, np.int32))
