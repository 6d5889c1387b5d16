"""DICOM cine folders: one 2D image per (slice, phase).

Geometry (matches NIfTI files converted from the same series, e.g. by dcm2niix):

* ``ImageOrientationPatient`` = row direction r (along increasing column index) then column
  direction c (along increasing row index), both in LPS.
* NIfTI X = DICOM column index, NIfTI Y = DICOM row index, NIfTI Z = slice index ordered by the
  position along the normal ``n = r × c`` (ascending).
* Affine (RAS): ``[flip·r·dx, flip·c·dy, flip·(p_last - p_0)/(nz-1), flip·p_0]`` with
  ``flip = diag(-1, -1, 1)`` (LPS→RAS), ``dy, dx = PixelSpacing`` (row spacing, column spacing).
* Phases of each slice are ordered by ``TriggerTime`` (then ``InstanceNumber``); trigger times may
  differ slightly between slices (different breath-holds), so ordering is per slice.
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..errors import InputError

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


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


def read_dicom_folder(path: str | os.PathLike) -> Cine:
    """Read a folder of 2D DICOM images (one per slice × phase) as a :class:`Cine`.

    Raises :class:`InputError` for a folder without DICOM images, several series in one folder,
    slices with different numbers of phases, or unreadable pixel data.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about non-conformant UIDs, VRs, ...
        return _read_dicom_folder(path)


def _read_dicom_folder(path: str | os.PathLike) -> Cine:
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(path)
    if not folder.exists():
        raise InputError(f"Folder not found: {folder}. Check the path.")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder. Choose the folder that holds the DICOM files of one cine.")
    files = dicom_files_in(folder)
    if not files:
        raise InputError(
            f"No DICOM files found in {folder}. Choose the folder that directly contains the .dcm files "
            "of one cine series."
        )

    headers = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about non-conformant UIDs etc.
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
    items = next(iter(by_series.values()))

    # Geometry
    f0, ds0 = items[0]
    iop = _floats(getattr(ds0, "ImageOrientationPatient", None) or [], 6, "ImageOrientationPatient", f0.name)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    ps = _floats(getattr(ds0, "PixelSpacing", None) or [1.0, 1.0], 2, "PixelSpacing", f0.name)
    dy, dx = float(ps[0]), float(ps[1])

    entries = []
    for f, ds in items:
        if int(ds.Rows) != rows or int(ds.Columns) != cols:
            raise InputError(
                f"{f.name} is {ds.Rows}×{ds.Columns} pixels but {f0.name} is {rows}×{cols}; "
                "all images of a cine must have the same size. Choose a folder with one cine series."
            )
        if getattr(ds, "NumberOfFrames", None) not in (None, "", 1, "1"):
            raise InputError(
                f"{f.name} is a multi-frame DICOM ({ds.NumberOfFrames} frames); only folders of "
                "single-frame images are supported. Convert it to NIfTI (e.g. with dcm2niix) and open that."
            )
        ipp = _floats(getattr(ds, "ImagePositionPatient", None) or [], 3, "ImagePositionPatient", f.name)
        iop_f = _floats(getattr(ds, "ImageOrientationPatient", None) or [], 6, "ImageOrientationPatient", f.name)
        if not np.allclose(iop_f, iop, atol=1e-3):
            raise InputError(
                f"{f.name} has a different slice orientation than {f0.name}; the folder mixes image stacks. "
                "Choose a folder with one short-axis cine."
            )
        trig = getattr(ds, "TriggerTime", None)
        trig = float(trig) if trig not in (None, "") else np.nan
        inst = getattr(ds, "InstanceNumber", None)
        inst = int(inst) if inst not in (None, "") else 0
        entries.append({"file": f, "ipp": ipp, "pos": float(ipp @ normal), "trigger": trig, "inst": inst})

    # Group into slices by position along the normal (tolerance 0.01 mm)
    entries.sort(key=lambda e: e["pos"])
    slices: list[list[dict]] = []
    for e in entries:
        if slices and abs(e["pos"] - slices[-1][0]["pos"]) < 1e-2:
            slices[-1].append(e)
        else:
            slices.append([e])
    counts = [len(s) for s in slices]
    if len(set(counts)) != 1:
        detail = ", ".join(f"slice {i}: {c}" for i, c in enumerate(counts))
        raise InputError(
            f"The slices in {folder} have different numbers of phases ({detail}). The series is incomplete "
            "or mixes acquisitions; export the complete cine again or remove the extra files."
        )
    n_t, n_z = counts[0], len(slices)
    for s in slices:
        s.sort(key=lambda e: (np.inf if np.isnan(e["trigger"]) else e["trigger"], e["inst"]))

    # Pixel data
    data = np.empty((n_t, n_z, rows, cols), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z, s in enumerate(slices):
            for t, e in enumerate(s):
                try:
                    ds = pydicom.dcmread(str(e["file"]), force=True)
                    px = ds.pixel_array.astype(np.float32)
                except Exception as exc:
                    raise InputError(
                        f"Cannot decode the pixels of {e['file'].name} ({type(exc).__name__}: {exc}). "
                        "The file may be corrupt or compressed with a codec that is not installed "
                        "(install pylibjpeg / gdcm, or convert the series to NIfTI)."
                    ) from exc
                if px.shape != (rows, cols):
                    raise InputError(f"{e['file'].name}: pixel array has shape {px.shape}, expected {(rows, cols)}.")
                slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
                intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
                data[t, z] = px * slope + intercept

    # Spacing and affine
    p0 = slices[0][0]["ipp"]
    if n_z > 1:
        step = (slices[-1][0]["ipp"] - p0) / (n_z - 1)
        pos = np.array([s[0]["pos"] for s in slices])
        dz = float(np.median(np.diff(pos)))
    else:
        thick = getattr(ds0, "SpacingBetweenSlices", None) or getattr(ds0, "SliceThickness", None) or 1.0
        dz = float(thick)
        step = normal * dz
    affine = np.eye(4)
    affine[:3, 0] = _LPS_TO_RAS @ row_dir * dx
    affine[:3, 1] = _LPS_TO_RAS @ col_dir * dy
    affine[:3, 2] = _LPS_TO_RAS @ step
    affine[:3, 3] = _LPS_TO_RAS @ p0

    # Frame interval: median trigger-time step over slices
    frame_ms = 0.0
    if n_t > 1:
        diffs = [np.median(np.diff([e["trigger"] for e in s])) for s in slices]
        diffs = [d for d in diffs if np.isfinite(d) and d > 0]
        if diffs:
            frame_ms = float(np.median(diffs))

    return Cine(
        data=data,
        spacing=(dz, dy, dx),
        frame_interval_ms=frame_ms,
        affine=affine,
        name=folder.name or "dicom",
    )
