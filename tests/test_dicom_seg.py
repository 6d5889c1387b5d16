"""DICOM SEG export (:mod:`napari_cardiac_motion.io.dicom_seg`, ``predict --dicom-seg``).

On the real Sunnybrook DICOM series SC-HF-I-1 (``../shared``; skipped when absent): written labels read
back with highdicom voxel-exact, every SEG frame referencing the source image it was drawn on, segments
numbered by label value with SNOMED CT codes, the model named, patient and study of the source;
``dciodvfy`` (Debian dicom3tools) reports no error of ours. Bad input: a missing tag, NIfTI input and
Enhanced multi-frame sources give one-line errors and write nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from napari_cardiac_motion._sample_data import sample_cine_path  # noqa: E402
from napari_cardiac_motion.cli import main  # noqa: E402
from napari_cardiac_motion.errors import InputError, InputWarning  # noqa: E402
from napari_cardiac_motion.io import dicom_source, read_cine, read_nifti_labels  # noqa: E402
from napari_cardiac_motion.io.dicom_seg import (  # noqa: E402
    DICOM_SEG_DIR,
    SEGMENT_CODES,
    prepare_dicom_seg,
    read_dicom_seg_labels,
    write_dicom_seg,
)
from napari_cardiac_motion.model_description import MR_DEFAULT  # noqa: E402

# the Sunnybrook files carry UIDs with leading zeroes; pydicom warns on every access in the tests
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

META = {"name": "tiny-seg", "version": "7.1"}
#: frames and slices of the real series copied for the CLI tests (a small but real DICOM cine)
SUB_T, SUB_Z = range(0, 3), range(4, 8)


def _quiet_read(f: Path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the Sunnybrook files carry non-conformant UIDs and dates
        return pydicom.dcmread(str(f), **kw)


@pytest.fixture(scope="module")
def sb(shared_data) -> Path:
    folder = shared_data / "sunnybrook_dicom" / "SC-HF-I-1"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.fixture(scope="module")
def sb_source(sb):
    return dicom_source(sb)


@pytest.fixture(scope="module")
def subset(sb, sb_source, tmp_path_factory) -> Path:
    """3 frames × 4 mid-ventricular slices of the real series, copied file by file."""
    folder = tmp_path_factory.mktemp("sb_subset") / "SC-HF-I-1-sub"
    folder.mkdir()
    for t in SUB_T:
        for z in SUB_Z:
            f = sb_source.files[t][z]
            shutil.copy2(f, folder / f.name)
    return folder


def rings(grid: tuple[int, int, int, int], empty_frames=(), empty_slices=()) -> np.ndarray:
    """Synthetic labels ``(T, Z, Y, X)``: an LV disc (1) in a myocardial ring (2) beside an RV disc (3),
    moving 1 px per frame; ``empty_frames`` / ``empty_slices`` hold no label."""
    n_t, n_z, n_y, n_x = grid
    yy, xx = np.mgrid[:n_y, :n_x]
    lab = np.zeros(grid, np.uint8)
    for t in range(n_t):
        if t in empty_frames:
            continue
        r = np.hypot(yy - n_y * 0.5, xx - n_x * 0.45 - t)
        for z in range(n_z):
            if z in empty_slices:
                continue
            s = lab[t, z]
            s[r < 12 + z % 3] = 1
            s[(r >= 12 + z % 3) & (r < 17 + z % 3)] = 2
            s[(np.hypot(yy - n_y * 0.5, xx - n_x * 0.6) < 10) & (r >= 17 + z % 3)] = 3
    return lab


# --- the source mapping -------------------------------------------------------------------------------


def test_reader_keeps_the_source_file_of_each_image(sb, sb_source):
    cine = read_cine(sb)
    assert cine.source == sb_source and sb_source.grid == cine.shape == (20, 12, 256, 256)
    for t, z in ((0, 0), (7, 5), (19, 11)):
        px = _quiet_read(sb_source.files[t][z]).pixel_array
        np.testing.assert_array_equal(cine.data[t, z], px.astype(np.float32))


# --- round trip ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written(sb, sb_source, tmp_path_factory):
    labels = rings(sb_source.grid, empty_frames=(5,), empty_slices=(0, 11))
    folder = tmp_path_factory.mktemp("seg") / DICOM_SEG_DIR
    # the anonymised series has a FrameOfReferenceUID per image and invalid dates: repaired, and said so
    with pytest.warns(InputWarning, match=r"240 different FrameOfReferenceUIDs.*StudyDate '20120000'"):
        res = write_dicom_seg(folder, labels, sb_source, META)
    return labels, res


def test_round_trip_is_voxel_exact(sb, sb_source, written):
    labels, res = written
    # frame 5 holds no label: no instance; every other frame one instance
    assert sorted(res.files) == [t for t in range(20) if t != 5]
    assert sorted(p.name for p in res.folder.iterdir()) == sorted(p.name for p in res.files.values())
    np.testing.assert_array_equal(read_dicom_seg_labels(res.folder, sb), labels)


def test_every_seg_frame_references_its_source_image(sb_source, written):
    labels, res = written
    src_uid = {}
    for t, row in enumerate(sb_source.files):
        for z, f in enumerate(row):
            src_uid[str(_quiet_read(f, stop_before_pixels=True).SOPInstanceUID)] = (t, z)
    for t, path in res.files.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = hd.seg.segread(str(path))
        n_frames = 0
        for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
            der = item.DerivationImageSequence[0].SourceImageSequence
            assert len(der) == 1  # one source image per SEG frame
            t_src, z = src_uid[str(der[0].ReferencedSOPInstanceUID)]
            assert t_src == t
            segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            frame = seg.pixel_array[i] if seg.pixel_array.ndim == 3 else seg.pixel_array
            np.testing.assert_array_equal(frame.astype(bool), labels[t, z] == segment)
            n_frames += 1
        # one frame per (segment, source image) that holds the segment; none for empty images
        expected = sum(int((labels[t, z] == v).any()) for z in range(labels.shape[1]) for v in (1, 2, 3))
        assert n_frames == expected == int(seg.NumberOfFrames)


def test_segments_patient_study_and_algorithm(sb_source, written):
    _, res = written
    src = _quiet_read(sb_source.files[0][0], stop_before_pixels=True)
    series = set()
    for t, path in res.files.items():
        seg = _quiet_read(path)
        series.add(seg.SeriesInstanceUID)
        assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY" and seg.InstanceNumber == t + 1
        assert (seg.PatientID, str(seg.PatientName)) == (src.PatientID, str(src.PatientName))
        assert seg.StudyInstanceUID == src.StudyInstanceUID
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
        assert seg.SeriesInstanceUID != src.SeriesInstanceUID
        segments = list(seg.SegmentSequence)
        assert [int(s.SegmentNumber) for s in segments] == [c.value for c in MR_DEFAULT.classes] == [1, 2, 3]
        for s, c in zip(segments, MR_DEFAULT.classes):
            assert s.SegmentLabel == c.name
            category, prop, region = SEGMENT_CODES[c.key]
            assert s.SegmentedPropertyCategoryCodeSequence[0].CodeValue == category[0]
            assert s.SegmentedPropertyTypeCodeSequence[0].CodeValue == prop[0]
            assert all(seq[0].CodingSchemeDesignator == "SCT" for seq in (
                s.SegmentedPropertyCategoryCodeSequence, s.SegmentedPropertyTypeCodeSequence))
            if region is not None:
                assert s.AnatomicRegionSequence[0].CodeValue == region[0]
            assert s.SegmentAlgorithmType == "AUTOMATIC" and s.SegmentAlgorithmName == "tiny-seg"
            alg = s.SegmentationAlgorithmIdentificationSequence[0]
            assert (alg.AlgorithmName, alg.AlgorithmVersion) == ("tiny-seg", "7.1")
    assert len(series) == 1  # one SEG series for the cine


def test_snomed_codes_exist_in_pydicom_dictionary():
    from pydicom.sr._concepts_dict import concepts

    sct = concepts["SCT"]
    known = {value for entry in sct.values() for value in entry}
    for category, prop, region in SEGMENT_CODES.values():
        for code in (category, prop) + ((region,) if region else ()):
            assert code[0] in known, code


def test_labels_on_another_grid_or_unknown_values_are_refused(sb_source, tmp_path):
    with pytest.raises(InputError, match="grid"):
        write_dicom_seg(tmp_path / "a", np.zeros((20, 12, 128, 128), np.uint8), sb_source, META)
    bad = np.zeros(sb_source.grid, np.uint8)
    bad[0, 5, 100:110, 100:110] = 7
    with pytest.raises(InputError, match=r"Label values \[7\]"):
        write_dicom_seg(tmp_path / "b", bad, sb_source, META)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert list(tmp_path.iterdir()) == []


# --- CLI ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_out(subset, tmp_path_factory):
    """``predict SUBSET --dicom-seg`` with the shipped model (about 10 s on 2 cores: 12 images)."""
    out = tmp_path_factory.mktemp("cli") / "out"
    assert main(["predict", str(subset), "--out", str(out), "--dicom-seg", "--device", "cpu"]) == 0
    return out


def test_cli_dicom_seg_matches_labels_nifti(subset, cli_out):
    labels = read_nifti_labels(cli_out / "labels.nii.gz")
    assert labels.shape == (len(SUB_T), len(SUB_Z), 256, 256)
    assert set(np.unique(labels)) == {0, 1, 2, 3}  # the shipped model finds the heart
    back = read_dicom_seg_labels(cli_out / DICOM_SEG_DIR, subset)
    np.testing.assert_array_equal(back, labels)
    model = json.loads((cli_out / "result.json").read_text())["model"]
    for path in (cli_out / DICOM_SEG_DIR).glob("*.seg.dcm"):
        seg = _quiet_read(path)
        alg = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert (alg.AlgorithmName, alg.AlgorithmVersion) == (model["name"], model["version"])


def test_cli_refuses_nifti_input_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", str(sample_cine_path()), "--out", str(out), "--dicom-seg"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--dicom-seg needs a DICOM series" in err and "NIfTI" in err
    assert not out.exists()


def _without(tag: str, src: Path, dst: Path, victim_index: int = 5) -> Path:
    shutil.copytree(src, dst)
    victim = sorted(dst.glob("*.dcm"))[victim_index]
    ds = _quiet_read(victim)
    delattr(ds, tag)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(str(victim))
    return victim


def test_missing_tag_is_one_line_naming_the_tag_and_nothing_is_written(subset, tmp_path, capsys):
    broken = tmp_path / "broken"
    victim = _without("FrameOfReferenceUID", subset, broken)
    with pytest.raises(InputError, match=rf"{victim.name} .*FrameOfReferenceUID \(0020,0052\)"):
        prepare_dicom_seg(broken)
    out = tmp_path / "out"
    code = main(["predict", str(broken), "--out", str(out), "--dicom-seg"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "FrameOfReferenceUID (0020,0052)" in err and "export the series again" in err
    assert not out.exists()  # checked before predicting: no labels.nii.gz, no half SEG


def test_failed_export_keeps_the_previous_one(subset, tmp_path):
    src = dicom_source(subset)
    labels = rings(src.grid)
    folder = tmp_path / "out" / DICOM_SEG_DIR
    first = write_dicom_seg(folder, labels, src, META)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    broken = tmp_path / "broken"
    _without("StudyInstanceUID", subset, broken)
    with pytest.raises(InputError, match=r"StudyInstanceUID \(0020,000D\)"):
        write_dicom_seg(folder, labels, dicom_source(broken), META)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in (tmp_path / "out").iterdir()] == [DICOM_SEG_DIR]  # no temporary left
    # a second export replaces the first one whole
    second = write_dicom_seg(folder, rings(src.grid, empty_frames=(1,)), src, META)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in second.files.values())
    assert first.series_uid != second.series_uid


def test_enhanced_multiframe_source_is_refused(tmp_path):
    from test_dicom import dicom_truth, write_enhanced

    write_enhanced(tmp_path / "mf" / "cine.dcm", dicom_truth(), positions=[0.0, 8.0, 16.0, 24.0])
    with pytest.raises(InputError, match="Enhanced"):
        prepare_dicom_seg(tmp_path / "mf")


# --- dciodvfy ---------------------------------------------------------------------------------------------


def _dciodvfy(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    return (proc.stdout + proc.stderr).splitlines()


_LEADING_ZERO = re.compile(r"^Error - Value invalid for this VR - .* UI .*<([0-9.]+)> - Leading zeroes")
_SUMMARY = "Error - Dicom dataset contains invalid data values for Value Representations"


def _source_uids(folder: Path) -> set[str]:
    uids: set[str] = set()

    def collect(ds):
        for el in ds:
            if el.VR == "SQ":
                for item in el.value:
                    collect(item)
            elif el.VR == "UI" and el.value:
                uids.add(str(el.value))

    for f in folder.glob("*.dcm"):
        collect(_quiet_read(f, stop_before_pixels=True))
    return uids


def _our_errors(lines: list[str], source_uids: set[str]) -> list[str]:
    """dciodvfy's error lines, less the invalid UIDs the SEG must copy from its source to reference it
    (and the summary line they cause)."""
    errors = [ln for ln in lines if ln.startswith("Error")]
    inherited = [ln for ln in errors if (m := _LEADING_ZERO.match(ln)) and m.group(1) in source_uids]
    return [ln for ln in errors if ln not in inherited and not (ln == _SUMMARY and inherited)]


def test_dciodvfy_reports_no_error_of_ours_on_the_real_series(sb, written):
    _, res = written
    uids = _source_uids(sb)
    for path in res.files.values():
        lines = _dciodvfy(path)
        assert _our_errors(lines, uids) == [], (path.name, lines)


@pytest.fixture(scope="module")
def clean_subset(subset, tmp_path_factory) -> Path:
    """The subset with valid UIDs (the real files have components with leading zeroes) and valid dates."""
    from pydicom.uid import generate_uid

    mapping: dict[str, str] = {}

    def fix(ds):
        for el in ds:
            if el.VR == "SQ":
                for item in el.value:
                    fix(item)
            elif el.VR == "UI" and el.value and re.search(r"\.0\d", str(el.value)):
                el.value = mapping.setdefault(str(el.value), generate_uid(entropy_srcs=[str(el.value)]))
            elif el.VR == "DA" and el.value:
                el.value = "20120101"

    folder = tmp_path_factory.mktemp("clean") / "sub"
    folder.mkdir()
    for f in subset.glob("*.dcm"):
        ds = _quiet_read(f)
        fix(ds)
        fix(ds.file_meta)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(str(folder / f.name))
    return folder


def test_dciodvfy_reports_no_error_at_all_for_a_conformant_source(clean_subset, tmp_path):
    src = dicom_source(clean_subset)
    res = write_dicom_seg(tmp_path / DICOM_SEG_DIR, rings(src.grid), src, META)
    for path in res.files.values():
        lines = _dciodvfy(path)
        assert [ln for ln in lines if ln.startswith("Error")] == [], (path.name, lines)


# --- the Cardiac function panel's export ---------------------------------------------------------------


def _viewer(make_napari_viewer, labels: np.ndarray, source_path: str):
    viewer = make_napari_viewer()
    meta = {"spacing": (10.0, 1.367188, 1.367188), "frame_interval_ms": 37.5}
    image = viewer.add_image(labels.astype(np.float32), name="cine", scale=(1.0, *meta["spacing"]),
                             metadata={**meta, "source_path": source_path})
    seg = viewer.add_labels(labels.copy(), name="segmentation", scale=image.scale,
                            metadata={**meta, "source_layer": "cine", "model": "panel-model", "model_version": "2"})
    return viewer, seg


def test_panel_exports_dicom_seg_for_a_dicom_image(make_napari_viewer, qtbot, subset, tmp_path):
    pytest.importorskip("qtpy")
    from napari_cardiac_motion.widgets.function_widget import FunctionWidget

    labels = rings(dicom_source(subset).grid)
    viewer, seg = _viewer(make_napari_viewer, labels, str(subset))
    widget = FunctionWidget(viewer)
    qtbot.waitUntil(lambda: widget.measurements is not None, timeout=60_000)
    assert widget.dicom_seg_check.isEnabled() and widget.dicom_seg_check.isChecked()
    assert widget.dicom_seg_note.text() == ""
    widget.export(tmp_path / "export")
    qtbot.waitUntil(lambda: widget.last_export is not None or "failed" in widget.status.text(), timeout=60_000)
    assert widget.last_export is not None, widget.status.text()
    folder = tmp_path / "export" / DICOM_SEG_DIR
    assert {p for k, p in widget.last_export.items() if k.startswith("dicom_seg")} == set(folder.iterdir())
    assert (tmp_path / "export" / "measurements.json").exists()
    np.testing.assert_array_equal(read_dicom_seg_labels(folder, subset), labels)
    alg = _quiet_read(next(folder.iterdir())).SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (alg.AlgorithmName, alg.AlgorithmVersion) == ("panel-model", "2")


def test_panel_says_why_not_for_a_nifti_image(make_napari_viewer, qtbot, tmp_path):
    pytest.importorskip("qtpy")
    from napari_cardiac_motion.widgets.function_widget import FunctionWidget

    labels = rings((3, 2, 64, 64))
    viewer, seg = _viewer(make_napari_viewer, labels, str(sample_cine_path()))
    widget = FunctionWidget(viewer)
    qtbot.waitUntil(lambda: widget.measurements is not None, timeout=60_000)
    assert not widget.dicom_seg_check.isEnabled() and not widget.dicom_seg_check.isChecked()
    assert widget.dicom_seg_note.isVisibleTo(widget) and "not available" in widget.dicom_seg_note.text()
    why = widget.dicom_seg_note.toolTip()  # the whole reason, on hover (the dock is narrow)
    assert why.startswith("DICOM SEG not available") and "NIfTI" in why and "DICOM" in why
    assert widget.dicom_seg_check.toolTip() == why
    widget.export(tmp_path / "export")
    qtbot.waitUntil(lambda: widget.last_export is not None, timeout=60_000)
    assert not (tmp_path / "export" / DICOM_SEG_DIR).exists()
