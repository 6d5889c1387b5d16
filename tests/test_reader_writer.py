"""npe2 reader / writer / sample-data contributions (called directly, no viewer)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_cardiac_motion._reader import NO_LAYERS, get_dicom_reader, get_nifti_reader
from napari_cardiac_motion._sample_data import load_sample_cine, sample_cine_path, sample_labels_path
from napari_cardiac_motion._writer import write_labels
from napari_cardiac_motion.errors import InputError
from napari_cardiac_motion.io import read_nifti_labels

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SB_DICOM = DATA / "sunnybrook_dicom" / "SC-HF-I-1"

AFFINE = np.array(
    [[0.0, -1.5, 0.0, 10.0], [1.2, 0.0, 0.0, -20.0], [0.0, 0.0, 8.0, 5.0], [0, 0, 0, 1.0]]
)


@pytest.fixture
def cine_file(tmp_path):
    arr = np.random.default_rng(0).integers(0, 500, (20, 24, 3, 5)).astype(np.int16)
    img = nib.Nifti1Image(arr, AFFINE)
    img.header.set_zooms((1.2, 1.5, 8.0, 40.0))
    img.header.set_xyzt_units("mm", "msec")
    p = tmp_path / "patient01.nii.gz"
    nib.save(img, str(p))
    return p


def test_nifti_reader_layer_data(cine_file):
    reader = get_nifti_reader(str(cine_file))
    assert callable(reader)
    layers = reader(str(cine_file))
    assert len(layers) == 1
    data, kwargs, kind = layers[0]
    assert kind == "image"
    assert data.shape == (5, 3, 24, 20)
    assert kwargs["name"] == "patient01"
    np.testing.assert_allclose(kwargs["scale"], (1.0, 8.0, 1.5, 1.2), rtol=1e-6)
    md = kwargs["metadata"]
    np.testing.assert_allclose(md["spacing"], (8.0, 1.5, 1.2), rtol=1e-6)
    assert md["frame_interval_ms"] == pytest.approx(40.0)
    np.testing.assert_allclose(md["affine"], AFFINE)
    assert md["source_path"] == str(cine_file)


def test_reader_rejects_other_paths(tmp_path, cine_file):
    assert get_nifti_reader(str(tmp_path / "x.tif")) is None
    assert get_dicom_reader(str(cine_file)) is None  # a file, not a folder
    assert get_dicom_reader(str(tmp_path)) is None  # folder without DICOM
    (tmp_path / "fake.txt").write_text("x")
    assert get_dicom_reader(str(tmp_path)) is None


def test_reader_bad_file_reports_and_adds_no_layer(tmp_path, monkeypatch):
    """A bad file: message via show_error, npe2's no-layer sentinel [(None,)] (not [], which makes
    npe2 raise "No readers returned data"), never an exception."""
    shown = []
    import napari.utils.notifications as notif

    monkeypatch.setattr(notif, "show_error", lambda msg: shown.append(msg))
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    reader = get_nifti_reader(str(bad))
    assert reader(str(bad)) == NO_LAYERS == [(None,)]
    assert shown and "broken.nii.gz" in shown[0]
    # 2D picture: reported, not raised
    pic = tmp_path / "pic.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((32, 32), np.float32), np.eye(4)), str(pic))
    assert get_nifti_reader(str(pic))(str(pic)) == NO_LAYERS
    assert "2D" in shown[-1] and "layout '2d+t'" in shown[-1]


@pytest.mark.skipif(not SB_DICOM.is_dir(), reason="shared Sunnybrook DICOM not available")
def test_dicom_reader_layer_data():
    reader = get_dicom_reader(str(SB_DICOM))
    assert callable(reader)
    data, kwargs, kind = reader(str(SB_DICOM))[0]
    assert kind == "image" and data.shape == (20, 12, 256, 256)
    np.testing.assert_allclose(kwargs["scale"], (1.0, 10.0, 1.367188, 1.367188), atol=1e-3)


def test_writer_round_trip(tmp_path, cine_file):
    data, kwargs, _ = get_nifti_reader(str(cine_file))(str(cine_file))[0]
    labels = np.zeros(data.shape, np.int32)
    labels[4, 2, 10, 3] = 2
    meta = {"name": "segmentation", "scale": kwargs["scale"], "metadata": kwargs["metadata"]}
    out = write_labels(str(tmp_path / "seg.nii.gz"), labels, meta)
    assert out == [str(tmp_path / "seg.nii.gz")]
    img = nib.load(out[0])
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, AFFINE)
    assert img.shape == (20, 24, 3, 5)
    np.testing.assert_array_equal(read_nifti_labels(out[0]), labels.astype(np.uint8))


def test_writer_3d_fallback_and_range(tmp_path):
    lab = np.zeros((3, 24, 20), np.uint8)
    lab[1, 2, 3] = 1
    out = write_labels(str(tmp_path / "one.nii"), lab, {"scale": (8.0, 1.5, 1.2)})
    img = nib.load(out[0])
    assert img.shape == (20, 24, 3, 1)
    np.testing.assert_allclose(np.diag(img.affine)[:3], (1.2, 1.5, 8.0))
    with pytest.raises(InputError):
        write_labels(str(tmp_path / "bad.nii.gz"), np.full((3, 24, 20), 256, np.int32), {})
    with pytest.raises(InputError):
        write_labels(str(tmp_path / "neg.nii.gz"), np.full((3, 24, 20), -1, np.int32), {})


def test_sample_data():
    assert sample_cine_path().exists() and sample_labels_path().exists()
    assert sample_cine_path().stat().st_size < 3_000_000
    data, kwargs, kind = load_sample_cine()[0]
    assert kind == "image"
    assert data.shape[0] == 20 and data.shape[2:] == (128, 128)
    assert kwargs["name"] == "sunnybrook_SC-HF-I-1"
    assert kwargs["scale"][0] == 1.0 and kwargs["scale"][2] == pytest.approx(1.367188, abs=1e-4)
    labels = read_nifti_labels(sample_labels_path())
    assert labels.shape == data.shape
    assert set(np.unique(labels[18])) == {0, 1, 2}  # ED: LV blood pool + myocardium


def test_bad_file_through_npe2_does_not_raise(tmp_path, monkeypatch):
    """The full npe2 read path (as napari's File > Open uses it) with a truncated file."""
    import napari.utils.notifications as notif
    import npe2

    monkeypatch.setattr(notif, "show_error", lambda msg: None)
    pm = npe2.PluginManager.instance()
    if "napari-cardiac-motion" not in pm._manifests:
        pm.register(npe2.PluginManifest.from_file(Path(__file__).resolve().parents[1] / "napari_cardiac_motion" / "napari.yaml"))
    bad = tmp_path / "cut.nii.gz"
    arr = np.random.default_rng(0).integers(0, 500, (32, 32, 4, 6)).astype(np.int16)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(bad))
    bad.write_bytes(bad.read_bytes()[:2000])
    layer_data = npe2.read([str(bad)], plugin_name="napari-cardiac-motion", stack=False)
    assert layer_data == [(None,)]


def test_echo_files_through_npe2(tmp_path):
    """napari's File > Open path picks the echo readers: a 2D+t NIfTI (one slice, T frames) and a video."""
    import npe2

    pm = npe2.PluginManager.instance()
    if "napari-cardiac-motion" not in pm._manifests:
        pm.register(npe2.PluginManifest.from_file(Path(__file__).resolve().parents[1] / "napari_cardiac_motion" / "napari.yaml"))
    readers = {r.command for r in pm.get_manifest("napari-cardiac-motion").contributions.readers}
    assert {"napari-cardiac-motion.read_mhd", "napari-cardiac-motion.read_video",
            "napari-cardiac-motion.read_dicom_us"} <= readers
    clip = np.random.default_rng(1).integers(0, 255, (40, 32, 7)).astype(np.uint8)
    img = nib.Nifti1Image(clip, np.diag([-0.3, -0.3, 1.0, 1.0]))
    img.header["descrip"] = b"CAMUS-like X,Y,T"
    nib.save(img, str(tmp_path / "clip.nii.gz"))
    (data, kwargs, kind), = npe2.read([str(tmp_path / "clip.nii.gz")], plugin_name="napari-cardiac-motion", stack=False)
    assert kind == "image" and data.shape == (7, 1, 32, 40) and kwargs["metadata"]["modality"] == "US"
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for f in clip.transpose(2, 1, 0)[:, :, :]:
            frame = av.VideoFrame.from_ndarray(np.repeat(np.pad(f, ((0, 0), (0, 8)))[..., None], 3, 2), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (data, kwargs, kind), = npe2.read([str(path)], plugin_name="napari-cardiac-motion", stack=False)
    assert data.shape == (7, 1, 32, 48) and kwargs["metadata"]["spacing_known"] is False
