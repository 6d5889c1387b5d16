"""Pack the MR training data small enough to travel to a GPU machine (see docs/GPU_TRAINING.md).

    python scripts/pack_mr_data.py gpu/mr.tar.xz [--data ../shared/data] [--fov-mm 190] [--with-validation]

Writes ``data/acdc/patientNNN/{ED,ES,ED_gt,ES_gt}.nii`` and ``data/sunnybrook/SC-HF-I-{1,2}/{sa,labels}.nii``
(+ ``info.json``) into an xz tar, uncompressed NIfTI inside (``scripts/gpu_train.sh`` gzips them back on the
GPU machine). Each volume is cropped in-plane to a square of ``--fov-mm`` millimetres around its labelled heart
(in its own pixels: the geometry and the header's spacing are kept exactly, the affine moved by the crop's
offset) and images are re-encoded to 8 bits (scaled to each volume's 99.9th percentile; ``train`` normalises
every case again, so this is immaterial). By default only the training patients travel: the validation
patients (ACDC 001, 005, …, 095; Sunnybrook SC-HF-I-4, -5) are never trained on, and ``train`` evaluates
on the CPU here afterwards. ACDC is research use only: the tar must never be committed (``gpu/`` is ignored).
"""

from __future__ import annotations

import argparse
import io
import math
import tarfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_cardiac_motion.training.data import ACDC_VAL_PATIENTS, SUNNYBROOK_VAL_PATIENTS, acdc_patients


def heart_box(labels: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(x0, y0, nx, ny)``: a crop of ``size`` pixels centred on the labelled voxels, inside the image."""
    shape = labels.shape[:2]
    xs, ys = np.nonzero(labels.reshape(shape[0], shape[1], -1).any(-1))
    cx, cy = ((xs.min() + xs.max()) // 2, (ys.min() + ys.max()) // 2) if len(xs) else (shape[0] // 2, shape[1] // 2)
    nx, ny = min(size[0], shape[0]), min(size[1], shape[1])
    x0 = int(np.clip(cx - nx // 2, 0, shape[0] - nx))
    y0 = int(np.clip(cy - ny // 2, 0, shape[1] - ny))
    return x0, y0, nx, ny


def to_uint8(volume: np.ndarray) -> np.ndarray:
    v = np.nan_to_num(volume.astype(np.float32))
    hi = float(np.percentile(v, 99.9))
    return np.clip(v / max(hi, 1e-6) * 255.0, 0, 255).round().astype(np.uint8)


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(payload), int(time.time())
    tar.addfile(info, io.BytesIO(payload))


def _add_nifti(tar: tarfile.TarFile, name: str, array: np.ndarray, ref: nib.Nifti1Image, x0: int, y0: int) -> None:
    affine = ref.affine.copy()
    affine[:3, 3] += affine[:3, 0] * x0 + affine[:3, 1] * y0
    header = ref.header.copy()
    header.set_data_dtype(array.dtype)
    header.set_slope_inter(1, 0)
    _add_bytes(tar, name, nib.Nifti1Image(array, affine, header).to_bytes())


def _crop_pixels(img: nib.Nifti1Image, fov_mm: float) -> tuple[int, int]:
    dx, dy = (float(z) for z in img.header.get_zooms()[:2])
    return math.ceil(fov_mm / dx), math.ceil(fov_mm / dy)


def pack(data: Path, out: Path, fov_mm: float, with_validation: bool) -> int:
    """Write the tar; returns the number of volumes packed."""
    acdc, sunny = data / "acdc", data / "sunnybrook"
    if not acdc.is_dir():
        raise SystemExit(f"error: no ACDC data under {acdc}")
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with tarfile.open(out, "w:xz", preset=9) as tar:
        for p in acdc_patients(acdc):
            if p.name in ACDC_VAL_PATIENTS and not with_validation:
                continue
            imgs = {k: nib.load(p / f"{k}.nii.gz") for k in ("ED", "ES", "ED_gt", "ES_gt")}
            arrs = {k: np.asarray(v.dataobj) for k, v in imgs.items()}
            x0, y0, nx, ny = heart_box(np.maximum(arrs["ED_gt"], arrs["ES_gt"]), _crop_pixels(imgs["ED"], fov_mm))
            for k, img in imgs.items():
                crop = arrs[k][x0:x0 + nx, y0:y0 + ny]
                _add_nifti(tar, f"data/acdc/{p.name}/{k}.nii",
                           crop.astype(np.uint8) if k.endswith("_gt") else to_uint8(crop), img, x0, y0)
                n += 1
            if (p / "info.json").exists():
                _add_bytes(tar, f"data/acdc/{p.name}/info.json", (p / "info.json").read_bytes())
        for case in sorted(q for q in sunny.iterdir() if (q / "sa.nii.gz").exists()) if sunny.is_dir() else []:
            if case.name in SUNNYBROOK_VAL_PATIENTS and not with_validation:
                continue
            img, lab = nib.load(case / "sa.nii.gz"), nib.load(case / "labels.nii.gz")
            v, lb = np.asarray(img.dataobj), np.asarray(lab.dataobj)
            x0, y0, nx, ny = heart_box(lb, _crop_pixels(img, fov_mm))
            _add_nifti(tar, f"data/sunnybrook/{case.name}/sa.nii", to_uint8(v[x0:x0 + nx, y0:y0 + ny]), img, x0, y0)
            _add_nifti(tar, f"data/sunnybrook/{case.name}/labels.nii",
                       lb[x0:x0 + nx, y0:y0 + ny].astype(np.uint8), lab, x0, y0)
            _add_bytes(tar, f"data/sunnybrook/{case.name}/info.json", (case / "info.json").read_bytes())
            n += 2
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the .tar.xz to write (e.g. gpu/mr.tar.xz)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--fov-mm", type=float, default=190.0, help="side of the in-plane crop around the heart (mm)")
    ap.add_argument("--with-validation", action="store_true", help="also pack the validation patients")
    args = ap.parse_args()
    n = pack(Path(args.data), Path(args.out), args.fov_mm, args.with_validation)
    print(f"wrote {args.out}: {n} volumes, {Path(args.out).stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
