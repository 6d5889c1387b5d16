"""npe2 writer contribution: save a Labels layer as NIfTI ``(X, Y, Z, T)`` uint8."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError


def _spacing_from_meta(meta: dict, ndim: int):
    md = meta.get("metadata") or {}
    if md.get("spacing") is not None:
        return tuple(float(s) for s in md["spacing"])
    scale = meta.get("scale")
    if scale is not None and len(scale) >= 3:
        return tuple(float(s) for s in list(scale)[-3:])
    return (1.0, 1.0, 1.0)


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write a labels layer ``(T, Z, Y, X)`` (or ``(Z, Y, X)``, one frame) to ``path``.

    The affine, spacing and frame interval come from ``meta["metadata"]`` (as set by this plugin's
    reader); without them an axis-aligned affine with the layer's scale is used.
    """
    from .io.nifti import write_nifti_labels

    meta = meta or {}
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[np.newaxis, np.newaxis]
    elif arr.ndim == 3:
        arr = arr[np.newaxis]
    if arr.ndim != 4:
        raise InputError(f"Labels must be 2D, 3D (Z, Y, X) or 4D (T, Z, Y, X); got shape {arr.shape}.")
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "uib":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise InputError("Label values must be whole numbers 0..255.")
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise InputError(
                f"Label values {arr.min()}..{arr.max()} do not fit in uint8 (0..255); "
                "renumber the labels before saving."
            )
        arr = arr.astype(np.uint8)
    md = meta.get("metadata") or {}
    spacing = _spacing_from_meta(meta, arr.ndim)
    affine = md.get("affine")
    out = write_nifti_labels(
        path, arr, affine=affine, spacing=spacing, frame_interval_ms=float(md.get("frame_interval_ms") or 0.0)
    )
    return [str(out)]
