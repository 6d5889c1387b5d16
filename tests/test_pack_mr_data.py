"""scripts/pack_mr_data.py: MR training data for a GPU call (ACDC-like patients and a Sunnybrook-like cine)."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_cardiac_motion.training.data import load_acdc_case

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("pack_mr_data", ROOT / "scripts" / "pack_mr_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _patient(folder: Path, px: float, centre: tuple[int, int]) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    shape = (200, 180, 4)
    lab = np.zeros(shape, np.uint8)
    xx, yy = np.mgrid[:shape[0], :shape[1]]
    ring = np.hypot(xx - centre[0], yy - centre[1])
    lab[ring < 14] = 2
    lab[ring < 9] = 1
    image = (rng.random(shape) * 300 + lab[..., :] * 200).astype(np.int16)
    affine = np.diag([px, px, 10.0, 1.0])
    affine[:3, 3] = (-30.0, 12.0, 5.0)
    for name, arr in (("ED", image), ("ES", image), ("ED_gt", lab), ("ES_gt", lab)):
        nib.save(nib.Nifti1Image(arr, affine), str(folder / f"{name}.nii.gz"))
    (folder / "info.json").write_text(json.dumps({"group": "NOR"}))


def test_pack_keeps_training_patients_cropped_in_mm_with_their_geometry(tmp_path):
    data = tmp_path / "data"
    _patient(data / "acdc" / "patient002", 1.0, (120, 70))
    _patient(data / "acdc" / "patient005", 1.0, (100, 90))  # a validation patient
    out = tmp_path / "gpu" / "mr.tar.xz"
    assert _module().pack(data, out, fov_mm=80.0, with_validation=False) == 4
    unpacked = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        tar.extractall(unpacked, filter="data")
    folders = sorted(p.name for p in (unpacked / "data" / "acdc").iterdir())
    assert folders == ["patient002"]
    ed = nib.load(unpacked / "data/acdc/patient002/ED.nii")
    gt = nib.load(unpacked / "data/acdc/patient002/ED_gt.nii")
    assert ed.shape == (80, 80, 4) and ed.get_data_dtype() == np.uint8
    orig = nib.load(data / "acdc/patient002/ED_gt.nii.gz")
    # the same world point holds the same label: the affine moved with the crop
    ijk = np.array([5, 7, 2])
    world = gt.affine @ np.r_[ijk, 1]
    back = np.linalg.solve(orig.affine, world)[:3].round().astype(int)
    assert np.asarray(gt.dataobj)[tuple(ijk)] == np.asarray(orig.dataobj)[tuple(back)]
    assert np.asarray(gt.dataobj).sum() == np.asarray(orig.dataobj).sum()  # the whole heart is inside the crop
    for p in (unpacked / "data/acdc/patient002").glob("*.nii"):
        p.with_name(p.name + ".gz").write_bytes(__import__("gzip").compress(p.read_bytes()))
    case = load_acdc_case(unpacked / "data/acdc/patient002", pixel_mm=1.0)
    assert case.image.shape == (2, 4, 80, 80) and int((case.codes == 1).sum()) > 0
