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

Header parsing lives in :mod:`.dicom_headers` (``looks_like_dicom`` and ``dicom_files_in`` are
re-exported here).
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
from .dicom_headers import DicomFrame, dicom_files_in, frames_of, looks_like_dicom, one_series, read_headers

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



def _phase_key(e: DicomFrame) -> tuple:
    return (np.inf if np.isnan(e.trigger) else e.trigger,
            np.inf if np.isnan(e.temporal_index) else e.temporal_index,
            e.inst, e.frame if e.frame is not None else 0)


def _check_phase_counts(folder: Path, slices: list[list[DicomFrame]]) -> None:
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
        " (slice positions along the slice normal). The series is incomplete or mixes acquisitions; "
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


def _source_of(folder: Path, slices: list[list[DicomFrame]], rows: int, cols: int) -> DicomSource:
    n_t, n_z = len(slices[0]), len(slices)
    return DicomSource(
        folder=folder,
        files=tuple(tuple(slices[z][t].file for z in range(n_z)) for t in range(n_t)),
        frames=tuple(tuple(slices[z][t].frame for z in range(n_z)) for t in range(n_t)),
        shape=(rows, cols),
    )


def _sorted_slices(path: str | os.PathLike) -> tuple[Path, list[list[DicomFrame]], int, int, DicomFrame]:
    """Headers of the folder's one series as ``slices[z][t]`` (sorted along the normal, then by
    phase), with the image size ``(rows, cols)`` and the first frame read (the geometry reference)."""
    folder = Path(path)
    if not folder.exists():
        raise InputError(f"Folder not found: {folder}. Check the path.")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder. Choose the folder that holds the DICOM files of one cine.")
    items = one_series(folder, read_headers(folder))

    f0, ds0 = items[0]
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    frames: list[DicomFrame] = []
    for f, ds in items:
        if int(ds.Rows) != rows or int(ds.Columns) != cols:
            raise InputError(
                f"{f.name} is {ds.Rows}×{ds.Columns} pixels but {f0.name} is {rows}×{cols}; "
                "all images of a cine must have the same size. Choose a folder with one cine series."
            )
        frames.extend(frames_of(f, ds))

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
    slices: list[list[DicomFrame]] = []
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
    where: dict[Path, list[tuple[int, int, DicomFrame]]] = defaultdict(list)
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


__all__ = ["DicomSource", "dicom_files_in", "dicom_source", "looks_like_dicom", "read_dicom_folder",
           "slice_gap_message"]
