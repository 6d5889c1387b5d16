"""Make the packaged sample cine from the Sunnybrook Cardiac Data (CC0 1.0).

Crops ``SC-HF-I-1/sa.nii.gz`` and ``labels.nii.gz`` to a 128×128 in-plane window centred on the
left ventricle (centroid of label 1 over all labelled frames), keeping all slices and all frames,
and shifts the affine origin so the crop overlays the original in any viewer. Intensities are
quantised to 8 bits (uint8 + ``scl_slope``) to keep the file under 3 MB.

Usage: python scripts/make_sample_data.py [SOURCE_DIR] [OUT_DIR]
  SOURCE_DIR defaults to ../shared/data/sunnybrook/SC-HF-I-1 (relative to the project root),
  OUT_DIR to sample_data/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = 128


def crop_window(labels_xyzt: np.ndarray, shape_xy: tuple[int, int], size: int = SIZE) -> tuple[int, int]:
    """Top-left corner (x0, y0) of a size×size window centred on the LV blood pool, inside the image."""
    xs, ys = np.nonzero((labels_xyzt == 1).any(axis=(2, 3)))
    cx, cy = int(round(xs.mean())), int(round(ys.mean()))
    x0 = int(np.clip(cx - size // 2, 0, shape_xy[0] - size))
    y0 = int(np.clip(cy - size // 2, 0, shape_xy[1] - size))
    return x0, y0


def _save(arr: np.ndarray, src: nib.Nifti1Image, affine: np.ndarray, dtype, out: Path, slope: float = 1.0) -> None:
    img = nib.Nifti1Image(arr.astype(dtype), affine, header=src.header.copy())
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(slope if slope != 1.0 else np.nan, 0.0 if slope != 1.0 else np.nan)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(out))


def main(src_dir: Path, out_dir: Path) -> None:
    sa = nib.load(str(src_dir / "sa.nii.gz"))
    lab = nib.load(str(src_dir / "labels.nii.gz"))
    image = np.asanyarray(sa.dataobj)
    labels = np.asanyarray(lab.dataobj)
    x0, y0 = crop_window(labels, image.shape[:2])
    sl = (slice(x0, x0 + SIZE), slice(y0, y0 + SIZE))
    affine = sa.affine.copy()
    affine[:3, 3] = (sa.affine @ np.array([x0, y0, 0, 1.0]))[:3]
    out_dir.mkdir(parents=True, exist_ok=True)
    # 16-bit MR noise does not compress: 128x128x12x20 int16 is 4.7 MB as .nii.gz. Store 8 bits
    # (uint8 with scl_slope, so readers get back the original 0..max intensity range): 2.9 MB.
    crop = image[sl].astype(np.float64)
    slope = float(crop.max()) / 255.0
    quantised = np.clip(np.rint(crop / slope), 0, 255).astype(np.uint8)
    _save(quantised, sa, affine, np.uint8, out_dir / "sunnybrook_SC-HF-I-1_cine.nii.gz", slope=slope)
    _save(labels[sl], lab, affine, np.uint8, out_dir / "sunnybrook_SC-HF-I-1_labels.nii.gz")
    print(f"crop x {x0}:{x0 + SIZE}, y {y0}:{y0 + SIZE}; shape {image[sl].shape}")
    for f in sorted(out_dir.glob("*.nii.gz")):
        print(f"{f.name}: {f.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "sunnybrook" / "SC-HF-I-1"
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "sample_data"
    main(src, out)
