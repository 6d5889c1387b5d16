"""Motion fields as NIfTI files (no Qt, no napari).

In memory motion is ``(T, Z, Y, X, 2)`` with components ``(dy, dx)`` in voxels (``frame_t(p) ≈
frame_ED(p + u_t(p))``). :func:`write_nifti_flow` stores it as ``(X, Y, Z, T, 2)`` float32 with
components ``(dx, dy)``; :func:`write_slicer_displacement` writes ITK / 3D Slicer displacement fields
(LPS mm), one file per frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .nifti_files import affine_or_default, load_nifti, make_nifti_image, save_nifti_atomic


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
    img = make_nifti_image(arr, affine, spacing, frame_interval_ms, np.float32)
    img.header.set_intent("none", (), name=FLOW_INTENT_NAME)
    img.header["descrip"] = FLOW_DESCRIP.encode("ascii")
    return save_nifti_atomic(img, path)


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
    aff = affine_or_default(affine, None)
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
        paths.append(save_nifti_atomic(img, out_dir / f"{stem}_t{t:03d}.nii.gz"))
    return paths


def read_nifti_flow(path: str | os.PathLike) -> np.ndarray:
    """Read a flow file written by :func:`write_nifti_flow` as ``(T, Z, Y, X, 2)``, components ``(dy, dx)``."""
    _, raw = load_nifti(path)
    if raw.ndim != 5 or raw.shape[-1] != 2:
        raise InputError(
            f"{Path(path).name} has shape {raw.shape}; a flow file must be X×Y×Z×T×2 (components dx, dy)."
        )
    arr = np.transpose(raw, (3, 2, 1, 0, 4))[..., ::-1]
    return np.ascontiguousarray(arr, dtype=np.float32)
