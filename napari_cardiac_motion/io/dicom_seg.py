"""DICOM SEG export of a cine's labels, written with highdicom. No Qt, no napari, no torch.

What is written: one DICOM Segmentation instance (BINARY, uncompressed) per cardiac frame ``t`` that
holds a label, all in one new SEG series of the source study, in the folder
``DIR/dicom_seg/`` as ``labels_tNNN.seg.dcm`` (``t`` 0-based, as on napari's time slider). Why one
instance per frame: a SEG instance indexes its frames by plane position only (highdicom builds the
dimension index from ImagePositionPatient and refuses two source images at the same position, see
highdicom issues #174 and #369), and the frames of a cine share the positions of their slices.

Each instance

* references the source images of its cardiac frame (Source Image Sequence of every SEG frame,
  Referenced Series Sequence): one SEG frame per (segment, source image) where that segment has
  pixels; images without any label get no frame;
* has one segment per model class, segment number = label value (1 LV blood pool, 2 LV myocardium,
  3 RV blood pool), label = the class name of the model's description, coded anatomy in SNOMED CT
  (:data:`SEGMENT_CODES`), display colour = the class colour;
* identifies the algorithm (Segment Algorithm Name and Algorithm Identification: the model's name and
  version from its checkpoint metadata, family "Artificial Intelligence");
* carries the patient and study of the source images (copied by highdicom from the first image).

Source data it repairs rather than refuses (each noted in :attr:`DicomSegResult.notes`): Type 2 patient
and study attributes that are missing (written empty), dates and times that are not valid DICOM values
(e.g. ``20120000``; written empty), and images of one stack with different FrameOfReferenceUIDs (an
anonymiser's doing: the reader has already checked that they share one orientation and lie on one
stack; the SEG uses the FrameOfReferenceUID of image ``(t=0, z=0)``). :func:`write_dicom_seg` also
issues them as one :class:`~napari_cardiac_motion.errors.InputWarning`.

Refused with an :class:`~napari_cardiac_motion.errors.InputError` (one line, before anything is
written): an image without a Type 1 attribute a SEG must reference (:data:`REQUIRED_TAGS`), Enhanced
multi-frame sources, labels on another grid than the source, label values the model does not describe.

Axis orders: labels ``(T, Z, Y, X)`` as everywhere in the package; ``Y`` = DICOM row, ``X`` = column.

The segments' coded anatomy and descriptions live in :mod:`.dicom_seg_segments` (re-exported here).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import CardiacMotionError, InputError, InputWarning, optional_module
from ..model_description import ModelDescription, describe
from .dicom import DicomSource, dicom_source, looks_like_dicom
from .dicom_seg_segments import SEGMENT_CODES, SOFTWARE_NAME, segment_descriptions

#: output folder name (inside the predict output folder) and file name pattern (``t`` 0-based)
DICOM_SEG_DIR = "dicom_seg"
DICOM_SEG_NAME = "labels_t{t:03d}.seg.dcm"

#: Type 1 attributes every source image must have: ``keyword: (tag, why)``
REQUIRED_TAGS: dict[str, tuple[str, str]] = {
    "SOPClassUID": ("(0008,0016)", "the SEG references each source image by class and instance"),
    "SOPInstanceUID": ("(0008,0018)", "the SEG references each source image by class and instance"),
    "StudyInstanceUID": ("(0020,000D)", "the SEG joins the study of its source images"),
    "SeriesInstanceUID": ("(0020,000E)", "the SEG references the source series"),
    "FrameOfReferenceUID": ("(0020,0052)", "the SEG is placed in the patient space of its source"),
}

#: Type 2 patient/study attributes highdicom copies from the first source image (written empty when absent)
TYPE2_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
              "StudyDate", "StudyTime", "ReferringPhysicianName")

@dataclass
class DicomSegResult:
    """What :func:`write_dicom_seg` wrote: ``folder``, the ``files`` by cardiac frame ``t`` (0-based),
    the SEG ``series_uid`` and ``notes`` on repaired source attributes."""

    folder: Path
    files: dict[int, Path]
    series_uid: str
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- source checks

def is_dicom_input(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM folder or a DICOM file (whose folder is read), as ``read_cine`` sees it."""
    p = Path(path)
    if p.is_dir():
        return True
    return p.is_file() and not str(p).lower().endswith((".nii", ".nii.gz")) and looks_like_dicom(p)


def not_dicom_reason(path: str | os.PathLike | None) -> str:
    """One line saying why a DICOM SEG cannot be written for an image read from ``path``."""
    where = f"'{Path(path).name}'" if path else "this image"
    return (f"DICOM SEG needs the source DICOM images, but {where} was not read from a DICOM folder "
            "(a NIfTI file has no DICOM instances, patient or study for a SEG to reference). Open the DICOM "
            "series of this cine (its folder) and export again, or use the NIfTI labels.")


def require_highdicom() -> None:
    """Raise a one-line :class:`CardiacMotionError` when highdicom (extra ``dicom``) is not installed."""
    optional_module("highdicom", "DICOM SEG export needs highdicom, which is not installed: pip install "
                    "'napari-cardiac-motion[dicom]' (or pip install highdicom).", error=CardiacMotionError)


def _read_header(f: Path):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-conformant UIDs and values in the source: reported by dciodvfy
        return pydicom.dcmread(str(f), stop_before_pixels=True, force=True)


def _headers(source: DicomSource) -> list[list[Any]]:
    """Source headers as ``[t][z]`` (each file read once), checked for :data:`REQUIRED_TAGS`."""
    if any(fr is not None for row in source.frames for fr in row):
        raise InputError(
            f"{source.folder.name} is stored as Enhanced (multi-frame) DICOM; DICOM SEG export supports series of "
            "single-frame images (one file per slice and frame). Export the series as classic single-frame "
            "images, or use the NIfTI labels.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom converts (and warns about) the source's values on access
        return _checked_headers(source)


def _checked_headers(source: DicomSource) -> list[list[Any]]:
    cache: dict[Path, Any] = {}
    out = []
    for row in source.files:
        line = []
        for f in row:
            if f not in cache:
                ds = _read_header(f)
                for kw, (tag, why) in REQUIRED_TAGS.items():
                    if not str(getattr(ds, kw, "") or "").strip():
                        raise InputError(
                            f"{f.name} in {source.folder} has no {kw} {tag}, which a DICOM SEG needs ({why}); "
                            "export the series again with complete headers (anonymisers sometimes strip it), or "
                            "use the NIfTI labels.")
                cache[f] = ds
            line.append(cache[f])
        out.append(line)
    return out


def prepare_dicom_seg(path: str | os.PathLike) -> DicomSource:
    """Check, before any work, that a DICOM SEG can be written for the cine at ``path``.

    Returns its :class:`DicomSource`; raises :class:`InputError` (one line) for a NIfTI input, an
    Enhanced multi-frame series, or an image without a tag of :data:`REQUIRED_TAGS`.
    """
    if not Path(path).exists():
        raise InputError(f"Not found: {path}. Check the path.")
    if not is_dicom_input(path):
        raise InputError(
            f"--dicom-seg needs a DICOM series as input, but '{Path(path).name}' is not a DICOM folder (a NIfTI "
            "file has no DICOM instances, patient or study for a SEG to reference); give the folder of the DICOM "
            "series as INPUT, or drop --dicom-seg.")
    require_highdicom()
    p = Path(path)
    source = dicom_source(p if p.is_dir() else p.parent)
    _headers(source)
    return source


# ----------------------------------------------------------------------------- repairs

def _valid(vr: str, value: Any) -> bool:
    from pydicom.valuerep import DA, DT, TM

    try:
        {"DA": DA, "DT": DT, "TM": TM}[vr](value)
    except Exception:  # noqa: BLE001 - any parse failure is an invalid value
        return False
    return True


def _repair_first(ds, notes: list[str]) -> None:
    """Make the dataset highdicom copies patient/study from acceptable: Type 2 attributes present,
    dates and times valid or empty (in place, on a copy of the header)."""
    for kw in TYPE2_TAGS:
        if kw not in ds:
            setattr(ds, kw, "")
            notes.append(f"source has no {kw}; written empty")
    for el in ds:
        if el.VR in ("DA", "DT", "TM") and el.VM == 1 and el.value not in (None, "") and not _valid(el.VR, el.value):
            notes.append(f"source {el.keyword or el.tag} '{el.value}' is not a valid {el.VR}; written empty")
            el.value = ""


# ----------------------------------------------------------------------------- writing

def _check_labels(labels: np.ndarray, source: DicomSource, description: ModelDescription) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim == 3:
        lab = lab[np.newaxis]
    if tuple(lab.shape) != tuple(source.grid):
        raise InputError(
            f"The labels (T, Z, Y, X) = {tuple(lab.shape)} are not on the grid of the DICOM series "
            f"{source.folder.name} {tuple(source.grid)}; a SEG can only be written for labels of that series.")
    values = {int(v) for v in np.unique(lab)} - {0}
    known = {c.value for c in description.classes}
    if values - known:
        raise InputError(
            f"Label values {sorted(values - known)} are not classes of the model "
            f"({', '.join(f'{c.value} {c.name}' for c in description.classes)}); fix or relabel them before "
            "exporting a DICOM SEG.")
    return lab.astype(np.uint8, copy=False)


def build_dicom_seg(labels: np.ndarray, source: DicomSource,
                    model_metadata: Mapping[str, Any] | None = None) -> tuple[dict[int, Any], list[str]]:
    """The SEG datasets in memory: ``({t: highdicom Segmentation}, notes)`` (frames without labels omitted).

    ``labels``: ``(T, Z, Y, X)`` uint8 on the source grid; ``model_metadata``: the checkpoint metadata
    (``name``, ``version``, and the class description of :mod:`..model_description`).
    """
    import highdicom as hd

    meta = dict(model_metadata or {})
    try:
        description = describe(meta)
    except ValueError as exc:
        raise InputError(f"The model's class description is malformed ({exc}); cannot name the segments.") from exc
    lab = _check_labels(labels, source, description)
    name = str(meta.get("name") or "unknown model")[:64]
    version = str(meta.get("version") or "unknown")[:64]
    headers = _headers(source)
    notes: list[str] = []
    frame_of_reference = str(headers[0][0].FrameOfReferenceUID)
    n_for = len({str(ds.FrameOfReferenceUID) for row in headers for ds in row})
    if n_for > 1:
        notes.append(f"the {sum(map(len, headers))} source images carry {n_for} different FrameOfReferenceUIDs "
                     f"(one stack by position and orientation); the SEG uses {frame_of_reference}")
    descriptions = segment_descriptions(description, name, version)
    series_uid = hd.UID()
    try:
        series_number = int(getattr(headers[0][0], "SeriesNumber", None) or 0) + 1000
    except (TypeError, ValueError):
        series_number = 1000
    from .. import __version__

    out: dict[int, Any] = {}
    for t, row in enumerate(headers):
        if not lab[t].any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom/highdicom about the source's non-conformant values
            images = []
            for ds in row:
                ds = copy.deepcopy(ds)
                ds.FrameOfReferenceUID = frame_of_reference
                images.append(ds)
            _repair_first(images[0], notes if not out else [])
            out[t] = hd.seg.Segmentation(
                source_images=images, pixel_array=lab[t], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=series_number,
                sop_instance_uid=hd.UID(), instance_number=t + 1, manufacturer=SOFTWARE_NAME,
                manufacturer_model_name=SOFTWARE_NAME, software_versions=str(__version__), device_serial_number="none",
                content_label="HEART", content_description=f"Cardiac frame {t} (0-based) of the cine",
                series_description=f"Segmentation {name} {version}"[:64])
    return out, notes


def _fsync(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_dicom_seg(folder: str | os.PathLike, labels: np.ndarray, source: DicomSource | str | os.PathLike,
                    model_metadata: Mapping[str, Any] | None = None) -> DicomSegResult:
    """Write the DICOM SEG of ``labels`` ``(T, Z, Y, X)`` for the DICOM cine ``source`` into ``folder``.

    ``source`` is the :class:`DicomSource` of the cine (``Cine.source``) or its DICOM folder. Every
    instance is built in memory first, then written into a temporary folder beside ``folder`` that
    replaces ``folder`` in one rename: an error leaves no partial output and an earlier export intact.
    Raises :class:`InputError` (see module docstring).
    """
    if not isinstance(source, DicomSource):
        source = prepare_dicom_seg(source)
    datasets, notes = build_dicom_seg(labels, source, model_metadata)
    if not datasets:
        raise InputError("The labels are empty (no structure in any frame); there is nothing to put in a DICOM SEG.")
    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old: Path | None = None
    try:
        files = {}
        for t, seg in datasets.items():
            f = tmp / DICOM_SEG_NAME.format(t=t)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seg.save_as(str(f))
            _fsync(f)
            files[t] = target / f.name
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists() and (old / target.name).exists():
            os.replace(old / target.name, target)  # put the previous export back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    series_uid = str(next(iter(datasets.values())).SeriesInstanceUID)
    if notes:
        warnings.warn(f"DICOM SEG written; from the source: {'; '.join(notes)}.", InputWarning, stacklevel=2)
    return DicomSegResult(folder=target, files=files, series_uid=series_uid, notes=notes)


def _umask() -> int:
    from ..atomic import current_umask

    return current_umask()


def read_dicom_seg_labels(folder: str | os.PathLike, source: DicomSource | str | os.PathLike) -> np.ndarray:
    """Read a SEG folder written by :func:`write_dicom_seg` back as labels ``(T, Z, Y, X)`` uint8 on the
    grid of ``source``, matching SEG frames to the source images by SOP Instance UID (highdicom)."""
    import highdicom as hd

    if not isinstance(source, DicomSource):
        p = Path(source)
        source = dicom_source(p if p.is_dir() else p.parent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        uids = [[str(_read_header(f).SOPInstanceUID) for f in row] for row in source.files]
    out = np.zeros(source.grid, np.uint8)
    for f in sorted(Path(folder).glob("*.dcm")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = hd.seg.segread(str(f))
        refs = {str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence
                for r in s.ReferencedInstanceSequence}
        hits = [t for t, row in enumerate(uids) if refs <= set(row)]
        if len(hits) != 1:
            raise InputError(f"{f.name} does not reference the images of one frame of {source.folder.name}.")
        t = hits[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[t] = seg.get_pixels_by_source_instance(
                uids[t], combine_segments=True, relabel=False, assert_missing_frames_are_empty=True, dtype=np.uint8)
    return out


__all__ = ["DICOM_SEG_DIR", "DICOM_SEG_NAME", "DicomSegResult", "REQUIRED_TAGS", "SEGMENT_CODES",
           "build_dicom_seg", "is_dicom_input", "not_dicom_reason", "prepare_dicom_seg", "read_dicom_seg_labels",
           "require_highdicom", "segment_descriptions", "write_dicom_seg"]
