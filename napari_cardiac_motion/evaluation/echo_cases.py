"""The CAMUS views an echo evaluation scores (no Qt, no napari, no torch).

Layout (``../shared/data/echo``, see :mod:`..training.echo_data` and the data README): ``camus_fullres/<patient>/``
(``info.json``; per view the ED→ES half cycle ``_seq`` with labels of every frame ``_seq_gt``, or ED/ES images
only, and the manual ED/ES labels ``_ED_gt``/``_ES_gt``; 0.308 mm pixels; the CAMUS reference EF) and
``camus_edes224/`` (``index.json``; ED and ES at 224×224, pixel size unknown). The patient split is the one
training uses (:func:`..training.echo_data.echo_split`): by default only the validation patients, never
trained on, are scored.

Every view is an :class:`EchoEvalView`: image frames ``(T, Y, X)`` exactly as stored (no re-sampling, no
reordering: a sequence stored ES→ED keeps its indices), ground-truth labels in CAMUS values (1 LV cavity,
2 LV myocardium, 3 left atrium).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputError, InputWarning

SPLITS = ("val", "train", "all")
SOURCES = ("fullres", "edes224")
#: label values of the CAMUS ground truth by structure key (:data:`..model_description.ECHO_DEFAULT`)
CAMUS_VALUES = {"LV": 1, "Myo": 2, "LA": 3}


@dataclass
class EchoEvalView:
    """One apical view of one patient with its ground truth.

    ``image`` ``(T, Y, X)``; ``ed``/``es`` the frame indices of the manual labels ``gt_ed``/``gt_es``
    ``(Y, X)``; ``gt_seq`` ``(T, Y, X)`` labels of every frame (None unless the whole half cycle is labelled);
    ``spacing`` ``(dy, dx)`` mm (placeholder 1.0 when ``spacing_known`` is False); ``ref_ef`` the CAMUS
    reference biplane EF (%) of the patient, None when unknown; ``val`` whether the patient is a validation one.
    """

    name: str
    source: str
    patient: str
    view: str
    image: np.ndarray
    ed: int
    es: int
    gt_ed: np.ndarray
    gt_es: np.ndarray
    gt_seq: np.ndarray | None
    spacing: tuple[float, float]
    spacing_known: bool
    ref_ef: float | None
    val: bool


def echo_root(data: str | Path) -> Path | None:
    """The CAMUS folder under ``data`` (``data`` itself or ``data/echo``), or None when there is none."""
    data = Path(data)
    for root in (data, data / "echo"):
        if (root / "camus_fullres").is_dir() or (root / "camus_edes224" / "index.json").exists():
            return root
    return None


def read_frames(path: Path) -> tuple[np.ndarray, tuple[float, float], bool]:
    """``(T, Y, X)`` frames, pixel size ``(dy, dx)`` mm and whether it is known, of a 2D or 2D+t NIfTI."""
    from ..io.echo_nifti import read_nifti_frames

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        fr = read_nifti_frames(path)
    return fr.data, fr.spacing, fr.spacing_known


def _fullres_view(folder: Path, info: dict, view: str, val: bool) -> EchoEvalView | None:
    """One view of a ``camus_fullres`` patient (None when its ED or ES image is missing upstream)."""
    v = info["views"][view]
    stem = folder / f"{folder.name}_{view}"
    ed_gt, spacing, known = read_frames(Path(f"{stem}_ED_gt.nii.gz"))
    es_gt, _, _ = read_frames(Path(f"{stem}_ES_gt.nii.gz"))
    seq, seq_gt = Path(f"{stem}_seq.nii.gz"), Path(f"{stem}_seq_gt.nii.gz")
    gt_seq = None
    if v.get("sequence_available") and seq.exists():
        image = read_frames(seq)[0]
        ed, es = int(v["ed_index"]), int(v["es_index"])
        if seq_gt.exists():
            gt_seq = read_frames(seq_gt)[0]
            if gt_seq.shape != image.shape:
                raise InputError(f"{seq_gt.name} has {gt_seq.shape} (T, Y, X) but its image {image.shape}.")
    elif Path(f"{stem}_ED.nii.gz").exists() and Path(f"{stem}_ES.nii.gz").exists():
        image = np.concatenate([read_frames(Path(f"{stem}_ED.nii.gz"))[0], read_frames(Path(f"{stem}_ES.nii.gz"))[0]])
        ed, es = 0, 1
    else:
        return None
    ref = info.get("ef_percent")
    return EchoEvalView(f"{folder.name}_{view}", "fullres", folder.name, view, image, ed, es, ed_gt[0], es_gt[0],
                        gt_seq, spacing, known, float(ref) if isinstance(ref, (int, float)) else None, val)


def _wanted(patient: str, keep: set[str], patients: set[str] | None) -> bool:
    return patient in keep and (patients is None or patient in patients or patient.removeprefix("patient") in patients)


def iter_echo_views(root: str | Path, split: str = "val", patients: list[str] | None = None, limit: int | None = None,
                    sources: tuple[str, ...] = SOURCES) -> Iterator[EchoEvalView]:
    """The views of ``split`` (``val``, ``train`` or ``all``) under the CAMUS folder ``root``: the full-resolution
    ones first, then the 224×224 ones (at most ``limit`` of those). ``patients`` keeps only those
    (``patient0015`` or ``0015``)."""
    from ..training.echo_data import VIEWS, echo_split

    if split not in SPLITS:
        raise InputError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    root = Path(root)
    parts = echo_split(root)
    val = set(parts["val"])
    keep = val | set(parts["train"]) if split == "all" else set(parts[split])
    wanted = set(patients) if patients else None
    full = root / "camus_fullres"
    if "fullres" in sources and full.is_dir():
        for folder in sorted(full.iterdir()):
            if (folder / "info.json").exists() and _wanted(folder.name, keep, wanted):
                info = json.loads((folder / "info.json").read_text())
                for view in VIEWS:
                    if (v := _fullres_view(folder, info, view, folder.name in val)) is not None:
                        yield v
    index = root / "camus_edes224" / "index.json"
    n = 0
    for entry in json.loads(index.read_text())["cases"] if "edes224" in sources and index.exists() else []:
        if not _wanted(entry["patient"], keep, wanted) or (limit is not None and n >= limit):
            continue
        n += 1
        image = read_frames(root / "camus_edes224" / entry["image"])[0]
        gt = read_frames(root / "camus_edes224" / entry["labels"])[0]
        if image.shape != gt.shape or image.shape[0] != 2:
            raise InputError(f"{entry['image']}: image {image.shape} and labels {gt.shape} must both be (2, H, W).")
        yield EchoEvalView(f"{entry['patient']}_{entry['view']}", "edes224", entry["patient"], entry["view"], image,
                           0, 1, gt[0], gt[1], None, (1.0, 1.0), False, None, entry["patient"] in val)
