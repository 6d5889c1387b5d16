"""2D+t NIfTI (echocardiography) and the volume-or-2D+t decision for 3D files. No napari, no Qt.

An echo clip is stored as a 3D NIfTI ``(X, Y, T)`` (CAMUS: X lateral, Y depth with the probe/apex at
small Y, T frames; the third pixdim is a frame counter, often 1.0). A 3D NIfTI can just as well be a
volume ``(X, Y, Z)`` (one frame of a short-axis stack), so the layout is a choice:

* ``layout="volume"``: ``(X, Y, Z)`` → :class:`Cine` ``(1, Z, Y, X)`` (what :func:`.nifti.read_nifti` does);
* ``layout="2d+t"``: ``(X, Y, T)`` → :class:`Cine` ``(T, 1, Y, X)``: one slice, rows = depth (apex at the
  top), columns = lateral;
* ``layout="auto"``: decided from the header by :func:`decide_layout` (the rule is in its docstring).

2D files ``(X, Y)`` are a one-frame clip ``(1, 1, Y, X)``; 4D files ``(X, Y, Z, T)`` are not ambiguous and
read as always (``(X, Y, 1, T)`` is a one-slice cine).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..errors import InputError, InputWarning
from ..model_description import is_ultrasound
from .nifti import read_nifti, resolve_voxel_size
from .nifti_files import load_nifti, nifti_stem

LAYOUTS = ("auto", "volume", "2d+t")

#: words in a header's ``descrip`` that say the third axis is time (case-insensitive)
TIME_AXIS_WORDS = ("x,y,t", "2d+t", "half_sequence", "[ed,es]")

#: in-plane pixels finer than this (mm) with a third pixdim of exactly 1.0 look like an ultrasound grid
#: with a frame counter (cine MR pixels are coarser; short-axis slices are 5–10 mm apart)
ULTRASOUND_PIXEL_MM = 0.6

#: frame spacing of a 2D+t file read into a :class:`Cine` (its Z has one slice; the value is a placeholder)
SINGLE_SLICE_MM = 1.0

_TIME_MS = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}

#: a frame interval (ms) read from a header outside this range is taken as unknown (e.g. a frame counter 1.0 s)
PLAUSIBLE_FRAME_MS = (1.0, 200.0)


def check_layout(layout: str) -> str:
    """``layout`` lower-cased, or :class:`InputError` when it is not one of :data:`LAYOUTS`."""
    lay = str(layout).strip().lower()
    if lay not in LAYOUTS:
        raise InputError(f"Unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    return lay


def layout_for_modality(modality: str | None) -> str:
    """The layout a model of ``modality`` expects of a 3D file: ``"2d+t"`` for ultrasound (``"US"``),
    else ``"auto"`` (callers pass it to the readers when the user chose a model but no layout)."""
    return "2d+t" if is_ultrasound(modality) else "auto"


def decide_layout(shape: tuple[int, ...], zooms: tuple[float, ...], descrip: str = "",
                  time_unit: str = "unknown") -> tuple[str, str]:
    """``("volume" | "2d+t", reason)`` for a NIfTI or MHD image of ``shape`` (file order ``(X, Y, N)``).

    Rule for 3D (in order; 2D files are ``"2d+t"`` with one frame, 4D+ files ``"volume"``):

    1. ``descrip`` names a time axis (one of :data:`TIME_AXIS_WORDS`, e.g. CAMUS's ``"X,Y,T"``) → 2D+t;
    2. the third pixdim read in the header's time unit (``xyzt_units``) is a plausible frame interval
       (5–200 ms) and is under 1 (so not a slice distance in mm: in practice seconds) → 2D+t;
    3. the third pixdim is exactly 1.0 (a frame counter) and the in-plane pixels are finer than
       :data:`ULTRASOUND_PIXEL_MM` → 2D+t (an ultrasound grid);
    4. otherwise → volume (a short-axis stack, today's behaviour).
    """
    dims = [int(s) for s in shape if int(s) > 0]
    while len(dims) > 3 and dims[-1] == 1:
        dims = dims[:-1]
    if len(dims) <= 2:
        return "2d+t", "a 2D image (one frame)"
    if len(dims) >= 4:
        return "volume", "a 4D file (X, Y, Z, T)"
    text = descrip.lower().replace(" ", "")
    word = next((w for w in TIME_AXIS_WORDS if w in text), None)
    if word:
        return "2d+t", f"the header description says {word!r}"
    z = [float(v) for v in list(zooms)[:3]] + [0.0] * max(0, 3 - len(list(zooms)[:3]))
    dt_ms = z[2] * _TIME_MS.get(time_unit, 0.0)
    if 5.0 <= dt_ms <= 200.0 and z[2] < 1.0:
        return "2d+t", f"the third axis is {dt_ms:g} ms apart (a time unit)"
    if abs(z[2] - 1.0) < 1e-6 and 0 < max(z[0], z[1]) < ULTRASOUND_PIXEL_MM:
        return "2d+t", (f"{z[0]:.3g} mm pixels with a third spacing of exactly 1 (an ultrasound grid "
                        "with a frame counter)")
    return "volume", "no sign of a time axis in the header"


@dataclass
class EchoFrames:
    """A 2D or 2D+t NIfTI in memory.

    Attributes:
        data: ``(T, Y, X)`` in the file's dtype (rows = depth Y, columns = lateral X).
        spacing: ``(dy, dx)`` mm by the package's voxel-size rule; ``spacing_known`` False when the header
            has no unit and 1.0 placeholders.
        frame_interval_ms: from the third pixdim when the header gives it a time unit and the value is
            plausible (:data:`PLAUSIBLE_FRAME_MS`), else 0 (unknown).
        affine: 4x4 as stored; name: file stem; notes: header warnings and how the layout was decided.
    """

    data: np.ndarray
    spacing: tuple[float, float]
    spacing_known: bool
    frame_interval_ms: float
    affine: np.ndarray
    name: str
    notes: list[str] = field(default_factory=list)


def _load_nifti(path: str | os.PathLike):
    """``(image, data)`` of a NIfTI file (:func:`.nifti_files.load_nifti`), refusing an empty one."""
    img, data = load_nifti(path)
    if data.size == 0:
        raise InputError(f"{Path(path).name} is empty (shape {data.shape}); choose a file that holds image data.")
    return img, data


def header_facts(img) -> tuple[tuple[int, ...], tuple[float, ...], str, str, str]:
    """Shape, zooms, descrip, spatial unit and time unit of a loaded NIfTI image's header."""
    hdr = img.header
    descrip = bytes(np.asarray(hdr["descrip"]).tobytes()).split(b"\0")[0].decode("latin-1")
    s_unit, t_unit = hdr.get_xyzt_units()
    return tuple(img.shape), tuple(float(v) for v in hdr.get_zooms()), descrip, str(s_unit), str(t_unit)


def nifti_layout(path: str | os.PathLike, layout: str = "auto") -> tuple[str, str]:
    """The layout to read ``path`` with: ``layout`` itself unless ``"auto"``, then :func:`decide_layout`."""
    import nibabel as nib

    lay = check_layout(layout)
    if lay != "auto":
        return lay, "chosen by the caller"
    try:
        shape, zooms, descrip, _, t_unit = header_facts(nib.load(str(path)))
    except Exception:  # the read itself reports the problem
        return "volume", "unreadable header"
    return decide_layout(shape, zooms, descrip, t_unit)


def read_nifti_frames(path: str | os.PathLike, what: str = "image") -> EchoFrames:
    """Read a 2D ``(X, Y)`` or 2D+t ``(X, Y, T)`` (or ``(X, Y, 1, T)``) NIfTI as :class:`EchoFrames`."""
    img, raw = _load_nifti(path)
    name = Path(path).name
    arr = raw
    if arr.ndim == 4 and arr.shape[2] == 1:
        arr = arr[:, :, 0, :]
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
    if arr.ndim != 3:
        raise InputError(f"{name} has shape {raw.shape}; a 2D+t {what} is X×Y×T (or X×Y×1×T). "
                         "Open a volume cine with layout 'volume' instead.")
    _, zooms, _, s_unit, t_unit = header_facts(img)
    (dx, dy, _), msg = resolve_voxel_size(img.affine, list(zooms[:2]) + [1.0], name)
    notes = [msg] if msg else []
    dt = 0.0
    if len(zooms) >= 3 and t_unit in _TIME_MS and img.ndim >= 3:
        dt = zooms[-1 if raw.ndim == 4 else 2] * _TIME_MS[t_unit]
        dt = dt if PLAUSIBLE_FRAME_MS[0] <= dt <= PLAUSIBLE_FRAME_MS[1] else 0.0
    known = not (abs(dx - 1.0) < 1e-6 and abs(dy - 1.0) < 1e-6 and s_unit == "unknown")
    return EchoFrames(np.ascontiguousarray(arr.transpose(2, 1, 0)), (float(dy), float(dx)), known,
                      float(dt), np.asarray(img.affine, np.float64), nifti_stem(path), notes)


def read_nifti_cine(path: str | os.PathLike, layout: str = "auto") -> Cine:
    """Read a NIfTI as a :class:`Cine` ``(T, Z, Y, X)``: a 3D file as a volume or a 2D+t clip (module doc).

    A 2D file is refused under ``layout="auto"`` (a single picture is not a cine) and read as a one-frame
    clip under ``layout="2d+t"``.

    A 2D+t clip gets spacing ``(1.0, dy, dx)`` mm (one slice; dz is a placeholder), ``modality="US"``,
    ``spacing_known`` False when the header has only unit-less 1.0 placeholders (then a warning says
    so), and a note in ``warnings`` saying how ``layout="auto"`` decided.
    """
    chosen = check_layout(layout)
    lay, reason = nifti_layout(path, chosen)
    if lay == "volume":
        return read_nifti(path)
    fr = read_nifti_frames(path)
    if chosen == "auto" and fr.data.shape[0] == 1:
        raise InputError(f"{Path(path).name} is a single 2D image; a cine needs time (an echo clip X×Y×T or "
                         "a cine X×Y×Z×T). To open one echo frame anyway, use layout '2d+t'.")
    if fr.data.dtype.kind not in "uifb":
        raise InputError(f"{Path(path).name} has data type {fr.data.dtype}, not a real number image.")
    notes = list(fr.notes)
    if chosen == "auto" and fr.data.shape[0] > 1:
        notes.append(f"{Path(path).name}: read as a 2D+t clip (X, Y, T) because {reason}; if it is a 3D "
                     "volume, open it with layout 'volume'.")
    if fr.data.shape[0] == 1:
        notes.append(f"{Path(path).name} is a single 2D frame: opened as a one-frame clip; motion and the "
                     "ED/ES choice need a clip (X, Y, T) or a cine (X, Y, Z, T).")
    if not fr.spacing_known:
        notes.append(NO_SPACING_NOTE)
    for msg in notes:
        warnings.warn(msg, InputWarning, stacklevel=2)
    return Cine(data=fr.data[:, np.newaxis].astype(np.float32), spacing=(SINGLE_SLICE_MM, *fr.spacing),
                frame_interval_ms=fr.frame_interval_ms, affine=fr.affine, name=fr.name, warnings=notes,
                spacing_known=fr.spacing_known, modality="US")


#: the note every reader puts in ``Cine.warnings`` when the pixel size is unknown
NO_SPACING_NOTE = ("the file has no physical pixel size (1.0 placeholders or none); lengths, areas and "
                   "volumes are in pixels, not mm. Give the pixel size (e.g. re-export with the true "
                   "spacing) to get ml.")


def read_nifti_label_frames(path: str | os.PathLike, layout: str = "auto") -> EchoFrames:
    """Labels of a 2D or 2D+t NIfTI as :class:`EchoFrames` (data ``(T, Y, X)`` uint8). ``layout`` as in
    :func:`read_nifti_cine`; a file that reads as a volume is refused with the fix."""
    lay, _ = nifti_layout(path, layout)
    fr = read_nifti_frames(path, "label image")
    if lay == "volume" and fr.data.shape[0] > 1:
        raise InputError(f"{Path(path).name} reads as a 3D volume of labels; echo labels are (X, Y) per "
                         "frame or a clip (X, Y, T). Pass the 2D+t layout if the third axis is time.")
    lab = fr.data
    if lab.dtype.kind == "f":
        if not np.all(np.isfinite(lab)):
            raise InputError(f"{Path(path).name} contains NaN labels; labels must be integers 0..255.")
        lab = np.rint(lab)
    if lab.min() < 0 or lab.max() > 255:
        raise InputError(f"{Path(path).name}: label values must lie in 0..255, found {lab.min()}..{lab.max()}.")
    fr.data = np.ascontiguousarray(lab.astype(np.uint8))
    return fr


#: ``descrip`` of an echo label clip written as ``(X, Y, T)`` (read back as 2D+t by ``layout="auto"``)
CLIP_DESCRIP = "labels X,Y,T (2D+t echo clip)"


def is_clip_file(path: str | os.PathLike) -> bool:
    """True unless ``path`` is a 4D (or more) NIfTI: an echo input whose labels are written ``(X, Y, T)``
    (a 2D/3D NIfTI, MetaImage, DICOM US, video); a ``(X, Y, 1, T)`` NIfTI keeps that layout."""
    from .nifti_files import is_nifti_path

    if not is_nifti_path(path):
        return True
    import nibabel as nib

    try:
        return len(nib.load(str(path)).shape) <= 3
    except Exception:  # unreadable header: the reader reported it already
        return True


def write_clip_labels(path: str | os.PathLike, labels: np.ndarray, affine=None,
                      spacing_yx: tuple[float, float] = (1.0, 1.0)) -> Path:
    """Write one-slice labels ``(T, 1, Y, X)`` (or ``(T, Y, X)``) as a NIfTI clip ``(X, Y, T)`` uint8 with the
    clip's ``affine``; the third pixdim is 1.0 (a frame counter, as CAMUS) and ``descrip`` says X,Y,T."""
    from .nifti_files import make_nifti_image, save_nifti_atomic

    lab = np.asarray(labels)
    if lab.ndim == 4:
        if lab.shape[1] != 1:
            raise InputError(f"An echo label clip has one slice; got labels of shape {lab.shape}.")
        lab = lab[:, 0]
    if lab.ndim != 3:
        raise InputError(f"Echo labels must be (T, Y, X) or (T, 1, Y, X); got shape {lab.shape}.")
    img = make_nifti_image(np.transpose(lab, (2, 1, 0)).astype(np.uint8), affine,
                           (1.0, float(spacing_yx[0]), float(spacing_yx[1])), 0.0, np.uint8)
    img.header["descrip"] = CLIP_DESCRIP.encode("ascii")
    return save_nifti_atomic(img, path)
