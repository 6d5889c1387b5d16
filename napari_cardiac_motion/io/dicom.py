"""DICOM cine folders: one 2D image per (slice, phase), or Enhanced multi-frame files.

Inputs: a folder of classic single-frame images (one file per slice and phase), or Enhanced
(multi-frame) MR files, one for the whole cine or one per slice. For multi-frame files each frame's
geometry comes from its functional groups (per-frame first, then shared): ``PlanePositionSequence``
(ImagePositionPatient), ``PlaneOrientationSequence`` (ImageOrientationPatient), ``PixelMeasuresSequence``
(PixelSpacing, SliceThickness), ``CardiacSynchronizationSequence`` (NominalCardiacTriggerDelayTime),
``FrameContentSequence`` (TemporalPositionIndex), ``PixelValueTransformationSequence`` (rescale).

Geometry (matches NIfTI files converted from the same series, e.g. by dcm2niix):

* ``ImageOrientationPatient`` = row direction r (along increasing column index) then column
  direction c (along increasing row index), both in LPS.
* NIfTI X = DICOM column index, NIfTI Y = DICOM row index, NIfTI Z = slice index ordered by the
  position along the normal ``n = r × c`` (ascending).
* Affine (RAS): ``[flip·r·dx, flip·c·dy, flip·(p_last - p_0)/(nz-1), flip·p_0]`` with
  ``flip = diag(-1, -1, 1)`` (LPS→RAS), ``dy, dx = PixelSpacing`` (row spacing, column spacing).
* Phases of each slice are ordered by trigger time (``TriggerTime`` or
  ``NominalCardiacTriggerDelayTime``), then ``TemporalPositionIndex``, ``InstanceNumber`` and frame
  number; trigger times may differ slightly between slices (different breath-holds), so ordering is
  per slice.

Checks: a missing ``PixelSpacing`` is an :class:`InputError` (the pixel size in mm is unknown and
guessing 1 mm would silently corrupt every volume); slices with different numbers of phases are an
error naming the slice positions (and the missing phases when ``TemporalPositionIndex`` tells them);
uneven spacing between slice positions (a missing slice, a gap) is an
:class:`~napari_cardiac_motion.errors.InputWarning` naming the gap in mm, kept in ``Cine.warnings``.

Provenance: the cine's ``source`` is a :class:`DicomSource` telling which file (and frame of a
multi-frame file) each 2D image ``(t, z)`` came from, so that derived objects (a DICOM SEG) can
reference the source instances. :func:`dicom_source` computes the same mapping from the headers alone.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..errors import InputError, InputWarning

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class DicomSource:
    """Where each 2D image ``(t, z)`` of a DICOM cine came from.

    Attributes:
        folder: the folder that was read.
        files: ``files[t][z]``, the file holding image ``(t, z)`` (t = frame, z = slice, the cine's order).
        frames: ``frames[t][z]``, the 0-based frame index in a multi-frame file, ``None`` for a
            single-frame file.
        shape: ``(rows, columns)`` of every image; the cine's ``(Y, X)``.
    """

    folder: Path
    files: tuple[tuple[Path, ...], ...]
    frames: tuple[tuple[int | None, ...], ...]
    shape: tuple[int, int]

    @property
    def grid(self) -> tuple[int, int, int, int]:
        """``(T, Z, Y, X)`` of the cine read from these files."""
        return (len(self.files), len(self.files[0]) if self.files else 0, *self.shape)


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
class _Frame:
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


def _frames_of(f: Path, ds) -> list[_Frame]:
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
        frames.append(_Frame(
            file=f, label=label, frame=i if n > 1 else None, ipp=ipp, iop=iop, pixel_spacing=ps,
            thickness=thick, trigger=trig, temporal_index=tpi, inst=inst,
            slope=slope if np.isfinite(slope) and slope != 0 else 1.0,
            intercept=intercept if np.isfinite(intercept) else 0.0,
        ))
    return frames


def read_dicom_folder(path: str | os.PathLike) -> Cine:
    """Read a folder of DICOM images (single-frame images, one per slice × phase, or Enhanced
    multi-frame files) as a :class:`Cine` ``(T, Z, Y, X)``.

    Raises :class:`InputError` for a folder without DICOM images, several series in one folder, a
    missing PixelSpacing, slices with different numbers of phases, or unreadable pixel data. Gaps
    between slices are reported as :class:`InputWarning` and kept in ``Cine.warnings``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about non-conformant UIDs, VRs, ...
        cine = _read_dicom_folder(path)
    for msg in cine.warnings:
        warnings.warn(msg, InputWarning, stacklevel=2)
    return cine


def _read_headers(folder: Path) -> list:
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


def _one_series(folder: Path, headers: list) -> list:
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


def _phase_key(e: _Frame) -> tuple:
    return (np.inf if np.isnan(e.trigger) else e.trigger,
            np.inf if np.isnan(e.temporal_index) else e.temporal_index,
            e.inst, e.frame if e.frame is not None else 0)


def _check_phase_counts(folder: Path, slices: list[list[_Frame]]) -> None:
    counts = [len(s) for s in slices]
    if len(set(counts)) == 1:
        return
    n_max = max(counts)
    parts = []
    all_tpi = all(np.isfinite(e.temporal_index) for s in slices for e in s)
    expected = sorted({int(e.temporal_index) for s in slices for e in s}) if all_tpi else []
    for s in slices:
        if len(s) == n_max:
            continue
        txt = f"slice at {s[0].pos:.1f} mm has {len(s)} of {n_max} phases"
        if all_tpi:
            missing = sorted(set(expected) - {int(e.temporal_index) for e in s})
            if missing:
                txt += f" (missing TemporalPositionIndex {', '.join(map(str, missing))})"
        parts.append(txt)
    raise InputError(
        f"The slices in {folder} have different numbers of phases: " + "; ".join(parts) +
        f" (slice positions along the slice normal). The series is incomplete or mixes acquisitions; "
        "export the complete cine again or remove the extra files."
    )


def slice_gap_message(positions: np.ndarray) -> str | None:
    """A warning naming uneven spacing between sorted slice positions (mm), or ``None`` if even.

    Needs three or more slices (the median step is the reference); a step that differs from the
    median by more than ``max(0.1 mm, 5 %)`` counts as a gap (larger) or an overlap (smaller).
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.size < 3:
        return None
    d = np.diff(pos)
    med = float(np.median(d))
    tol = max(0.1, 0.05 * abs(med))
    bad = [k for k in range(d.size) if abs(d[k] - med) > tol]
    if not bad:
        return None
    parts = []
    for k in bad:
        where = f"slices {k} and {k + 1} (at {pos[k]:.1f} and {pos[k + 1]:.1f} mm)"
        if d[k] > med:
            n_missing = int(round(d[k] / med)) - 1 if med > 0 else 0
            miss = f", about {n_missing} slice(s) missing" if n_missing >= 1 else ""
            parts.append(f"a gap of {d[k]:.2f} mm between {where}{miss}")
        else:
            parts.append(f"only {d[k]:.2f} mm between {where}")
    return (
        f"Uneven slice spacing: the slices are {med:.2f} mm apart except " + "; ".join(parts) +
        f". Volumes assume {med:.2f} mm per slice and the stack is laid out evenly from the first to the "
        "last slice; export the complete series if slices are missing."
    )


def dicom_source(path: str | os.PathLike) -> DicomSource:
    """The :class:`DicomSource` of the cine in DICOM folder ``path`` (headers only, no pixel data).

    Same checks and same ``(t, z)`` order as :func:`read_dicom_folder`; raises :class:`InputError`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder, slices, rows, cols, _ = _sorted_slices(path)
    return _source_of(folder, slices, rows, cols)


def _source_of(folder: Path, slices: list[list[_Frame]], rows: int, cols: int) -> DicomSource:
    n_t, n_z = len(slices[0]), len(slices)
    return DicomSource(
        folder=folder,
        files=tuple(tuple(slices[z][t].file for z in range(n_z)) for t in range(n_t)),
        frames=tuple(tuple(slices[z][t].frame for z in range(n_z)) for t in range(n_t)),
        shape=(rows, cols),
    )


def _sorted_slices(path: str | os.PathLike) -> tuple[Path, list[list[_Frame]], int, int, _Frame]:
    """Headers of the folder's one series as ``slices[z][t]`` (sorted along the normal, then by
    phase), with the image size ``(rows, cols)`` and the first frame read (the geometry reference)."""
    folder = Path(path)
    if not folder.exists():
        raise InputError(f"Folder not found: {folder}. Check the path.")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder. Choose the folder that holds the DICOM files of one cine.")
    items = _one_series(folder, _read_headers(folder))

    f0, ds0 = items[0]
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    frames: list[_Frame] = []
    for f, ds in items:
        if int(ds.Rows) != rows or int(ds.Columns) != cols:
            raise InputError(
                f"{f.name} is {ds.Rows}×{ds.Columns} pixels but {f0.name} is {rows}×{cols}; "
                "all images of a cine must have the same size. Choose a folder with one cine series."
            )
        frames.extend(_frames_of(f, ds))

    # Geometry: one orientation and one pixel size for the whole cine
    e0 = frames[0]
    iop = e0.iop
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    for e in frames:
        if not np.allclose(e.iop, iop, atol=1e-3):
            raise InputError(
                f"{e.label} has a different slice orientation than {e0.label}; the folder mixes image stacks. "
                "Choose a folder with one short-axis cine."
            )
        if not np.allclose(e.pixel_spacing, e0.pixel_spacing, rtol=1e-4, atol=1e-5):
            raise InputError(
                f"{e.label} has PixelSpacing {list(e.pixel_spacing)} mm but {e0.label} has "
                f"{list(e0.pixel_spacing)} mm; a cine needs one pixel size. Choose a folder with one cine series."
            )
        e.pos = float(e.ipp @ normal)

    # Group into slices by position along the normal (tolerance 0.01 mm)
    frames.sort(key=lambda e: e.pos)
    slices: list[list[_Frame]] = []
    for e in frames:
        if slices and abs(e.pos - slices[-1][0].pos) < 1e-2:
            slices[-1].append(e)
        else:
            slices.append([e])
    _check_phase_counts(folder, slices)
    for s in slices:
        s.sort(key=_phase_key)
    return folder, slices, rows, cols, e0


def _read_dicom_folder(path: str | os.PathLike) -> Cine:
    import pydicom

    folder, slices, rows, cols, e0 = _sorted_slices(path)
    row_dir, col_dir = e0.iop[:3], e0.iop[3:]
    normal = np.cross(row_dir, col_dir)
    dy, dx = float(e0.pixel_spacing[0]), float(e0.pixel_spacing[1])
    n_t, n_z = len(slices[0]), len(slices)
    notes = []
    pos = np.array([s[0].pos for s in slices])
    gap = slice_gap_message(pos)
    if gap:
        notes.append(f"{folder.name}: {gap}")

    # Pixel data: each file is decoded once
    where: dict[Path, list[tuple[int, int, _Frame]]] = defaultdict(list)
    for z, s in enumerate(slices):
        for t, e in enumerate(s):
            where[e.file].append((t, z, e))
    data = np.empty((n_t, n_z, rows, cols), dtype=np.float32)
    for f, targets in where.items():
        try:
            px_all = pydicom.dcmread(str(f), force=True).pixel_array
        except Exception as exc:
            raise InputError(
                f"Cannot decode the pixels of {f.name} ({type(exc).__name__}: {exc}). "
                "The file may be corrupt or compressed with a codec that is not installed "
                "(install pylibjpeg / gdcm, or convert the series to NIfTI)."
            ) from exc
        for t, z, e in targets:
            px = px_all if e.frame is None else (px_all[e.frame] if px_all.ndim == 3 else px_all)
            if px.shape != (rows, cols):
                raise InputError(f"{e.label}: pixel array has shape {px.shape}, expected {(rows, cols)}.")
            data[t, z] = px.astype(np.float32) * e.slope + e.intercept
        del px_all

    # Spacing and affine
    p0 = slices[0][0].ipp
    if n_z > 1:
        step = (slices[-1][0].ipp - p0) / (n_z - 1)
        dz = float(np.median(np.diff(pos)))
    else:
        thick = e0.thickness
        dz = float(thick) if np.isfinite(thick) and thick > 0 else 1.0
        step = normal * dz
    affine = np.eye(4)
    affine[:3, 0] = _LPS_TO_RAS @ row_dir * dx
    affine[:3, 1] = _LPS_TO_RAS @ col_dir * dy
    affine[:3, 2] = _LPS_TO_RAS @ step
    affine[:3, 3] = _LPS_TO_RAS @ p0

    # Frame interval: median trigger-time step over slices
    frame_ms = 0.0
    if n_t > 1:
        diffs = [np.median(np.diff([e.trigger for e in s])) for s in slices]
        diffs = [d for d in diffs if np.isfinite(d) and d > 0]
        if diffs:
            frame_ms = float(np.median(diffs))

    return Cine(
        data=data,
        spacing=(dz, dy, dx),
        frame_interval_ms=frame_ms,
        affine=affine,
        name=folder.name or "dicom",
        warnings=notes,
        source=_source_of(folder, slices, rows, cols),
    )
