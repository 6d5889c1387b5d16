"""The in-memory cine: a ``(T, Z, Y, X)`` array with its geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError


@dataclass
class Cine:
    """A cine: a short-axis MR stack, or a 2D+t echo clip (Z = 1, rows = depth with the apex at the top).

    Attributes:
        data: image, shape ``(T, Z, Y, X)`` (time first, napari's order), float32.
        spacing: voxel spacing ``(dz, dy, dx)`` in mm.
        frame_interval_ms: time between frames in ms (0 if unknown).
        affine: 4x4 NIfTI affine mapping voxel indices ``(i=X, j=Y, k=Z)`` to RAS mm.
        name: a short name for layers and reports (file stem).
        warnings: messages about questionable input the reader noticed but could work around
            (e.g. an affine whose voxel size disagrees with pixdim, a gap between DICOM slices);
            the viewer shows them, the CLI prints them. Empty when the input looked clean.
        source: where the images came from, when the reader knows it: a
            :class:`~napari_cardiac_motion.io.dicom.DicomSource` (file of each ``(t, z)``) for a DICOM
            folder; ``None`` otherwise (NIfTI, arrays).
        spacing_known: False when the input carries no physical pixel size (a video, a NIfTI with
            unit-less 1.0 placeholders): ``spacing`` is then 1.0 per pixel and lengths, areas and volumes
            are in pixels, not mm (``result.json`` should say so).
        modality: ``"US"`` for echocardiography read by the echo readers (2D+t NIfTI, MHD, DICOM US,
            video), ``"MR"`` where the reader knows it, ``""`` when unknown.
    """

    data: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    frame_interval_ms: float = 0.0
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    name: str = "cine"
    warnings: list[str] = field(default_factory=list)
    source: Any = None
    spacing_known: bool = True
    modality: str = ""

    def __post_init__(self) -> None:
        self.data = validate_cine_array(self.data)
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.affine = np.asarray(self.affine, dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(T, Z, Y, X)``."""
        return tuple(self.data.shape)  # type: ignore[return-value]

    def napari_scale(self) -> tuple[float, float, float, float]:
        """Layer scale for ``(T, Z, Y, X)``: one step per frame, then mm."""
        return (1.0, *self.spacing)


def validate_cine_array(data: np.ndarray) -> np.ndarray:
    """Check an image array and return it as float32 ``(T, Z, Y, X)``.

    Accepts ``(T, Z, Y, X)``; raises :class:`InputError` for other dimensionality, empty arrays,
    non-finite values or an image that is constant (e.g. all zero).
    """
    arr = np.asarray(data)
    if arr.ndim != 4:
        raise InputError(
            f"Expected a 4D cine with axes (T, Z, Y, X) but got {arr.ndim}D data of shape {arr.shape}. "
            "Open a 3D+time short-axis cine (a NIfTI of shape X×Y×Z×T, or a DICOM cine folder); "
            "a single 2D picture cannot be segmented as a cine."
        )
    if arr.size == 0 or min(arr.shape) == 0:
        raise InputError(f"The image is empty (shape {arr.shape}). Choose a file that contains image data.")
    if min(arr.shape[2:]) < 16:
        raise InputError(
            f"Each slice is only {arr.shape[2]}×{arr.shape[3]} pixels; at least 16×16 is needed. "
            "Check that the axes are (T, Z, Y, X)."
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"Image data type {arr.dtype} is not a real-valued number type.")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InputError(
            f"The image contains {n_bad} NaN or infinite voxels. Fix or re-export the image "
            "(e.g. replace NaN by 0) before running the model."
        )
    if float(arr.max()) == float(arr.min()):
        raise InputError(
            f"The image is constant (every voxel is {float(arr.min())}); there is nothing to segment. "
            "Check that the right series was loaded."
        )
    return arr
