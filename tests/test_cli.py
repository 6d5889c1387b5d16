"""The ``napari-cardiac-motion predict`` command end to end."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from napari_cardiac_motion._sample_data import sample_cine_path
from napari_cardiac_motion.cli import main
from napari_cardiac_motion.io import read_nifti, read_nifti_flow, read_nifti_labels
from conftest import tiny_net
from napari_cardiac_motion.model import default_checkpoint_path, save_checkpoint


@pytest.fixture
def tiny_ckpt(tmp_path):
    model = tiny_net()
    return save_checkpoint(model, tmp_path / "tiny.pt", {"name": "tiny-test", "version": "0"})


def test_predict_on_sample_writes_nifti_and_json(tmp_path):
    """The shipped model on the shipped sample: outputs on the input's grid and affine."""
    if not default_checkpoint_path().exists():
        pytest.fail("the shipped checkpoint is missing from the package")
    src = sample_cine_path()
    out = tmp_path / "out"
    assert main(["predict", str(src), "--out", str(out), "--device", "cpu"]) == 0
    cine = read_nifti(src)
    lab_img = nib.load(out / "labels.nii.gz")
    flow_img = nib.load(out / "flow.nii.gz")
    t, z, y, x = cine.shape
    assert lab_img.shape == (x, y, z, t) and lab_img.get_data_dtype() == np.uint8
    assert flow_img.shape == (x, y, z, t, 2) and flow_img.get_data_dtype() == np.float32
    assert np.allclose(lab_img.affine, cine.affine) and np.allclose(flow_img.affine, cine.affine)
    result = json.loads((out / "result.json").read_text())
    for key in ("ed_frame", "es_frame", "device", "seconds", "frames_per_second"):
        assert key in result
    assert result["model"]["name"] and result["model"]["version"]
    labels = read_nifti_labels(out / "labels.nii.gz")
    flow = read_nifti_flow(out / "flow.nii.gz")
    ed, es = result["ed_frame"], result["es_frame"]
    assert not flow[ed].any()
    # the trained model finds a heart: all three structures somewhere, LV larger at ED than at ES
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert (labels[ed] == 1).sum() > (labels[es] == 1).sum()
    assert np.abs(flow[es]).max() > 0.5  # something moves between ED and ES
    # the clean-up's valve rule: every (frame, slice) it emptied is listed and holds no blood pool now
    emptied = result["valve_slices_emptied"]
    assert isinstance(emptied, list) and all(len(p) == 2 for p in emptied)
    assert all(not (labels[f, z] == 1).any() for f, z in emptied)
    assert result["modality"] in ("", None, "MR") and result["spacing_known"] is True
    assert result["tta"] is True  # flip TTA is the MR default


def test_predict_ed_frame_override(tmp_path, tiny_ckpt):
    out = tmp_path / "o"
    assert main(["predict", str(sample_cine_path()), "--out", str(out), "--ed-frame", "3",
                 "--model", str(tiny_ckpt), "--no-tta"]) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["ed_frame"] == 3 and res["model"]["name"] == "tiny-test" and res["tta"] is False
    # quality control: every (frame, slice) in qc.json, 0-based as on napari's sliders; the summary in result.json
    qc = json.loads((out / "qc.json").read_text())
    _, _, z, t = nib.load(out / "labels.nii.gz").shape
    assert sorted((e["frame"], e["slice"]) for e in qc["slices"]) == [(i, j) for i in range(t) for j in range(z)]
    assert all(isinstance(e["flagged"], bool) and isinstance(e["score"], float) for e in qc["slices"])
    assert res["qc"]["flagged"] == sum(e["flagged"] for e in qc["slices"])
    assert res["qc"]["worst_score"] == pytest.approx(qc["slices"][0]["score"], abs=1e-3)
    assert qc["threshold"] == res["qc"]["threshold"]


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "napari_cardiac_motion", *args], capture_output=True, text=True)


def test_bad_inputs_give_one_line_errors(tmp_path, tiny_ckpt):
    # 2D picture
    pic = tmp_path / "picture.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(64, 64).astype("f4"), np.eye(4)), pic)
    proc = _run_cli("predict", str(pic), "--out", str(tmp_path / "o1"), "--model", str(tiny_ckpt))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    # missing checkpoint
    proc = _run_cli("predict", str(sample_cine_path()), "--out", str(tmp_path / "o2"), "--model", str(tmp_path / "nope.pt"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    # absent device (this machine has no CUDA)
    import torch

    if not torch.cuda.is_available():
        proc = _run_cli("predict", str(sample_cine_path()), "--out", str(tmp_path / "o3"), "--device", "cuda",
                        "--model", str(tiny_ckpt))
        assert proc.returncode == 2 and "CUDA is not available" in proc.stderr
    # missing input
    proc = _run_cli("predict", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "o4"), "--model", str(tiny_ckpt))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not (tmp_path / "o4").exists()
    # a fusion weight outside [0, 1)
    proc = _run_cli("predict", str(sample_cine_path()), "--out", str(tmp_path / "o5"), "--fuse", "1.5",
                    "--model", str(tiny_ckpt))
    assert proc.returncode == 2 and "--fuse must be in [0, 1)" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o5").exists()
