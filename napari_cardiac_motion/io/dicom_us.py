"""DICOM ultrasound (US Image / US Multi-frame Image Storage) as a 2D+t clip. No napari, no Qt.

One file holds the whole clip: ``pixel_array`` is ``(frames, rows, cols[, 3])``, often JPEG-compressed
(decoded by pydicom with Pillow, or pylibjpeg when installed) and in colour (``RGB``, ``YBR_FULL``,
``YBR_FULL_422``; pydicom converts YBR to RGB). Colour becomes grey by luminance
``0.299 R + 0.587 G + 0.114 B``. The result is a :class:`Cine` ``(T, 1, Y, X)``: rows = depth, apex at
the top, columns = lateral.

Pixel size: from the Sequence of Ultrasound Regions (0018,6011): the 2D region (``RegionSpatialFormat``
1), tissue regions (``RegionDataType`` 1) first, then the largest, whose ``PhysicalUnitsX/YDirection`` are cm (code 3) gives
``PhysicalDeltaX/Y`` in cm → × 10 mm; else ``PixelSpacing`` (mm); else unknown (``spacing_known`` False).
Frame interval: ``FrameTime`` (ms), else the mean of ``FrameTimeVector`` (ms, first entry 0), else
``1000 / CineRate`` or ``RecommendedDisplayFrameRate``; else 0 (unknown).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..errors import InputError, InputWarning
from .echo_nifti import NO_SPACING_NOTE, SINGLE_SLICE_MM

US_MULTIFRAME_SOP = "1.2.840.10008.5.1.4.1.1.3.1"
US_IMAGE_SOP = "1.2.840.10008.5.1.4.1.1.6.1"
US_SOP_CLASSES = (US_MULTIFRAME_SOP, US_IMAGE_SOP, "1.2.840.10008.5.1.4.1.1.3", "1.2.840.10008.5.1.4.1.1.6")

#: ``PhysicalUnitsXDirection`` code for cm (DICOM PS3.3 C.8.5.5.1.15)
UNITS_CM = 3


def is_us_dicom(path: str | os.PathLike) -> bool:
    """True when ``path`` is a DICOM file (``DICM`` preamble) of an ultrasound SOP class or modality ``US``
    (header only)."""
    import pydicom

    from .dicom import looks_like_dicom

    p = Path(path)
    if not p.is_file() or not looks_like_dicom(p):
        return False
    try:
        ds = pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
    except Exception:
        return False
    return str(ds.get("SOPClassUID", "")) in US_SOP_CLASSES or str(ds.get("Modality", "")).upper() == "US"


def us_pixel_size_mm(ds) -> tuple[float, float] | None:
    """``(dy, dx)`` in mm from the ultrasound regions (or ``PixelSpacing``); ``None`` when unknown."""
    best, best_key = None, (-1, -1.0)
    for reg in ds.get("SequenceOfUltrasoundRegions", []) or []:
        try:
            if int(reg.get("RegionSpatialFormat", 0)) != 1:
                continue
            tissue = int(int(reg.get("RegionDataType", 0) or 0) == 1)
            if int(reg.PhysicalUnitsXDirection) != UNITS_CM or int(reg.PhysicalUnitsYDirection) != UNITS_CM:
                continue
            dx, dy = abs(float(reg.PhysicalDeltaX)) * 10.0, abs(float(reg.PhysicalDeltaY)) * 10.0
            area = float((int(reg.RegionLocationMaxX1) - int(reg.RegionLocationMinX0))
                         * (int(reg.RegionLocationMaxY1) - int(reg.RegionLocationMinY0)))
        except (AttributeError, TypeError, ValueError):
            continue
        if dx > 0 and dy > 0 and (tissue, area) > best_key:
            best, best_key = (dy, dx), (tissue, area)
    if best is None and ds.get("PixelSpacing"):
        try:
            dy, dx = (float(v) for v in ds.PixelSpacing)
            best = (dy, dx) if dx > 0 and dy > 0 else None
        except (TypeError, ValueError):
            best = None
    return best


def us_frame_interval_ms(ds) -> float:
    """Time between frames in ms (see module docstring); 0 when the file does not say."""
    try:
        if ds.get("FrameTime") not in (None, ""):
            return max(float(ds.FrameTime), 0.0)
        vec = ds.get("FrameTimeVector")
        if vec is not None and len(vec) > 1:
            return float(np.mean([float(v) for v in list(vec)[1:]]))
        for key in ("CineRate", "RecommendedDisplayFrameRate"):
            if ds.get(key) not in (None, "") and float(ds.get(key)) > 0:
                return 1000.0 / float(ds.get(key))
    except (TypeError, ValueError):
        pass
    return 0.0


def to_grey(pixels: np.ndarray, photometric: str, samples: int) -> np.ndarray:
    """Frames ``(T, Y, X)`` float32 from ``pixel_array`` (``(Y, X)``, ``(T, Y, X)`` or ``(..., 3)`` RGB)."""
    arr = np.asarray(pixels)
    if samples == 3:
        if arr.ndim == 3:
            arr = arr[np.newaxis]
        rgb = arr.astype(np.float32)
        grey = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    else:
        grey = arr.astype(np.float32)
        if grey.ndim == 2:
            grey = grey[np.newaxis]
        if photometric == "MONOCHROME1":
            grey = grey.max() - grey
    return grey


def _dataset(path: str | os.PathLike):
    import pydicom

    p = Path(path)
    if not p.is_file():
        raise InputError(f"File not found: {p}. Check the path and the file name.")
    try:
        return pydicom.dcmread(str(p))
    except Exception as exc:
        raise InputError(f"Could not read {p.name} as DICOM ({type(exc).__name__}: {exc}); the file is "
                         "corrupt or not DICOM: export the clip again.") from exc


def _pixels(ds, name: str) -> np.ndarray:
    if "PixelData" not in ds:
        raise InputError(f"{name} has no image data (no PixelData); export the clip's images, not a report.")
    try:
        return ds.pixel_array
    except Exception as exc:  # no decoder, truncated frames
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise InputError(f"Cannot decode the frames of {name} (transfer syntax {ts}: {exc}); install a "
                         "decoder (`pip install pylibjpeg pylibjpeg-libjpeg`) or export uncompressed.") from exc


def read_dicom_us(path: str | os.PathLike) -> Cine:
    """Read a DICOM ultrasound clip as a :class:`Cine` ``(T, 1, Y, X)`` float32 (see module docstring)."""
    name = Path(path).name
    ds = _dataset(path)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    data = to_grey(_pixels(ds, name), photometric, samples)
    size = us_pixel_size_mm(ds)
    notes: list[str] = []
    if size is None:
        notes.append(f"{name}: {NO_SPACING_NOTE}")
    for msg in notes:
        warnings.warn(msg, InputWarning, stacklevel=2)
    dy, dx = size if size is not None else (1.0, 1.0)
    affine = np.diag([dx, dy, SINGLE_SLICE_MM, 1.0])
    return Cine(data=data[:, np.newaxis], spacing=(SINGLE_SLICE_MM, dy, dx),
                frame_interval_ms=us_frame_interval_ms(ds), affine=affine, name=Path(path).stem,
                warnings=notes, spacing_known=size is not None, modality="US")


def us_files_in(folder: str | os.PathLike) -> list[Path]:
    """The ultrasound DICOM files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".") and is_us_dicom(p))
