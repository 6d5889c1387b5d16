"""Small synthetic echo files for the echo tests (written by the tests themselves; no real data)."""

from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np


def beating_clip(n_frames: int = 6, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """``(T, Y, X)`` uint8: a bright wall around a dark cavity whose radius shrinks then grows, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    out = np.zeros((n_frames, height, width), np.uint8)
    for t in range(n_frames):
        r = 12.0 - 4.0 * np.sin(np.pi * t / max(n_frames - 1, 1))
        d = np.hypot(yy - height / 2, xx - width / 2)
        img = np.where(d < r, 30.0, np.where(d < r + 5, 200.0, 90.0)) + rng.normal(0, 5, d.shape)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def write_2d_t_nifti(path: Path, clip_tyx: np.ndarray, pixel_mm: float = 0.3, descrip: str = "",
                     units: str | None = "mm") -> Path:
    """A CAMUS-like ``(X, Y, T)`` NIfTI: affine diag(-px, -px, 1), third pixdim 1.0 (a frame counter)."""
    arr = np.transpose(clip_tyx)
    img = nib.Nifti1Image(arr, np.diag([-pixel_mm, -pixel_mm, 1.0, 1.0]))
    img.header.set_zooms((pixel_mm, pixel_mm, 1.0)[: arr.ndim])
    if units:
        img.header.set_xyzt_units(units)
    if descrip:
        img.header["descrip"] = descrip.encode("ascii")
    nib.save(img, str(path))
    return path


def write_mhd(path: Path, clip_tyx: np.ndarray, spacing=(0.308, 0.154, 1.0)) -> Path:
    """A MetaImage ``.mhd`` + ``.raw`` pair of ``(T, Y, X)`` (SimpleITK's order) with ``spacing`` (x, y, t)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(clip_tyx)
    img.SetSpacing(tuple(float(s) for s in spacing[: clip_tyx.ndim]))
    sitk.WriteImage(img, str(path), False)  # uncompressed: .raw beside the .mhd
    return path


def _jpeg_rgb(frame_rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame_rgb, "RGB").save(buf, format="JPEG", quality=95, subsampling=1)
    return buf.getvalue()


def write_us_multiframe(path: Path, clip_tyx: np.ndarray, delta_cm: tuple[float, float] | None = (0.03, 0.025),
                        frame_time_ms: float | None = 20.0, with_pixels: bool = True) -> Path:
    """A DICOM US Multi-frame Image Storage file with JPEG Baseline YBR_FULL_422 frames (grey clip drawn
    in colour: a tint that luminance removes), an ultrasound region with ``delta_cm`` = (PhysicalDeltaY,
    PhysicalDeltaX) in cm."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, generate_uid

    t, h, w = clip_tyx.shape
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientName = "Synthetic^Echo"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = h, w, t
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if frame_time_ms is not None:
        ds.FrameTime = f"{frame_time_ms:g}"
    if delta_cm is not None:
        reg = Dataset()
        reg.RegionSpatialFormat, reg.RegionDataType, reg.RegionFlags = 1, 1, 0
        reg.RegionLocationMinX0, reg.RegionLocationMinY0 = 0, 0
        reg.RegionLocationMaxX1, reg.RegionLocationMaxY1 = w - 1, h - 1
        reg.PhysicalUnitsXDirection, reg.PhysicalUnitsYDirection = 3, 3
        reg.PhysicalDeltaX, reg.PhysicalDeltaY = delta_cm[1], delta_cm[0]
        ds.SequenceOfUltrasoundRegions = [reg]
    if with_pixels:
        tint = np.array([1.0, 0.9, 0.8])
        frames = [_jpeg_rgb(np.clip(f[..., None] * tint, 0, 255).astype(np.uint8)) for f in clip_tyx]
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_video(path: Path, clip_tyx: np.ndarray, fps: int = 25, codec: str = "mpeg4") -> Path:
    """An MP4/AVI of the grey clip through PyAV (``codec`` ``mpeg4`` or ``mjpeg``)."""
    import av

    t, h, w = clip_tyx.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.options = {"qscale": "2"} if codec == "mjpeg" else {"b": "2000000"}
        for f in clip_tyx:
            frame = av.VideoFrame.from_ndarray(np.repeat(f[..., None], 3, axis=2), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ---------------------------------------------------------------------------------------------------------
# tests

import warnings  # noqa: E402

import pytest  # noqa: E402

from napari_cardiac_motion._reader import (  # noqa: E402
    NO_LAYERS,
    get_dicom_reader,
    get_dicom_us_reader,
    get_mhd_reader,
    get_nifti_reader,
    get_video_reader,
)
from napari_cardiac_motion.errors import InputError, InputWarning  # noqa: E402
from napari_cardiac_motion.io import decide_layout, read_cine, read_nifti_label_frames  # noqa: E402

ECHO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "echo"


def _read(path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cine = read_cine(path, **kw)
    return cine, [str(w.message) for w in caught if issubclass(w.category, InputWarning)]


def test_2d_t_nifti_auto_from_descrip_and_pixel_size(tmp_path):
    clip = beating_clip()
    for descrip in ("CAMUS patient0001 2CH half_sequence X,Y,T", ""):
        p = write_2d_t_nifti(tmp_path / f"clip{len(descrip)}.nii.gz", clip, 0.3, descrip)
        cine, warned = _read(p)
        assert cine.shape == (6, 1, 48, 64)
        np.testing.assert_array_equal(cine.data[:, 0], clip.astype(np.float32))
        np.testing.assert_allclose(cine.spacing[1:], (0.3, 0.3), rtol=1e-6)
        assert cine.spacing_known and cine.modality == "US"
        assert any("2D+t" in w and "layout 'volume'" in w for w in warned)
        reason = "X,Y,T" if descrip else "ultrasound grid"
        assert any(reason.lower() in w.lower() for w in cine.warnings)


def test_3d_nifti_layout_override_and_volume_default(tmp_path):
    clip = beating_clip()
    p = write_2d_t_nifti(tmp_path / "clip.nii.gz", clip, 0.3)
    vol, _ = _read(p, layout="volume")
    assert vol.shape == (1, 6, 48, 64)
    # an MR-like 3D volume (1.5 mm pixels, 8 mm slices) stays a volume under "auto"
    img = nib.Nifti1Image(np.transpose(clip, (2, 1, 0)), np.diag([1.5, 1.5, 8.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(tmp_path / "mr.nii.gz"))
    mr, _ = _read(tmp_path / "mr.nii.gz")
    assert mr.shape == (1, 6, 48, 64) and mr.spacing[0] == pytest.approx(8.0)
    forced, _ = _read(tmp_path / "mr.nii.gz", layout="2d+t")
    assert forced.shape == (6, 1, 48, 64)
    with pytest.raises(InputError, match="Unknown layout"):
        read_cine(p, layout="2d")


def test_decide_layout_rules():
    assert decide_layout((64, 48, 20), (0.3, 0.3, 1.0))[0] == "2d+t"
    assert decide_layout((224, 224, 2), (1.0, 1.0, 1.0), "CAMUS patient0017 2CH [ED,ES] 224x224")[0] == "2d+t"
    assert decide_layout((224, 224, 2), (1.0, 1.0, 1.0))[0] == "volume"
    assert decide_layout((64, 48, 20), (0.5, 0.5, 0.02), time_unit="sec")[0] == "2d+t"
    assert decide_layout((64, 48, 12), (1.4, 1.4, 8.0), time_unit="msec")[0] == "volume"
    assert decide_layout((64, 48, 10), (1.4, 1.4, 8.0), time_unit="sec")[0] == "volume"
    assert decide_layout((64, 48), (0.3, 0.3))[0] == "2d+t"
    assert decide_layout((64, 48, 10, 20), (1.4, 1.4, 8.0, 40.0))[0] == "volume"


def test_placeholder_spacing_is_unknown_and_2d_file_is_one_frame(tmp_path):
    clip = beating_clip()
    p = write_2d_t_nifti(tmp_path / "p.nii.gz", clip, 1.0, "X,Y,T", units=None)
    cine, warned = _read(p)
    assert not cine.spacing_known and any("no physical pixel size" in w for w in warned)
    timed = nib.Nifti1Image(np.transpose(clip), np.diag([0.5, 0.5, 1.0, 1.0]))
    timed.header.set_zooms((0.5, 0.5, 0.02))
    timed.header.set_xyzt_units("mm", "sec")
    nib.save(timed, str(tmp_path / "timed.nii.gz"))
    c_t, _ = _read(tmp_path / "timed.nii.gz")
    assert c_t.shape == (6, 1, 48, 64) and c_t.frame_interval_ms == pytest.approx(20.0)
    one = write_2d_t_nifti(tmp_path / "one.nii.gz", clip[0], 0.3)
    with pytest.raises(InputError, match="single 2D image"):
        read_cine(one)  # "auto": a picture is not a cine
    c1, warned = _read(one, layout="2d+t")
    assert c1.shape == (1, 1, 48, 64) and c1.spacing_known
    assert any("single 2D frame" in w for w in warned)
    lab = read_nifti_label_frames(one)
    assert lab.data.shape == (1, 48, 64) and lab.data.dtype == np.uint8


def test_mhd_raw_pair(tmp_path):
    pytest.importorskip("SimpleITK")
    clip = beating_clip()
    p = write_mhd(tmp_path / "patient0001_2CH_sequence.mhd", clip, (0.308, 0.154, 1.0))
    assert (tmp_path / "patient0001_2CH_sequence.raw").exists()
    cine, _ = _read(p)
    assert cine.shape == (6, 1, 48, 64)
    np.testing.assert_allclose(cine.spacing, (1.0, 0.154, 0.308), rtol=1e-6)
    np.testing.assert_array_equal(cine.data[:, 0], clip)
    assert cine.modality == "US" and cine.name == "patient0001_2CH_sequence"
    assert get_mhd_reader(str(p)) is not None and get_mhd_reader(str(tmp_path / "x.nii.gz")) is None
    single = write_mhd(tmp_path / "ed.mhd", clip[0], (0.308, 0.154))
    assert read_cine(single).shape == (1, 1, 48, 64)
    (tmp_path / "patient0001_2CH_sequence.raw").write_bytes(b"\0" * 10)  # truncated data file
    with pytest.raises(InputError, match="missing or truncated"):
        read_cine(p)


def test_dicom_us_multiframe_jpeg(tmp_path):
    pytest.importorskip("PIL")
    clip = beating_clip(n_frames=5)
    p = write_us_multiframe(tmp_path / "us.dcm", clip)
    cine, warned = _read(p)
    assert cine.shape == (5, 1, 48, 64) and cine.modality == "US" and cine.spacing_known
    np.testing.assert_allclose(cine.spacing[1:], (0.3, 0.25), rtol=1e-6)  # cm -> mm, (dy, dx)
    assert cine.frame_interval_ms == pytest.approx(20.0)
    # colour -> grey: luminance of the tinted frames, within JPEG loss
    lum = clip.astype(np.float32) * (0.299 * 1.0 + 0.587 * 0.9 + 0.114 * 0.8)
    assert float(np.mean(np.abs(cine.data[:, 0] - lum))) < 4.0
    assert not warned
    folder_cine = read_cine(tmp_path)  # a folder holding one US clip
    assert folder_cine.shape == cine.shape and not folder_cine.warnings
    write_us_multiframe(tmp_path / "zz_second.dcm", clip[:2])
    two, warned = _read(tmp_path)
    assert two.shape == cine.shape and any("2 DICOM files" in w for w in warned)
    (tmp_path / "zz_second.dcm").unlink()
    layers = get_dicom_us_reader(str(p))(str(p))
    assert layers[0][0].shape == (5, 1, 48, 64) and layers[0][1]["metadata"]["modality"] == "US"
    assert get_dicom_reader(str(tmp_path)) is not None


def test_dicom_us_without_regions_or_pixels(tmp_path):
    clip = beating_clip(n_frames=3)
    p = write_us_multiframe(tmp_path / "noreg.dcm", clip, delta_cm=None, frame_time_ms=None)
    cine, warned = _read(p)
    assert not cine.spacing_known and cine.frame_interval_ms == 0.0
    assert any("no physical pixel size" in w for w in warned)
    empty = write_us_multiframe(tmp_path / "nopix.dcm", clip, with_pixels=False)
    with pytest.raises(InputError, match="no image data"):
        read_cine(empty)


@pytest.mark.parametrize("suffix,codec", [(".mp4", "mpeg4"), (".avi", "mjpeg")])
def test_video_no_spacing(tmp_path, suffix, codec):
    pytest.importorskip("av")
    clip = beating_clip(n_frames=8)
    p = write_video(tmp_path / f"clip{suffix}", clip, fps=25, codec=codec)
    cine, warned = _read(p)
    assert cine.shape == (8, 1, 48, 64) and cine.modality == "US"
    assert not cine.spacing_known and cine.spacing == (1.0, 1.0, 1.0)
    assert cine.frame_interval_ms == pytest.approx(40.0, rel=1e-3)
    assert any("video has no physical pixel size" in w for w in warned)
    assert float(np.mean(np.abs(cine.data[:, 0] - clip))) < 8.0
    reader = get_video_reader(str(p))
    data, kwargs, kind = reader(str(p))[0]
    assert kind == "image" and kwargs["metadata"]["spacing_known"] is False
    assert "pixels, not mm" in kwargs["metadata"]["spacing_note"]


def test_bad_echo_files_one_line_errors(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b garbage")
    arr = np.full((20, 20, 4), np.nan, np.float32)
    img = nib.Nifti1Image(arr, np.diag([0.3, 0.3, 1.0, 1.0]))
    img.header["descrip"] = b"X,Y,T"
    nib.save(img, str(tmp_path / "nan.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 4, 2), np.float32), np.eye(4)), str(tmp_path / "5d.nii.gz"))
    cases = [("bad.mp4", "video"), ("bad.nii.gz", "NIfTI"), ("nan.nii.gz", "NaN"), ("5d.nii.gz", "dimensions")]
    for name, word in cases:
        with pytest.raises(InputError, match=word) as exc:
            read_cine(tmp_path / name)
        assert "\n" not in str(exc.value)
    if get_video_reader(str(tmp_path / "bad.mp4")) is not None:
        assert get_video_reader(str(tmp_path / "bad.mp4"))(str(tmp_path / "bad.mp4")) == NO_LAYERS


def test_nifti_reader_layer_metadata_echo(tmp_path):
    p = write_2d_t_nifti(tmp_path / "clip.nii.gz", beating_clip(), 0.3, "X,Y,T")
    data, kwargs, _ = get_nifti_reader(str(p))(str(p))[0]
    assert data.shape == (6, 1, 48, 64)
    md = kwargs["metadata"]
    assert md["spacing_known"] is True and md["modality"] == "US" and "spacing_note" not in md
    np.testing.assert_allclose(kwargs["scale"][2:], (0.3, 0.3), rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# real data (../shared/data/echo), skipped when absent

@pytest.mark.skipif(not (ECHO / "camus_fullres").is_dir(), reason="../shared/data/echo not present")
def test_camus_real_files():
    seq, _ = _read(ECHO / "camus_fullres" / "patient0015" / "patient0015_4CH_seq.nii.gz")
    assert seq.shape[:2] == (27, 1) and seq.spacing_known
    np.testing.assert_allclose(seq.spacing[1:], (0.308, 0.308), rtol=1e-4)
    gt = read_nifti_label_frames(ECHO / "camus_fullres" / "patient0015" / "patient0015_4CH_seq_gt.nii.gz")
    assert gt.data.shape == (27, *seq.shape[2:]) and set(np.unique(gt.data)) <= {0, 1, 2, 3}
    small, _ = _read(ECHO / "camus_edes224" / "patient0017_2CH.nii.gz")
    assert small.shape == (2, 1, 224, 224) and not small.spacing_known
    tk, _ = _read(ECHO / "echotk_examples" / "a4c_sequence.nii.gz")
    assert tk.shape == (20, 1, 480, 560)
    mr, _ = _read(ECHO.parent / "acdc" / "patient001" / "ED.nii.gz")
    assert mr.shape[0] == 1 and mr.shape[1] > 1  # an MR volume stays a volume
