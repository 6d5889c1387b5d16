"""npe2 reader contributions: NIfTI cine files and DICOM cine folders.

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
    slices), scale in mm (one step per frame), geometry kept in ``metadata``."""
    meta = {
        "spacing": tuple(cine.spacing),
        "frame_interval_ms": float(cine.frame_interval_ms),
        "affine": cine.affine.copy(),
        "source_path": str(source_path) if source_path is not None else None,
    }
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
    from .io.nifti import read_nifti

    return read_nifti(path)


def _read_dicom(path: str) -> Cine:
    from .io.dicom import read_dicom_folder

    return read_dicom_folder(path)


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
    return _safe_reader(_read_dicom)
