"""MetaImage (``.mhd`` + ``.raw``, or ``.mha``) through SimpleITK: the older CAMUS layout. No napari, no Qt.

CAMUS (2019 release) stores each view as ``patientNNNN_<view>_sequence.mhd`` ``(X, Y, T)`` and the ED/ES
frames as 2D ``.mhd`` files, with the pixel size in ``ElementSpacing`` (mm) and the third spacing a frame
counter. SimpleITK returns arrays ``(T, Y, X)`` (rows = depth, apex at the top). A 3D file is a volume or
a 2D+t clip, decided as for NIfTI (:func:`.echo_nifti.decide_layout`; MetaImage has no time unit and no
description, so the pixel-size rule decides) or by the caller's ``layout``. SimpleITK is an optional
dependency (extras ``baseline`` / ``testing``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..errors import InputError, InputWarning, optional_module
from .echo_nifti import NO_SPACING_NOTE, SINGLE_SLICE_MM, check_layout, decide_layout

MHD_SUFFIXES = (".mhd", ".mha")


def is_mhd_path(path: str | os.PathLike) -> bool:
    """True for ``.mhd`` / ``.mha`` file names."""
    return str(path).lower().endswith(MHD_SUFFIXES)


def _sitk():
    return optional_module("SimpleITK", "Reading MetaImage (.mhd/.raw) files needs SimpleITK; install it with "
                           "`pip install SimpleITK` (or the plugin's `baseline` extra).")


def read_mhd_array(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...]]:
    """The image array as SimpleITK orders it (``(Y, X)``, ``(N, Y, X)`` or ``(T, Z, Y, X)``) and the
    spacing in file order ``(sx, sy[, sz[, st]])``; every failure is an :class:`InputError`."""
    sitk = _sitk()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"File not found: {p}. Check the path and the file name.")
    try:
        img = sitk.ReadImage(str(p))
        arr = sitk.GetArrayFromImage(img)
    except Exception as exc:  # RuntimeError from ITK: bad header, missing or short .raw
        first = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else type(exc).__name__
        raise InputError(f"Could not read {p.name} as MetaImage ({first}); the header is corrupt or its "
                         "data file (ElementDataFile, e.g. the .raw next to it) is missing or truncated: "
                         "copy both files again.") from exc
    if arr.size == 0:
        raise InputError(f"{p.name} is empty (shape {arr.shape}); choose a file that holds image data.")
    if img.GetNumberOfComponentsPerPixel() != 1:
        arr = arr.mean(axis=-1) if arr.shape[-1] in (3, 4) else arr
    return arr, tuple(float(s) for s in img.GetSpacing())


def read_mhd(path: str | os.PathLike, layout: str = "auto") -> Cine:
    """Read a MetaImage as a :class:`Cine` ``(T, Z, Y, X)`` float32.

    2D → one frame ``(1, 1, Y, X)``; 3D → a 2D+t clip ``(T, 1, Y, X)`` or a volume ``(1, Z, Y, X)`` by
    ``layout`` (``"auto"``: the rule of :func:`.echo_nifti.decide_layout`); 4D ``(X, Y, Z, T)`` → a cine.
    Spacing in mm from ``ElementSpacing``; unit-less 1.0 everywhere counts as unknown (``spacing_known``).
    """
    chosen = check_layout(layout)
    arr, sp = read_mhd_array(path)
    name = Path(path).name
    stem = name.rsplit(".", 1)[0]
    notes: list[str] = []
    if arr.ndim == 2:
        data, lay = arr[np.newaxis, np.newaxis], "2d+t"
    elif arr.ndim == 3:
        lay, reason = (chosen, "") if chosen != "auto" else decide_layout(arr.shape[::-1], sp)
        data = arr[:, np.newaxis] if lay == "2d+t" else arr[np.newaxis]
        if chosen == "auto" and lay == "2d+t":
            notes.append(f"{name}: read as a 2D+t clip (X, Y, T) because {reason}; if it is a 3D volume, "
                         "open it with layout 'volume'.")
    elif arr.ndim == 4:
        data, lay = arr, "volume"
    else:
        raise InputError(f"{name} has {arr.ndim} dimensions {arr.shape}; expected X×Y, X×Y×T or X×Y×Z×T.")
    dx, dy = sp[0], sp[1]
    dz = sp[2] if lay == "volume" and len(sp) > 2 else SINGLE_SLICE_MM
    known = not all(abs(s - 1.0) < 1e-9 for s in sp[:2])
    if not known:
        notes.append(NO_SPACING_NOTE)
    for msg in notes:
        warnings.warn(msg, InputWarning, stacklevel=2)
    affine = np.diag([dx, dy, dz, 1.0])
    return Cine(data=np.asarray(data, dtype=np.float32), spacing=(dz, dy, dx), frame_interval_ms=0.0,
                affine=affine, name=stem, warnings=notes, spacing_known=known,
                modality="US" if lay == "2d+t" else "")


def read_mhd_label_frames(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float]]:
    """Labels of a 2D or 2D+t MetaImage as ``(T, Y, X)`` uint8 and the pixel size ``(dy, dx)`` mm."""
    arr, sp = read_mhd_array(path)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise InputError(f"{Path(path).name} has shape {arr.shape}; echo labels are X×Y or X×Y×T.")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255:
        raise InputError(f"{Path(path).name}: label values must be integers 0..255.")
    return np.rint(arr).astype(np.uint8), (float(sp[1]), float(sp[0]))
