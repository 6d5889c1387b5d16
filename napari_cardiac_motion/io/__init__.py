"""Reading and writing cines, labels and motion (NIfTI, DICOM folders, echo formats). No napari, no Qt.

Axis orders: in memory ``(T, Z, Y, X)``; NIfTI files ``(X, Y, Z, T)``. See :mod:`.nifti`. Echo clips
(2D+t NIfTI ``(X, Y, T)``, MetaImage, DICOM ultrasound, AVI/MP4) are ``(T, 1, Y, X)`` with rows = depth
(apex at the top); see :mod:`.echo_nifti`, :mod:`.mhd`, :mod:`.dicom_us`, :mod:`.video`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..cine import Cine
from ..errors import InputError
from .dicom import DicomSource, dicom_files_in, dicom_source, looks_like_dicom, read_dicom_folder
from .dicom_us import is_us_dicom, read_dicom_us
from .echo_nifti import (
    LAYOUTS,
    EchoFrames,
    check_layout,
    decide_layout,
    layout_for_modality,
    read_nifti_cine,
    read_nifti_frames,
    read_nifti_label_frames,
)
from .mhd import is_mhd_path, read_mhd
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


def read_cine(path: str | os.PathLike, layout: str = "auto") -> Cine:
    """Read a cine from a NIfTI or MetaImage file, a DICOM folder or file (MR series or ultrasound clip)
    or an AVI/MP4 video.

    ``layout`` says what the third axis of a 3D NIfTI/MetaImage is: ``"volume"`` (Z), ``"2d+t"`` (time,
    an echo clip) or ``"auto"`` (decided from the header, :func:`.echo_nifti.decide_layout`).
    """
    from .video import is_video_path, read_video

    lay = check_layout(layout)
    p = Path(path)
    if not p.exists():
        raise InputError(f"Not found: {p}. Check the path.")
    if p.is_dir():
        files = dicom_files_in(p)
        if files and is_us_dicom(files[0]):
            return _first_us_clip(files)
        return read_dicom_folder(p)
    if is_nifti_path(p):
        return read_nifti_cine(p, lay)
    if is_mhd_path(p):
        return read_mhd(p, lay)
    if is_video_path(p):
        return read_video(p)
    if looks_like_dicom(p):
        return read_dicom_us(p) if is_us_dicom(p) else read_dicom_folder(p.parent)
    return read_nifti_cine(p, lay)


def _first_us_clip(files: list[Path]) -> Cine:
    """The first ultrasound clip of a folder, with a note when the folder holds more DICOM files."""
    import warnings

    from ..errors import InputWarning

    cine = read_dicom_us(files[0])
    if len(files) > 1:
        msg = (f"The folder holds {len(files)} DICOM files; opened the ultrasound clip {files[0].name}. "
               "Open a file to choose another clip.")
        cine.warnings.append(msg)
        warnings.warn(msg, InputWarning, stacklevel=3)
    return cine


__all__ = [
    "read_cine",
    "read_nifti_cine",
    "read_nifti_frames",
    "read_nifti_label_frames",
    "EchoFrames",
    "LAYOUTS",
    "check_layout",
    "decide_layout",
    "layout_for_modality",
    "read_mhd",
    "is_mhd_path",
    "read_dicom_us",
    "is_us_dicom",
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
