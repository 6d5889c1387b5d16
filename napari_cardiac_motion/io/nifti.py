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
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..cine import Cine
from ..errors import InputError, InputWarning

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
    img, raw = _load(path)
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


#: ``descrip`` of ``flow.nii.gz`` (NIfTI allows 80 characters): what the numbers are, and what they are not.
FLOW_DESCRIP = "u_t voxels (dx,dy) pull t->ED: I_t(p)~I_ED(p+u_t(p)); NOT mm, NOT LPS"
#: ``intent_name`` of ``flow.nii.gz`` (16 characters at most).
FLOW_INTENT_NAME = "dx,dy vox pull"


def write_nifti_flow(
    path: str | os.PathLike,
    flow: np.ndarray,
    affine=None,
    spacing=None,
    frame_interval_ms: float = 0.0,
) -> Path:
    """Write motion ``(T, Z, Y, X, 2)`` with components ``(dy, dx)`` as NIfTI ``(X, Y, Z, T, 2)``
    float32 with components ``(dx, dy)`` (in voxels, along NIfTI X then Y).

    The header carries no vector/displacement intent (ITK and 3D Slicer would read such a field as
    an LPS displacement in mm, which this is not); ``descrip`` states the convention instead
    (:data:`FLOW_DESCRIP`). For a field those viewers read correctly use
    :func:`write_slicer_displacement`.
    """
    f = np.asarray(flow)
    if f.ndim != 5 or f.shape[-1] != 2:
        raise InputError(f"Flow must have shape (T, Z, Y, X, 2); got {f.shape}.")
    arr = np.transpose(f[..., ::-1], (3, 2, 1, 0, 4)).astype(np.float32)
    img = _make_image(arr, affine, spacing, frame_interval_ms, np.float32)
    img.header.set_intent("none", (), name=FLOW_INTENT_NAME)
    img.header["descrip"] = FLOW_DESCRIP.encode("ascii")
    return _save_atomic(img, path)


def flow_to_lps_mm(flow_t: np.ndarray, affine) -> np.ndarray:
    """One frame's motion ``(Z, Y, X, 2)`` ``(dy, dx)`` in voxels → ``(X, Y, Z, 3)`` displacement in
    LPS mm (the vectors ITK and 3D Slicer expect), using the affine's axes (voxel → RAS mm)."""
    f = np.asarray(flow_t, dtype=np.float32)
    if f.ndim != 4 or f.shape[-1] != 2:
        raise InputError(f"One frame of flow must have shape (Z, Y, X, 2); got {f.shape}.")
    aff = np.asarray(affine, dtype=np.float64)
    ras_per_voxel = aff[:3, :2]  # columns: RAS mm per step along NIfTI X (i), then Y (j)
    lps = (np.diag([-1.0, -1.0, 1.0]) @ ras_per_voxel).astype(np.float32)
    vec_zyx = f[..., 1:2] * lps[:, 0] + f[..., 0:1] * lps[:, 1]  # dx·col_i + dy·col_j, (Z, Y, X, 3)
    return np.ascontiguousarray(np.transpose(vec_zyx, (2, 1, 0, 3)), dtype=np.float32)


def write_slicer_displacement(
    folder: str | os.PathLike,
    flow: np.ndarray,
    affine,
    stem: str = "displacement",
) -> list[Path]:
    """Write each frame's motion as an ITK / 3D Slicer displacement field: ``folder/<stem>_tNNN.nii.gz``.

    Each file is ``(X, Y, Z, 1, 3)`` float32 with the vector intent, the vectors in **LPS mm** on the
    cine's grid (``affine``), the convention ITK (``ConvertRASVectors`` off, its default) and Slicer
    read. As a transform it is the resampling (pull) transform ``x → x + u_t(x)`` from frame t's grid
    into the ED frame: resampling the ED frame through it gives frame t (Slicer: load as a transform,
    apply it to the ED frame). One file per frame, because those viewers read 3D fields only.
    ``flow`` is ``(T, Z, Y, X, 2)`` with components ``(dy, dx)`` in voxels (as in memory).
    """
    import nibabel as nib

    f = np.asarray(flow)
    if f.ndim != 5 or f.shape[-1] != 2:
        raise InputError(f"Flow must have shape (T, Z, Y, X, 2); got {f.shape}.")
    aff = _affine_or_default(affine, None)
    out_dir = Path(folder)
    paths = []
    for t in range(f.shape[0]):
        vec = flow_to_lps_mm(f[t], aff)[:, :, :, np.newaxis, :]  # (X, Y, Z, 1, 3)
        img = nib.Nifti1Image(vec, aff)
        img.header.set_intent("vector", (), name="disp LPS mm")
        img.header["descrip"] = f"frame {t} -> ED displacement, LPS mm, ITK/Slicer pull transform".encode("ascii")
        img.header.set_xyzt_units("mm")
        img.set_sform(aff, code=1)
        img.set_qform(aff, code=1)
        paths.append(_save_atomic(img, out_dir / f"{stem}_t{t:03d}.nii.gz"))
    return paths


def read_nifti_flow(path: str | os.PathLike) -> np.ndarray:
    """Read a flow file written by :func:`write_nifti_flow` as ``(T, Z, Y, X, 2)``, components ``(dy, dx)``."""
    _, raw = _load(path)
    if raw.ndim != 5 or raw.shape[-1] != 2:
        raise InputError(
            f"{Path(path).name} has shape {raw.shape}; a flow file must be X×Y×Z×T×2 (components dx, dy)."
        )
    arr = np.transpose(raw, (3, 2, 1, 0, 4))[..., ::-1]
    return np.ascontiguousarray(arr, dtype=np.float32)
