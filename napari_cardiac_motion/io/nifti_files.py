"""NIfTI files on disk (no Qt, no napari): names, loading with one clear error per failure, and building
and saving images atomically (temporary file, fsync, rename: a crash never leaves a half-written file
under the final name). Arrays here are in file order ``(X, Y, Z[, T[, C]])``; :mod:`.nifti` does the
transposition to and from memory's ``(T, Z, Y, X)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import InputError

#: the file name endings of NIfTI files
NIFTI_SUFFIXES = (".nii.gz", ".nii")

def nifti_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` name."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_nifti(path: str | os.PathLike):
    """Load a NIfTI image and its data array; every failure becomes an :class:`InputError`."""
    import nibabel as nib

    p = Path(path)
    if not p.exists():
        raise InputError(f"File not found: {p}. Check the path and the file name.")
    if p.is_dir():
        raise InputError(
            f"{p} is a folder, not a NIfTI file. Choose a .nii or .nii.gz file "
            "(or open the folder as a DICOM series)."
        )
    try:
        img = nib.load(str(p))
    except Exception as exc:  # ImageFileError, gzip/zlib errors, OSError, ...
        raise InputError(
            f"Could not read {p.name} as NIfTI ({type(exc).__name__}: {exc}). "
            "The file is not a NIfTI image or is corrupt; re-export it as .nii or .nii.gz."
        ) from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(
            f"{p.name} is a {type(img).__name__}, not a NIfTI image. Convert it to .nii.gz first."
        )
    try:
        data = np.asanyarray(img.dataobj)  # forces the read (and decompression) now
    except Exception as exc:  # EOFError, zlib.error, OSError, ValueError on truncated files
        raise InputError(
            f"{p.name} is truncated or corrupt: its image data cannot be read "
            f"({type(exc).__name__}: {exc}). Copy or export the file again."
        ) from exc
    return img, np.asarray(data)



def affine_or_default(affine, spacing) -> np.ndarray:
    """``affine`` as a 4×4 float array, or a diagonal one from ``spacing`` ``(dz, dy, dx)`` mm (identity without)."""
    if affine is None:
        aff = np.eye(4)
        if spacing is not None:
            dz, dy, dx = (float(s) for s in spacing)
            aff[0, 0], aff[1, 1], aff[2, 2] = dx, dy, dz
        return aff
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise InputError(f"Affine must be a 4x4 matrix, got shape {aff.shape}.")
    return aff


def save_nifti_atomic(img, path: str | os.PathLike) -> Path:
    """Save a nibabel image atomically (``.nii.gz`` appended to a name without a NIfTI ending); returns the path."""
    import nibabel as nib

    out = Path(path)
    if not is_nifti_path(out):
        out = out.with_name(out.name + ".nii.gz")
    suffix = ".nii.gz" if out.name.lower().endswith(".nii.gz") else ".nii"
    atomic_write(out, lambda tmp: nib.save(img, tmp), suffix=suffix)
    return out


def make_nifti_image(arr_xyzt: np.ndarray, affine, spacing, frame_interval_ms: float, dtype):
    """A ``Nifti1Image`` of ``arr_xyzt`` (file order) with sform = qform = the affine, zooms in mm and ms."""
    import nibabel as nib

    aff = affine_or_default(affine, spacing)
    img = nib.Nifti1Image(np.asarray(arr_xyzt, dtype=dtype), aff)
    hdr = img.header
    hdr.set_data_dtype(dtype)
    if spacing is not None:
        dz, dy, dx = (float(s) for s in spacing)
    else:
        dx, dy, dz = (float(v) for v in np.linalg.norm(aff[:3, :3], axis=0))
    zooms = [dx, dy, dz]
    if arr_xyzt.ndim >= 4:
        zooms.append(float(frame_interval_ms) if frame_interval_ms else 1.0)
    zooms += [1.0] * (arr_xyzt.ndim - len(zooms))
    hdr.set_zooms(tuple(zooms[: arr_xyzt.ndim]))
    hdr.set_xyzt_units("mm", "msec")
    img.set_sform(aff, code=1)
    img.set_qform(aff, code=1)
    return img

