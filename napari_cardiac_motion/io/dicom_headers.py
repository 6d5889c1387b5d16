"""DICOM headers of a cine folder (no Qt, no napari): which files are DICOM, reading their headers
(no pixel data), one series per folder, and each file's 2D frames with their geometry and timing
(single-frame images, or the functional groups of Enhanced multi-frame files; see :mod:`.dicom`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """Cheap check: ``DICM`` at byte 128, or a ``.dcm`` extension."""
    p = Path(path)
    if p.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_files_in(folder: str | os.PathLike) -> list[Path]:
    """Files of ``folder`` (not recursive, hidden files skipped) that look like DICOM."""
    p = Path(folder)
    return sorted(
        f for f in p.iterdir() if f.is_file() and not f.name.startswith(".") and looks_like_dicom(f)
    )


def _floats(value, n: int, what: str, fname: str) -> np.ndarray:
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except Exception as exc:
        raise InputError(f"{fname}: {what} is missing or malformed; cannot place the slice in space.") from exc
    if arr.shape != (n,):
        raise InputError(f"{fname}: {what} should have {n} values, got {len(arr)}.")
    return arr


def _num(value) -> float:
    """A DICOM number (DS/IS/FD, possibly empty or missing) as float, ``nan`` when absent."""
    if value is None or value == "":
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan


@dataclass
class DicomFrame:
    """One 2D image of the cine: a single-frame file, or one frame of a multi-frame file."""

    file: Path
    label: str  # for messages: file name, plus "frame k" for multi-frame files
    frame: int | None  # index in a multi-frame file's pixel data; None for a single-frame file
    ipp: np.ndarray
    iop: np.ndarray
    pixel_spacing: np.ndarray  # (row spacing dy, column spacing dx) in mm
    thickness: float
    trigger: float
    temporal_index: float
    inst: int
    slope: float
    intercept: float
    pos: float = 0.0


def _n_frames(ds) -> int:
    n = getattr(ds, "NumberOfFrames", None)
    try:
        return max(1, int(n)) if n not in (None, "") else 1
    except (TypeError, ValueError):
        return 1


def _first_item(container, keyword: str):
    """First item of sequence ``keyword`` in ``container`` (a Dataset or None), else None."""
    if container is None or keyword not in container:
        return None
    seq = container[keyword].value
    return seq[0] if seq else None


_FRAME_GROUPS = ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence",
                 "FrameContentSequence", "CardiacSynchronizationSequence")


def frames_of(f: Path, ds) -> list[DicomFrame]:
    """The 2D frames of one DICOM file with their geometry and timing."""
    n = _n_frames(ds)
    per = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    enhanced = n > 1 or (len(per) == 1 and any(k in per[0] for k in _FRAME_GROUPS)) or (
        shared is not None and any(k in shared for k in _FRAME_GROUPS))
    if n > 1 and len(per) != n:
        raise InputError(
            f"{f.name} is a multi-frame DICOM with {n} frames but {len(per)} per-frame functional groups "
            "(PerFrameFunctionalGroupsSequence (5200,9230)), so the frames cannot be placed in space or "
            "time. Export the series again, or convert it to NIfTI (e.g. with dcm2niix) and open that."
        )
    inst_num = _num(getattr(ds, "InstanceNumber", None))
    inst = int(inst_num) if np.isfinite(inst_num) else 0
    frames = []
    for i in range(n):
        item = per[i] if enhanced and i < len(per) else None
        label = f"{f.name} frame {i + 1}" if n > 1 else f.name

        def group(keyword: str, _item=item):
            return _first_item(_item, keyword) or _first_item(shared, keyword)

        pp, po, pm = group("PlanePositionSequence"), group("PlaneOrientationSequence"), group("PixelMeasuresSequence")
        fc, cs, pv = group("FrameContentSequence"), group("CardiacSynchronizationSequence"), \
            group("PixelValueTransformationSequence")
        ipp_src = getattr(pp, "ImagePositionPatient", None) if pp is not None else None
        if ipp_src is None and n == 1:
            ipp_src = getattr(ds, "ImagePositionPatient", None)
        where = "PlanePositionSequence (0020,9113) > " if enhanced else ""
        ipp = _floats(ipp_src or [], 3, f"{where}ImagePositionPatient (0020,0032)", label)
        iop_src = getattr(po, "ImageOrientationPatient", None) if po is not None else None
        iop_src = iop_src or getattr(ds, "ImageOrientationPatient", None)
        where = "PlaneOrientationSequence (0020,9116) > " if enhanced else ""
        iop = _floats(iop_src or [], 6, f"{where}ImageOrientationPatient (0020,0037)", label)
        ps_src = getattr(pm, "PixelSpacing", None) if pm is not None else None
        ps_src = ps_src or getattr(ds, "PixelSpacing", None)
        if not ps_src:
            where = "PixelMeasuresSequence (0028,9110) > " if enhanced else ""
            raise InputError(
                f"{label} has no {where}PixelSpacing (0028,0030), so the pixel size in mm is unknown "
                "(volumes, masses and the model's pixel size depend on it). Export the series again with "
                "complete headers (anonymisers sometimes strip the tag), or convert it to NIfTI with the "
                "true voxel size and open that."
            )
        ps = _floats(ps_src, 2, "PixelSpacing (0028,0030)", label)
        if not np.all(ps > 0):
            raise InputError(f"{label}: PixelSpacing (0028,0030) is {list(ps)}; both values must be > 0 mm.")
        thick = np.nan  # only used for a single-slice cine's third axis
        for src, kw in ((pm, "SpacingBetweenSlices"), (ds, "SpacingBetweenSlices"),
                        (pm, "SliceThickness"), (ds, "SliceThickness")):
            if not np.isfinite(thick) and src is not None:
                thick = _num(getattr(src, kw, None))
        trig = _num(getattr(cs, "NominalCardiacTriggerDelayTime", None) if cs is not None else None)
        if not np.isfinite(trig) and n == 1:
            trig = _num(getattr(ds, "TriggerTime", None))
            if not np.isfinite(trig):
                trig = _num(getattr(ds, "NominalCardiacTriggerDelayTime", None))
        tpi = _num(getattr(fc, "TemporalPositionIndex", None) if fc is not None else None)
        slope = _num(getattr(pv, "RescaleSlope", None) if pv is not None else None)
        intercept = _num(getattr(pv, "RescaleIntercept", None) if pv is not None else None)
        if not np.isfinite(slope):
            slope = _num(getattr(ds, "RescaleSlope", None))
        if not np.isfinite(intercept):
            intercept = _num(getattr(ds, "RescaleIntercept", None))
        frames.append(DicomFrame(
            file=f, label=label, frame=i if n > 1 else None, ipp=ipp, iop=iop, pixel_spacing=ps,
            thickness=thick, trigger=trig, temporal_index=tpi, inst=inst,
            slope=slope if np.isfinite(slope) and slope != 0 else 1.0,
            intercept=intercept if np.isfinite(intercept) else 0.0,
        ))
    return frames




def read_headers(folder: Path) -> list:
    """``[(file, header)]`` of the folder's DICOM images (no pixel data); raises when there are none."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = dicom_files_in(folder)
    if not files:
        raise InputError(
            f"No DICOM files found in {folder}. Choose the folder that directly contains the .dcm files "
            "of one cine series."
        )
    headers = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, force=f.suffix.lower() == ".dcm")
        except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
            raise InputError(f"{f.name} in {folder} cannot be read as DICOM ({exc}). Remove or replace it.") from exc
        if "PixelData" not in ds and not hasattr(ds, "Rows"):
            continue  # DICOMDIR, structured reports, ...
        headers.append((f, ds))
    if not headers:
        raise InputError(f"The DICOM files in {folder} contain no images. Choose a folder with a cine series.")
    return headers


def one_series(folder: Path, headers: list) -> list:
    """The headers of the folder's one series; raises (listing them) when it mixes several."""
    by_series: dict[str, list] = defaultdict(list)
    for f, ds in headers:
        by_series[str(getattr(ds, "SeriesInstanceUID", "unknown"))].append((f, ds))
    if len(by_series) > 1:
        lines = []
        for uid, items in by_series.items():
            desc = str(getattr(items[0][1], "SeriesDescription", "") or "")
            num = getattr(items[0][1], "SeriesNumber", "?")
            lines.append(f"  series {num} '{desc}' ({len(items)} files, UID {uid})")
        raise InputError(
            f"{folder} mixes {len(by_series)} DICOM series:\n" + "\n".join(lines) +
            "\nPut each series in its own folder and open the folder with one series (the short-axis cine)."
        )
    return next(iter(by_series.values()))
