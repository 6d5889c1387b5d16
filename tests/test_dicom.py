"""DICOM cines: Enhanced multi-frame files, missing PixelSpacing, slice gaps, missing phases.

Most tests build small synthetic series with pydicom (no shared data needed); one rebuilds the real
Sunnybrook series as an Enhanced multi-frame file and checks it reads voxel-identical.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from napari_cardiac_motion.errors import InputError, InputWarning  # noqa: E402
from napari_cardiac_motion.io import read_cine, read_dicom_folder  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SB_DICOM = DATA / "sunnybrook_dicom" / "SC-HF-I-1"

MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
# An oblique short-axis orientation (row, column direction cosines, LPS)
IOP = [-0.104592, 0.346381, -0.932245, -0.733192, -0.660188, -0.163037]
NORMAL = np.cross(IOP[:3], IOP[3:])
ORIGIN = -100.0 * np.array(IOP[:3]) - 80.0 * np.array(IOP[3:])  # in-plane: positions along NORMAL start at 0


def _base(sop_class: str, series_uid: str, rows: int, cols: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    return ds


def _save(ds: Dataset, path: Path) -> None:
    ds.save_as(str(path), enforce_file_format=True)


def dicom_truth(t=3, z=4, y=20, x=24, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, (t, z, y, x)).astype(np.int16)


def _write_single_frames(folder: Path, data: np.ndarray, positions, spacing=(1.5, 1.25), trigger_ms=40.0,
                         skip=(), pixel_spacing=True) -> Path:
    """Classic series: one file per (slice z, phase t); ``skip`` lists (t, z) pairs to leave out."""
    folder.mkdir(parents=True, exist_ok=True)
    n_t, n_z, rows, cols = data.shape
    uid = generate_uid()
    k = 0
    for z in range(n_z):
        for t in range(n_t):
            if (t, z) in skip:
                continue
            ds = _base(MR, uid, rows, cols)
            k += 1
            ds.InstanceNumber = k
            ds.ImageOrientationPatient = IOP
            ds.ImagePositionPatient = list(ORIGIN + positions[z] * NORMAL)
            if pixel_spacing:
                ds.PixelSpacing = list(spacing)
            ds.SliceThickness = 8
            ds.TriggerTime = t * trigger_ms
            ds.PixelData = np.ascontiguousarray(data[t, z]).tobytes()
            _save(ds, folder / f"{k}.dcm")
    return folder


def write_enhanced(path: Path, data: np.ndarray, positions, spacing=(1.5, 1.25), trigger_ms=40.0,
                    order=None, skip=(), slope=1.0, intercept=0.0, pixel_measures=True,
                    series_uid=None) -> Path:
    """One Enhanced MR multi-frame file; frames in ``order`` (list of (t, z)), geometry per frame."""
    n_t, n_z, rows, cols = data.shape
    order = [(t, z) for z in range(n_z) for t in range(n_t)] if order is None else order
    order = [tz for tz in order if tz not in skip]
    ds = _base(ENHANCED_MR, series_uid or generate_uid(), rows, cols)
    ds.NumberOfFrames = len(order)
    ds.InstanceNumber = 1
    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = IOP
    shared.PlaneOrientationSequence = Sequence([po])
    if pixel_measures:
        pm = Dataset()
        pm.PixelSpacing = list(spacing)
        pm.SliceThickness = 8
        shared.PixelMeasuresSequence = Sequence([pm])
    pv = Dataset()
    pv.RescaleSlope, pv.RescaleIntercept, pv.RescaleType = slope, intercept, "US"
    shared.PixelValueTransformationSequence = Sequence([pv])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for t, z in order:
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = list(ORIGIN + positions[z] * NORMAL)
        item.PlanePositionSequence = Sequence([pp])
        fc = Dataset()
        fc.TemporalPositionIndex = t + 1
        fc.InStackPositionNumber = z + 1
        item.FrameContentSequence = Sequence([fc])
        cs = Dataset()
        cs.NominalCardiacTriggerDelayTime = float(t * trigger_ms)
        item.CardiacSynchronizationSequence = Sequence([cs])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.PixelData = np.ascontiguousarray(np.stack([data[t, z] for t, z in order])).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(ds, path)
    return path


def _no_input_warnings(fn, *args):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn(*args)
    assert not [w for w in rec if issubclass(w.category, InputWarning)], [str(w.message) for w in rec]
    return out


# --- Enhanced multi-frame ---------------------------------------------------------------------------


def test_enhanced_multiframe_reads_like_single_frames(tmp_path):
    data = dicom_truth()
    positions = np.array([0.0, 8.0, 16.0, 24.0])
    classic = read_dicom_folder(_write_single_frames(tmp_path / "classic", data, positions))
    rng = np.random.default_rng(1)
    order = [(t, z) for z in range(4) for t in range(3)]
    order = [order[i] for i in rng.permutation(len(order))]  # frames stored in a scrambled order
    write_enhanced(tmp_path / "enh" / "cine.dcm", data, positions, order=order)
    enh = _no_input_warnings(read_dicom_folder, tmp_path / "enh")
    np.testing.assert_array_equal(classic.data, data.astype(np.float32))
    np.testing.assert_array_equal(enh.data, classic.data)
    np.testing.assert_allclose(enh.spacing, classic.spacing)
    np.testing.assert_allclose(enh.spacing, (8.0, 1.5, 1.25), rtol=1e-5)
    np.testing.assert_allclose(enh.affine, classic.affine)
    assert enh.frame_interval_ms == pytest.approx(40.0) == classic.frame_interval_ms
    # the file itself (not the folder) opens too
    np.testing.assert_array_equal(read_cine(tmp_path / "enh" / "cine.dcm").data, classic.data)


def test_enhanced_one_file_per_slice_with_rescale(tmp_path):
    data = dicom_truth(t=4, z=3)
    positions = np.array([0.0, 10.0, 20.0])
    uid = generate_uid()
    for z in range(3):
        write_enhanced(tmp_path / f"slice{z}.dcm", data, positions, order=[(t, z) for t in (3, 1, 0, 2)],
                        slope=2.0, intercept=-5.0, series_uid=uid)
    cine = read_dicom_folder(tmp_path)
    np.testing.assert_array_equal(cine.data, data.astype(np.float32) * 2.0 - 5.0)
    assert cine.spacing[0] == pytest.approx(10.0)


def test_enhanced_without_trigger_times_uses_temporal_position_index(tmp_path):
    data = dicom_truth(t=3, z=3)
    p = write_enhanced(tmp_path / "c.dcm", data, [0.0, 8.0, 16.0], order=[(t, z) for t in (2, 0, 1) for z in range(3)])
    ds = pydicom.dcmread(str(p))
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.CardiacSynchronizationSequence
    ds.save_as(str(p))
    cine = read_dicom_folder(tmp_path)
    np.testing.assert_array_equal(cine.data, data.astype(np.float32))
    assert cine.frame_interval_ms == 0.0  # unknown, not invented


def test_enhanced_frame_count_mismatch_is_an_input_error(tmp_path):
    p = write_enhanced(tmp_path / "c.dcm", dicom_truth(t=2, z=3), [0.0, 8.0, 16.0])
    ds = pydicom.dcmread(str(p))
    ds.PerFrameFunctionalGroupsSequence = Sequence(list(ds.PerFrameFunctionalGroupsSequence)[:-1])
    ds.save_as(str(p))
    with pytest.raises(InputError, match=r"6 frames but 5 per-frame"):
        read_dicom_folder(tmp_path)


@pytest.mark.skipif(not SB_DICOM.is_dir(), reason="shared Sunnybrook DICOM not available")
def test_enhanced_built_from_sunnybrook_equals_single_frame_series(tmp_path):
    """The real 240-file series, re-packed as one Enhanced multi-frame file, reads voxel-identical."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the real files carry non-conformant UIDs
        files = sorted(SB_DICOM.glob("*.dcm"), key=lambda f: int(f.stem))
        dss = [pydicom.dcmread(str(f)) for f in files]
    d0 = dss[0]
    mf = _base(ENHANCED_MR, generate_uid(), int(d0.Rows), int(d0.Columns))
    mf.BitsStored, mf.HighBit, mf.PixelRepresentation = d0.BitsStored, d0.HighBit, d0.PixelRepresentation
    mf.NumberOfFrames = len(dss)
    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = list(d0.ImageOrientationPatient)
    shared.PlaneOrientationSequence = Sequence([po])
    pm = Dataset()
    pm.PixelSpacing = list(d0.PixelSpacing)
    pm.SliceThickness = d0.SliceThickness
    shared.PixelMeasuresSequence = Sequence([pm])
    mf.SharedFunctionalGroupsSequence = Sequence([shared])
    order = np.random.default_rng(0).permutation(len(dss))
    per = []
    for i in order:
        d = dss[i]
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = list(d.ImagePositionPatient)
        item.PlanePositionSequence = Sequence([pp])
        cs = Dataset()
        cs.NominalCardiacTriggerDelayTime = float(d.TriggerTime)
        item.CardiacSynchronizationSequence = Sequence([cs])
        per.append(item)
    mf.PerFrameFunctionalGroupsSequence = Sequence(per)
    mf.PixelData = b"".join(dss[i].PixelData for i in order)
    (tmp_path / "mf").mkdir()
    _save(mf, tmp_path / "mf" / "cine.dcm")

    single = read_dicom_folder(SB_DICOM)
    multi = _no_input_warnings(read_dicom_folder, tmp_path / "mf")
    assert multi.shape == single.shape == (20, 12, 256, 256)
    np.testing.assert_array_equal(multi.data, single.data)
    np.testing.assert_allclose(multi.spacing, single.spacing)
    np.testing.assert_allclose(multi.affine, single.affine)
    assert multi.frame_interval_ms == pytest.approx(single.frame_interval_ms)


# --- missing PixelSpacing -----------------------------------------------------------------------------


def test_missing_pixel_spacing_is_an_input_error_naming_the_tag(tmp_path):
    folder = _write_single_frames(tmp_path / "s", dicom_truth(t=2, z=3), [0.0, 8.0, 16.0], pixel_spacing=False)
    with pytest.raises(InputError, match=r"PixelSpacing \(0028,0030\).*pixel size in mm is unknown") as ei:
        read_dicom_folder(folder)
    assert "Export the series again" in str(ei.value)


def test_missing_pixel_measures_in_enhanced_is_an_input_error(tmp_path):
    write_enhanced(tmp_path / "c.dcm", dicom_truth(t=2, z=3), [0.0, 8.0, 16.0], pixel_measures=False)
    with pytest.raises(InputError, match=r"PixelMeasuresSequence \(0028,9110\) > PixelSpacing \(0028,0030\)"):
        read_dicom_folder(tmp_path)


# --- slice gaps and missing phases ---------------------------------------------------------------------


def test_slice_gap_is_a_warning_naming_the_gap_in_mm(tmp_path):
    data = dicom_truth(t=2, z=5)
    positions = np.array([0.0, 10.0, 20.0, 40.0, 50.0])  # the slice at 30 mm is missing
    folder = _write_single_frames(tmp_path / "gap", data, positions)
    with pytest.warns(InputWarning, match=r"gap of 20\.00 mm between slices 2 and 3.*about 1 slice\(s\) missing"):
        cine = read_dicom_folder(folder)
    assert cine.shape == (2, 5, 20, 24)
    assert len(cine.warnings) == 1 and "10.00 mm apart" in cine.warnings[0]
    # the same gap in an Enhanced file
    write_enhanced(tmp_path / "enh" / "c.dcm", data, positions)
    with pytest.warns(InputWarning, match=r"gap of 20\.00 mm"):
        read_dicom_folder(tmp_path / "enh")


def test_uneven_spacing_is_named_and_even_spacing_is_silent(tmp_path):
    data = dicom_truth(t=2, z=4)
    with pytest.warns(InputWarning, match=r"only 6\.00 mm between slices 1 and 2"):
        read_dicom_folder(_write_single_frames(tmp_path / "uneven", data, np.array([0.0, 10.0, 16.0, 26.0])))
    cine = _no_input_warnings(read_dicom_folder, _write_single_frames(tmp_path / "even", data,
                                                                      np.array([0.0, 10.0, 20.0, 30.0])))
    assert cine.warnings == []


def test_missing_phase_names_the_slice_position_and_phase(tmp_path):
    data = dicom_truth(t=3, z=3)
    positions = np.array([0.0, 8.0, 16.0])
    write_enhanced(tmp_path / "c.dcm", data, positions, skip={(1, 2)})
    with pytest.raises(InputError, match=r"slice at 16\.0 mm has 2 of 3 phases \(missing TemporalPositionIndex 2\)"):
        read_dicom_folder(tmp_path)
    folder = _write_single_frames(tmp_path / "classic", data, positions, skip={(0, 1)})
    with pytest.raises(InputError, match=r"slice at 8\.0 mm has 2 of 3 phases"):
        read_dicom_folder(folder)
