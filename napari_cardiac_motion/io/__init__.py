"""Reading and writing cines, labels and motion (NIfTI, DICOM folders). No napari, no Qt.

Axis orders: in memory ``(T, Z, Y, X)``; NIfTI files ``(X, Y, Z, T)``. See :mod:`.nifti`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..cine import Cine
from ..errors import InputError
from .dicom import DicomSource, dicom_files_in, dicom_source, looks_like_dicom, read_dicom_folder
from .nifti import (
    NiftiVolume,
    is_nifti_path,
    nifti_stem,
    read_nifti,
    read_nifti_flow,
    read_nifti_labels,
    read_nifti_volume,
    write_nifti_flow,
    write_nifti_image,
    write_nifti_labels,
    write_slicer_displacement,
)


def read_cine(path: str | os.PathLike) -> Cine:
    """Read a cine from a NIfTI file or a DICOM folder (or a single DICOM file's folder)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"Not found: {p}. Check the path.")
    if p.is_dir():
        return read_dicom_folder(p)
    if is_nifti_path(p):
        return read_nifti(p)
    if looks_like_dicom(p):
        return read_dicom_folder(p.parent)
    return read_nifti(p)


__all__ = [
    "read_cine",
    "read_nifti",
    "read_dicom_folder",
    "read_nifti_labels",
    "read_nifti_flow",
    "read_nifti_volume",
    "NiftiVolume",
    "write_slicer_displacement",
    "write_nifti_image",
    "write_nifti_labels",
    "write_nifti_flow",
    "nifti_stem",
    "is_nifti_path",
    "looks_like_dicom",
    "dicom_files_in",
    "dicom_source",
    "DicomSource",
]
