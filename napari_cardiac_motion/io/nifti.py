"""NIfTI input/output.

Axis orders (DESIGN.md §1):

* NIfTI files store ``(X, Y, Z, T)``; in memory a cine is ``(T, Z, Y, X)``.
* Labels: file ``(X, Y, Z, T)`` uint8  <->  memory ``(T, Z, Y, X)`` uint8.
* Motion: file ``(X, Y, Z, T, 2)`` float32 with components ``(dx, dy)``  <->
  memory ``(T, Z, Y, X, 2)`` with components ``(dy, dx)``.

Every write goes to a temporary file in the destination folder and is then moved into place with
:func:`os.replace`, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..cine import Cine
from ..errors import InputError

_NIFTI_SUFFIXES = (".nii.gz", ".nii")

_TIME_UNIT_TO_MS = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in _NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_nifti_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(_NIFTI_SUFFIXES)


def _load(path: str | os.PathLike):
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


def _frame_interval_ms(header) -> float:
    zooms = header.get_zooms()
    if len(zooms) < 4:
        return 0.0
    dt = float(zooms[3])
    try:
        _, t_unit = header.get_xyzt_units()
    except Exception:
        t_unit = "unknown"
    factor = _TIME_UNIT_TO_MS.get(t_unit)
    if factor is None:
        # Unknown unit: small values are most likely seconds, large ones ms.
        factor = 1000.0 if 0 < dt < 10 else 1.0
    value = dt * factor
    return value if np.isfinite(value) and value > 0 else 0.0


def _to_xyzt(arr: np.ndarray, name: str, what: str = "image") -> np.ndarray:
    """Bring a NIfTI data array to 4D ``(X, Y, Z, T)``."""
    while arr.ndim > 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        arr = arr[..., np.newaxis]
    if arr.ndim == 2:
        raise InputError(
            f"{name} is a single 2D {what} of shape {arr.shape}; a cine needs space and time "
            "(X×Y×Z×T, or X×Y×1×T for one slice). Open the full cine series instead."
        )
    if arr.ndim != 4:
        raise InputError(
            f"{name} has {arr.ndim} dimensions {arr.shape}; expected X×Y×Z×T (4D) or X×Y×Z (3D). "
            "Split the file into one cine per series (e.g. one channel/echo) and open that."
        )
    return arr


def read_nifti(path: str | os.PathLike) -> Cine:
    """Read a NIfTI cine as a :class:`Cine` with data ``(T, Z, Y, X)`` float32.

    3D files ``(X, Y, Z)`` become one frame; ``(X, Y, 1, T)`` is a single-slice cine.
    """
    img, raw = _load(path)
    name = nifti_stem(path)
    if raw.dtype.kind not in "uif" and raw.dtype.kind != "b":
        raise InputError(f"{Path(path).name} has data type {raw.dtype}, not a real number image.")
    arr = _to_xyzt(raw, Path(path).name)
    data = np.ascontiguousarray(np.transpose(arr, (3, 2, 1, 0)), dtype=np.float32)
    zooms = img.header.get_zooms()
    dx, dy, dz = (float(z) if z and np.isfinite(z) and z > 0 else 1.0 for z in (list(zooms) + [1, 1, 1])[:3])
    return Cine(
        data=data,
        spacing=(dz, dy, dx),
        frame_interval_ms=_frame_interval_ms(img.header),
        affine=np.asarray(img.affine, dtype=np.float64),
        name=name,
    )


def _affine_or_default(affine, spacing) -> np.ndarray:
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


def _save_atomic(img, path: str | os.PathLike) -> Path:
    import nibabel as nib

    out = Path(path)
    if not is_nifti_path(out):
        out = out.with_name(out.name + ".nii.gz")
    suffix = ".nii.gz" if out.name.lower().endswith(".nii.gz") else ".nii"
    atomic_write(out, lambda tmp: nib.save(img, tmp), suffix=suffix)
    return out


def _make_image(arr_xyzt: np.ndarray, affine, spacing, frame_interval_ms: float, dtype):
    import nibabel as nib

    aff = _affine_or_default(affine, spacing)
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


def write_nifti_image(path: str | os.PathLike, cine: Cine, dtype=np.float32) -> Path:
    """Write a :class:`Cine` as ``(X, Y, Z, T)``."""
    arr = np.transpose(np.asarray(cine.data), (3, 2, 1, 0))
    return _save_atomic(_make_image(arr, cine.affine, cine.spacing, cine.frame_interval_ms, dtype), path)


def _labels_4d(labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim == 3:
        lab = lab[np.newaxis]
    if lab.ndim != 4:
        raise InputError(f"Labels must be (T, Z, Y, X) or (Z, Y, X); got shape {lab.shape}.")
    if lab.dtype != np.uint8:
        if lab.size and (np.nanmin(lab) < 0 or np.nanmax(lab) > 255):
            raise InputError(
                f"Label values must lie in 0..255 to be saved as uint8; found {lab.min()}..{lab.max()}."
            )
        lab = lab.astype(np.uint8)
    return lab


def write_nifti_labels(
    path: str | os.PathLike,
    labels: np.ndarray,
    affine=None,
    spacing=None,
    frame_interval_ms: float = 0.0,
) -> Path:
    """Write labels ``(T, Z, Y, X)`` uint8 as a NIfTI ``(X, Y, Z, T)`` uint8 with ``affine``."""
    lab = _labels_4d(labels)
    arr = np.transpose(lab, (3, 2, 1, 0))
    return _save_atomic(_make_image(arr, affine, spacing, frame_interval_ms, np.uint8), path)


def read_nifti_labels(path: str | os.PathLike) -> np.ndarray:
    """Read labels as ``(T, Z, Y, X)`` uint8."""
    _, raw = _load(path)
    arr = _to_xyzt(raw, Path(path).name, "label image")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{Path(path).name} contains NaN labels; labels must be integers 0..255.")
        arr = np.rint(arr)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InputError(f"{Path(path).name}: label values must lie in 0..255, found {arr.min()}..{arr.max()}.")
    return np.ascontiguousarray(np.transpose(arr, (3, 2, 1, 0)).astype(np.uint8))


def write_nifti_flow(
    path: str | os.PathLike,
    flow: np.ndarray,
    affine=None,
    spacing=None,
    frame_interval_ms: float = 0.0,
) -> Path:
    """Write motion ``(T, Z, Y, X, 2)`` with components ``(dy, dx)`` as NIfTI ``(X, Y, Z, T, 2)``
    float32 with components ``(dx, dy)`` (in voxels, along NIfTI X then Y)."""
    f = np.asarray(flow)
    if f.ndim != 5 or f.shape[-1] != 2:
        raise InputError(f"Flow must have shape (T, Z, Y, X, 2); got {f.shape}.")
    arr = np.transpose(f[..., ::-1], (3, 2, 1, 0, 4)).astype(np.float32)
    img = _make_image(arr, affine, spacing, frame_interval_ms, np.float32)
    img.header.set_intent("vector", (), name="disp (dx,dy) vox")
    return _save_atomic(img, path)


def read_nifti_flow(path: str | os.PathLike) -> np.ndarray:
    """Read a flow file written by :func:`write_nifti_flow` as ``(T, Z, Y, X, 2)``, components ``(dy, dx)``."""
    _, raw = _load(path)
    if raw.ndim != 5 or raw.shape[-1] != 2:
        raise InputError(
            f"{Path(path).name} has shape {raw.shape}; a flow file must be X×Y×Z×T×2 (components dx, dy)."
        )
    arr = np.transpose(raw, (3, 2, 1, 0, 4))[..., ::-1]
    return np.ascontiguousarray(arr, dtype=np.float32)
