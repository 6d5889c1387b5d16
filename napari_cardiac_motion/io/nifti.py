"""NIfTI input/output.

Axis orders (see :mod:`..conventions`):

* NIfTI files store ``(X, Y, Z, T)``; in memory a cine is ``(T, Z, Y, X)``.
* Labels: file ``(X, Y, Z, T)`` uint8  <->  memory ``(T, Z, Y, X)`` uint8.
* Motion: file ``(X, Y, Z, T, 2)`` float32 with components ``(dx, dy)``  <->
  memory ``(T, Z, Y, X, 2)`` with components ``(dy, dx)``.

Every write goes through :func:`~napari_cardiac_motion.atomic.atomic_write` (temporary file, fsync,
rename), so a crash never leaves a half-written file under the final name.

Voxel size (one rule, used by every reader in the package through :func:`read_nifti_volume`):
NIfTI stores it twice, in ``pixdim`` and in the affine (sform, else qform). They normally agree. When
they disagree by more than 0.1 %:

* if the affine's three axes are all 1 mm long (a placeholder sform some converters write; ACDC's
  original release does this) and pixdim says otherwise, **pixdim** is used;
* otherwise the **affine** is used (the NIfTI standard makes the sform the voxel→world mapping).

Either way a :class:`~napari_cardiac_motion.errors.InputWarning` names the file, both sizes and the one
used, and the message is kept in ``Cine.warnings``. The affine itself is kept as stored, so outputs
written with it overlay the input in any viewer exactly as the input does.

File-level helpers live in :mod:`.nifti_files` and the motion files in :mod:`.nifti_motion`; their
public names are re-exported here.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..errors import InputError, InputWarning
from .nifti_files import (
    NIFTI_SUFFIXES,
    affine_or_default,
    is_nifti_path,
    load_nifti,
    make_nifti_image,
    nifti_stem,
    save_nifti_atomic,
)
from .nifti_motion import (
    FLOW_DESCRIP,
    FLOW_INTENT_NAME,
    flow_to_lps_mm,
    read_nifti_flow,
    write_nifti_flow,
    write_slicer_displacement,
)

_TIME_UNIT_TO_MS = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}


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


#: Relative tolerance between pixdim and the affine's axis lengths before they count as disagreeing.
VOXEL_SIZE_RTOL = 1e-3


def _fmt_mm(v) -> str:
    return "(" + ", ".join(f"{float(x):.4g}" for x in v) + ")"


def resolve_voxel_size(affine: np.ndarray, zooms, name: str = "image") -> tuple[tuple[float, float, float], str | None]:
    """Voxel size ``(dx, dy, dz)`` in mm along NIfTI ``(X, Y, Z)`` by the module's rule, and a warning
    message (``None`` when pixdim and the affine agree).

    ``zooms`` are the header's pixdim values (at least the first three are used; invalid or missing
    values count as unknown).
    """
    aff = np.asarray(affine, dtype=np.float64)
    from_affine = np.linalg.norm(aff[:3, :3], axis=0)
    z = [float(v) for v in list(zooms)[:3]] + [np.nan] * max(0, 3 - len(list(zooms)[:3]))
    pix = np.array([v if np.isfinite(v) and v > 0 else np.nan for v in z])
    aff_ok = np.isfinite(from_affine) & (from_affine > 0)
    if not np.all(np.isfinite(pix)):
        used = np.where(np.isfinite(pix), pix, np.where(aff_ok, from_affine, 1.0))
        return (float(used[0]), float(used[1]), float(used[2])), None
    if not np.all(aff_ok) or np.allclose(pix, from_affine, rtol=VOXEL_SIZE_RTOL, atol=1e-5):
        return (float(pix[0]), float(pix[1]), float(pix[2])), None
    unit_affine = np.allclose(from_affine, 1.0, rtol=0, atol=1e-3)
    if unit_affine:
        used, which = pix, ("pixdim, because the affine's axes are all 1 mm long, a placeholder some "
                            "converters write (ACDC's original release does)")
    else:
        used, which = from_affine, "the affine (the NIfTI standard's voxel-to-world mapping)"
    msg = (
        f"{name}: the voxel size in the header's pixdim is {_fmt_mm(pix)} mm but the affine "
        f"(sform/qform) says {_fmt_mm(from_affine)} mm along (x, y, z). Using {_fmt_mm(used)} mm from "
        f"{which}. Volumes and the model's pixel size depend on it: if that is wrong, fix the header "
        "(e.g. re-export the file, or set the sform and pixdim to the true voxel size)."
    )
    return (float(used[0]), float(used[1]), float(used[2])), msg


@dataclass
class NiftiVolume:
    """A NIfTI file's data in memory order with its geometry (see :func:`read_nifti_volume`).

    Attributes:
        data: ``(T, Z, Y, X)``, the file's dtype after nibabel's scaling (a 3D file has T = 1).
        spacing: ``(dz, dy, dx)`` in mm, by the module's voxel-size rule.
        frame_interval_ms: time between frames in ms (0 if unknown or 3D).
        affine: 4x4 affine as stored (voxel ``(i=X, j=Y, k=Z)`` → RAS mm).
        name: file name without ``.nii``/``.nii.gz``.
        warnings: messages about the header (already issued as :class:`InputWarning`).
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    frame_interval_ms: float
    affine: np.ndarray
    name: str
    warnings: list[str] = field(default_factory=list)


def read_nifti_volume(path: str | os.PathLike, what: str = "image") -> NiftiVolume:
    """Read any NIfTI image or label file as ``(T, Z, Y, X)`` in its own dtype, with its geometry.

    The one NIfTI reader of the package: cines, labels, training and evaluation data all come
    through here. ``what`` names the file's role in error messages ("image", "label image", ...).
    Raises :class:`InputError` for missing, corrupt, 2D or >4D files; warns (:class:`InputWarning`)
    when pixdim and the affine disagree (see the module docstring for the rule).
    """
    img, raw = load_nifti(path)
    fname = Path(path).name
    arr = _to_xyzt(raw, fname, what)
    affine = np.asarray(img.affine, dtype=np.float64)
    (dx, dy, dz), msg = resolve_voxel_size(affine, img.header.get_zooms(), fname)
    notes = []
    if msg:
        notes.append(msg)
        warnings.warn(msg, InputWarning, stacklevel=2)
    return NiftiVolume(
        data=np.ascontiguousarray(np.transpose(arr, (3, 2, 1, 0))),
        spacing=(dz, dy, dx),
        frame_interval_ms=_frame_interval_ms(img.header),
        affine=affine,
        name=nifti_stem(path),
        warnings=notes,
    )


def read_nifti(path: str | os.PathLike) -> Cine:
    """Read a NIfTI cine as a :class:`Cine` with data ``(T, Z, Y, X)`` float32.

    3D files ``(X, Y, Z)`` become one frame; ``(X, Y, 1, T)`` is a single-slice cine. Header
    warnings (voxel size) are issued and kept in ``Cine.warnings``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # re-issued below with the caller's stack level
        vol = read_nifti_volume(path)
    if vol.data.dtype.kind not in "uif" and vol.data.dtype.kind != "b":
        raise InputError(f"{Path(path).name} has data type {vol.data.dtype}, not a real number image.")
    for msg in vol.warnings:
        warnings.warn(msg, InputWarning, stacklevel=2)
    return Cine(
        data=vol.data.astype(np.float32, copy=False),
        spacing=vol.spacing,
        frame_interval_ms=vol.frame_interval_ms,
        affine=vol.affine,
        name=vol.name,
        warnings=list(vol.warnings),
    )



def write_nifti_image(path: str | os.PathLike, cine: Cine, dtype=np.float32) -> Path:
    """Write a :class:`Cine` as ``(X, Y, Z, T)``."""
    arr = np.transpose(np.asarray(cine.data), (3, 2, 1, 0))
    return save_nifti_atomic(make_nifti_image(arr, cine.affine, cine.spacing, cine.frame_interval_ms, dtype), path)


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
    return save_nifti_atomic(make_nifti_image(arr, affine, spacing, frame_interval_ms, np.uint8), path)


def read_nifti_labels(path: str | os.PathLike) -> np.ndarray:
    """Read labels as ``(T, Z, Y, X)`` uint8 (geometry comes from the image they belong to)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)  # voxel size of a label file is not used
        arr = read_nifti_volume(path, "label image").data
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{Path(path).name} contains NaN labels; labels must be integers 0..255.")
        arr = np.rint(arr)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InputError(f"{Path(path).name}: label values must lie in 0..255, found {arr.min()}..{arr.max()}.")
    return np.ascontiguousarray(arr.astype(np.uint8))


__all__ = [
    "FLOW_DESCRIP",
    "FLOW_INTENT_NAME",
    "NIFTI_SUFFIXES",
    "VOXEL_SIZE_RTOL",
    "NiftiVolume",
    "affine_or_default",
    "flow_to_lps_mm",
    "is_nifti_path",
    "load_nifti",
    "make_nifti_image",
    "nifti_stem",
    "read_nifti",
    "read_nifti_flow",
    "read_nifti_labels",
    "read_nifti_volume",
    "resolve_voxel_size",
    "save_nifti_atomic",
    "write_nifti_flow",
    "write_nifti_image",
    "write_nifti_labels",
    "write_slicer_displacement",
]
