"""npe2 reader contributions: NIfTI cine files, DICOM cine folders and echo clips (2D+t NIfTI, MetaImage
``.mhd``/``.mha``, DICOM ultrasound files, AVI/MP4 videos).

The reader functions return ``[(data (T, Z, Y, X), kwargs, "image")]``. Errors a user can fix are
shown as napari notifications and the reader returns :data:`NO_LAYERS` = ``[(None,)]``, npe2's
"read fine, no layers" sentinel: returning ``[]`` would make npe2 raise
``ValueError("No readers returned data ...")`` and napari would show a second, confusing error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from .cine import Cine
from .conventions import AXIS_LABELS
from .errors import CardiacMotionError

LayerData = list[tuple[Any, dict, str]]

#: npe2's null-layer sentinel: the reader handled the path (and reported the problem) but adds no layer.
NO_LAYERS: list = [(None,)]


def cine_to_layer_data(cine: Cine, source_path: str | os.PathLike | None = None) -> LayerData:
    """Image layer data for a :class:`Cine`: axes ``t, z, y, x`` (the sliders read t and z, in frames and
    slices), scale in mm (one step per frame), geometry kept in ``metadata``.

    ``metadata["spacing_known"]`` is False (with ``metadata["spacing_note"]`` saying why) when the input
    has no physical pixel size (a video, placeholder spacing): the scale is then in pixels, not mm.
    ``metadata["modality"]`` is ``"US"`` for echo clips; ``metadata["warnings"]`` holds the reader's notes."""
    meta = {
        "spacing": tuple(cine.spacing),
        "frame_interval_ms": float(cine.frame_interval_ms),
        "affine": cine.affine.copy(),
        "source_path": str(source_path) if source_path is not None else None,
        "spacing_known": bool(cine.spacing_known),
        "modality": cine.modality,
        "warnings": list(cine.warnings),
    }
    if not cine.spacing_known:
        meta["spacing_note"] = "no physical pixel size in the file: scale and measurements are in pixels, not mm"
    kwargs = {"name": cine.name, "scale": cine.napari_scale(), "metadata": meta, "axis_labels": AXIS_LABELS}
    return [(cine.data, kwargs, "image")]


def _notify_error(message: str) -> None:
    try:
        from napari.utils.notifications import show_error

        show_error(message)
    except Exception:  # napari missing or broken: fall back to the log
        import logging

        logging.getLogger(__name__).error(message)


def _safe_reader(read: Callable[[str], Cine]) -> Callable[[Any], LayerData]:
    def reader(path: Any) -> LayerData:
        if isinstance(path, (list, tuple)):
            out: LayerData = []
            for p in path:
                out.extend(ld for ld in reader(p) if ld != (None,))
            return out or list(NO_LAYERS)
        try:
            cine = read(str(path))
        except CardiacMotionError as exc:
            _notify_error(f"Cannot open {Path(str(path)).name}: {exc}")
            return list(NO_LAYERS)
        return cine_to_layer_data(cine, path)

    return reader


def _read_nifti(path: str) -> Cine:
    from .io.echo_nifti import read_nifti_cine

    return read_nifti_cine(path, "auto")


def _read_any(path: str) -> Cine:
    from .io import read_cine

    return read_cine(path, "auto")


def get_nifti_reader(path: Any):
    """Return a reader for ``*.nii`` / ``*.nii.gz`` files, else ``None``."""
    if isinstance(path, (list, tuple)):
        if not path or not all(str(p).lower().endswith((".nii", ".nii.gz")) for p in path):
            return None
    elif not str(path).lower().endswith((".nii", ".nii.gz")) or os.path.isdir(str(path)):
        return None
    return _safe_reader(_read_nifti)


def _folder_has_dicom(path: str) -> bool:
    from .io.dicom import looks_like_dicom

    try:
        with os.scandir(path) as it:
            for entry in it:
                if entry.is_file() and not entry.name.startswith(".") and looks_like_dicom(entry.path):
                    return True
    except OSError:
        return False
    return False


def get_dicom_reader(path: Any):
    """Return a reader for folders holding DICOM files, else ``None``."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = str(path)
    if not os.path.isdir(p) or not _folder_has_dicom(p):
        return None
    return _safe_reader(_read_any)


def _one_path(path: Any) -> str | None:
    if isinstance(path, (list, tuple)):
        return str(path[0]) if len(path) == 1 else None
    return str(path)


def get_mhd_reader(path: Any):
    """Return a reader for MetaImage files (``*.mhd``, ``*.mha``; CAMUS's older layout), else ``None``."""
    from .io.mhd import is_mhd_path

    p = _one_path(path)
    if p is None or not is_mhd_path(p) or os.path.isdir(p):
        return None
    return _safe_reader(_read_any)


def get_video_reader(path: Any):
    """Return a reader for echo videos (``*.avi``, ``*.mp4``, ...; no pixel size), else ``None``."""
    from .io.video import is_video_path

    p = _one_path(path)
    if p is None or not is_video_path(p) or os.path.isdir(p):
        return None
    return _safe_reader(_read_any)


def get_dicom_us_reader(path: Any):
    """Return a reader for one DICOM ultrasound file (US (Multi-frame) Image Storage), else ``None``."""
    from .io.dicom_us import is_us_dicom

    p = _one_path(path)
    if p is None or not os.path.isfile(p) or not is_us_dicom(p):
        return None
    return _safe_reader(_read_any)
