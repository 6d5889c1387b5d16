"""CAMUS echocardiography as training cases (:class:`EchoCase`, a :class:`~.data.Case`). No Qt.

Data layout (``../shared/data/echo``; CAMUS is CC BY-NC-SA 4.0, research use only, and every use must cite
S. Leclerc et al., IEEE TMI 38(9), 2198–2210, 2019; never copy it into the repository):

* ``camus_fullres/<patient>/``: per view (``2CH``, ``4CH``) the ED→ES half cycle ``<p>_<v>_seq.nii.gz``
  ``(X, Y, T)`` with labels of every frame (``_seq_gt``) and the manual ED/ES labels (``_ED_gt``,
  ``_ES_gt``), or only ED/ES images; ``info.json`` gives ``ed_index``/``es_index`` (0-based), frame rate,
  quality and the reference EF. Pixel size 0.308 mm.
* ``camus_edes224/``: ``<p>_<v>.nii.gz`` ``(224, 224, 2)`` (frame 0 ED, frame 1 ES) and ``_gt``; the pixel
  size is **unknown** (resized anisotropically upstream), so these are kept at 224×224 as they are
  (``spacing`` None, ``note`` says so) and are fit for scale-free metrics only.

Each case is one view of one patient: ``image`` ``(T, 1, H, W)`` float16 in [0, 1] (normalised over the clip
as inference does), ``codes`` ``(T, 1, H, W)`` uint8 with ``0`` background, ``1`` LV cavity, ``2`` LV
myocardium, ``3`` left atrium (:data:`~..model_description.ECHO_DEFAULT`) and ``255`` for a frame without
labels. Rows = depth (apex at the top). Full-resolution views are re-sampled to ``pixel_mm`` when given (the
geometry step of inference); at ED and ES the manual labels replace the sequence labels. A sequence that
runs ES→ED (patient0015 4CH) is reversed by default so that every case runs ED→ES (``note`` says so).

Split (by patient, fixed): validation = camus_fullres ``patient0008``, ``patient0015`` and every 5th
camus_edes224 patient in sorted order (67 of 334); the rest is training.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, InputWarning
from ..model.losses import IGNORE_INDEX
from ..preprocessing import normalize_intensity
from .data import Case, resample_case_arrays

CAMUS_LICENCE = ("CAMUS (CC BY-NC-SA 4.0, non-commercial research only; cite S. Leclerc et al., IEEE TMI 38(9), "
                 "2198-2210, 2019, doi:10.1109/TMI.2019.2900516)")
ECHO_VAL_FULLRES = ("patient0008", "patient0015")
#: every n-th camus_edes224 patient (sorted) is a validation patient
EDES224_VAL_EVERY = 5
VIEWS = ("2CH", "4CH")
EDES224_NOTE = ("224x224 as stored: the pixel size is unknown (upstream resized anisotropically), so the view "
                "is not re-sampled and is fit for scale-free metrics (Dice) only")


@dataclass
class EchoCase(Case):
    """A :class:`~.data.Case` of one echo view (Z = 1) with ``view`` (``"2CH"``/``"4CH"``), a ``note`` about its
    geometry or order, ``frame_rate_hz`` (None when unknown) and the CAMUS reference ``ef_percent``."""

    view: str = ""
    note: str = ""
    frame_rate_hz: float | None = None
    ef_percent: float | None = None


def _frames(path: Path) -> tuple[np.ndarray, tuple[float, float], bool]:
    """``(T, Y, X)`` frames, pixel size ``(dy, dx)`` mm and whether it is known, of a 2D or 2D+t NIfTI."""
    from ..io.echo_nifti import read_nifti_frames

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        fr = read_nifti_frames(path)
    return fr.data, fr.spacing, fr.spacing_known


def _centre(codes_ed: np.ndarray) -> np.ndarray:
    """``(1, 2)`` centroid (y, x) of the labelled heart (codes 1..3) in a ``(1, Y, X)`` map (image centre if none)."""
    heart = (codes_ed[0] >= 1) & (codes_ed[0] <= 3)
    if heart.sum() < 20:
        return np.array([[codes_ed.shape[1] / 2.0, codes_ed.shape[2] / 2.0]])
    ys, xs = np.nonzero(heart)
    return np.array([[ys.mean(), xs.mean()]])


def _make_case(name: str, source: str, image: np.ndarray, codes: np.ndarray, ed: int, es: int,
               spacing_yx: tuple[float, float] | None, pixel_mm: float | None, **extra: Any) -> EchoCase:
    """Normalise, add Z = 1, re-sample to ``pixel_mm`` where the spacing is known, and build the case."""
    img = normalize_intensity(image.astype(np.float32))[:, np.newaxis].astype(np.float16)
    cod = codes[:, np.newaxis].astype(np.uint8)
    spacing = None if spacing_yx is None else (1.0, float(spacing_yx[0]), float(spacing_yx[1]))
    if spacing is not None and pixel_mm:
        img, cod, _ = resample_case_arrays(img, cod, spacing, pixel_mm)
        spacing = (1.0, float(pixel_mm), float(pixel_mm))
    # CAMUS clips are ED→ES half cycles: the frame after the last is not ED again
    return EchoCase(name, source, img, cod, int(ed), int(es), spacing, _centre(cod[ed]), whole_cycle=False, **extra)


def load_camus_fullres_view(folder: str | Path, view: str, pixel_mm: float | None = None,
                            ed_first: bool = True) -> EchoCase | None:
    """One view of a ``camus_fullres`` patient, or ``None`` when its ED or ES image is missing upstream."""
    folder = Path(folder)
    info = json.loads((folder / "info.json").read_text())
    v = info["views"][view]
    stem = folder / f"{folder.name}_{view}"
    ed_gt, spacing, _ = _frames(Path(f"{stem}_ED_gt.nii.gz"))
    es_gt, _, _ = _frames(Path(f"{stem}_ES_gt.nii.gz"))
    note = ""
    if v.get("sequence_available") and Path(f"{stem}_seq.nii.gz").exists():
        image, _, _ = _frames(Path(f"{stem}_seq.nii.gz"))
        seq_gt = Path(f"{stem}_seq_gt.nii.gz")
        codes = _frames(seq_gt)[0].copy() if seq_gt.exists() else np.full(image.shape, IGNORE_INDEX, np.uint8)
        ed, es = int(v["ed_index"]), int(v["es_index"])
        codes[ed], codes[es] = ed_gt[0], es_gt[0]
        if ed_first and ed > es:
            image, codes = image[::-1].copy(), codes[::-1].copy()
            ed, es = image.shape[0] - 1 - ed, image.shape[0] - 1 - es
            note = "the sequence ran ES->ED upstream; reversed so that it runs ED->ES"
    elif Path(f"{stem}_ED.nii.gz").exists() and Path(f"{stem}_ES.nii.gz").exists():
        image = np.concatenate([_frames(Path(f"{stem}_ED.nii.gz"))[0], _frames(Path(f"{stem}_ES.nii.gz"))[0]])
        codes, ed, es = np.concatenate([ed_gt, es_gt]), 0, 1
        note = "ED and ES frames only (no sequence upstream)"
    else:
        return None
    rate = v.get("frame_rate_hz")
    return _make_case(f"{folder.name}_{view}", "camus", image, codes, ed, es, spacing, pixel_mm, view=view,
                      note=note, frame_rate_hz=float(rate) if isinstance(rate, (int, float)) else None,
                      ef_percent=info.get("ef_percent") if isinstance(info.get("ef_percent"), (int, float)) else None)


def load_camus_edes224_view(root: str | Path, entry: dict[str, Any]) -> EchoCase:
    """One ``camus_edes224`` index entry (frame 0 ED, frame 1 ES), kept at 224×224 (:data:`EDES224_NOTE`)."""
    root = Path(root)
    image, _, _ = _frames(root / entry["image"])
    codes, _, _ = _frames(root / entry["labels"])
    if image.shape != codes.shape or image.shape[0] != 2:
        raise InputError(f"{entry['image']}: image {image.shape} and labels {codes.shape} must both be (2, H, W).")
    return _make_case(f"{entry['patient']}_{entry['view']}", "camus224", image, codes, 0, 1, None, None,
                      view=entry["view"], note=EDES224_NOTE)


def echo_split(root: str | Path) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}`` patient ids over both CAMUS folders (module docstring)."""
    root = Path(root)
    full = sorted(p.name for p in (root / "camus_fullres").iterdir() if (p / "info.json").exists()) \
        if (root / "camus_fullres").is_dir() else []
    index = root / "camus_edes224" / "index.json"
    small = sorted({c["patient"] for c in json.loads(index.read_text())["cases"]}) if index.exists() else []
    val = [p for p in full if p in ECHO_VAL_FULLRES] + small[::EDES224_VAL_EVERY]
    train = [p for p in full + small if p not in set(val)]
    return {"train": train, "val": val}


def load_echo(root: str | Path, split: str = "train", pixel_mm: float | None = None,
              limit: int | None = None, sources: tuple[str, ...] = ("fullres", "edes224")) -> list[EchoCase]:
    """The CAMUS views of ``split`` (``"train"``, ``"val"`` or ``"all"``) as :class:`EchoCase` objects.

    ``pixel_mm`` re-samples the full-resolution views (spacing known); ``limit`` caps the number of
    cases (tests); ``sources`` picks ``"fullres"`` and/or ``"edes224"``.
    """
    root = Path(root)
    if split not in ("train", "val", "all"):
        raise InputError(f"Unknown split {split!r}; use train, val or all.")
    parts = echo_split(root)
    keep = set(parts["train"] + parts["val"]) if split == "all" else set(parts[split])
    cases: list[EchoCase] = []
    if "fullres" in sources and (root / "camus_fullres").is_dir():
        for folder in sorted((root / "camus_fullres").iterdir()):
            if folder.name in keep and (folder / "info.json").exists():
                cases += [c for v in VIEWS if (c := load_camus_fullres_view(folder, v, pixel_mm)) is not None]
    index = root / "camus_edes224" / "index.json"
    if "edes224" in sources and index.exists():
        for entry in json.loads(index.read_text())["cases"]:
            if limit is not None and len(cases) >= limit:
                break
            if entry["patient"] in keep:
                cases.append(load_camus_edes224_view(root / "camus_edes224", entry))
    return cases[:limit] if limit is not None else cases


def camus_expert_ef(fullres_root: str | Path, length_rule: str = "camus") -> list[dict[str, Any]]:
    """Biplane EF from each ``camus_fullres`` patient's manual ED/ES labels next to the CAMUS reference:
    rows ``{patient, edv_ml, esv_ml, ef_percent, reference_ef_percent}`` (reference None when unknown)."""
    from ..analysis.echo import EchoView, measure_echo

    rows = []
    for folder in sorted(Path(fullres_root).iterdir()):
        if not (folder / "info.json").exists():
            continue
        info = json.loads((folder / "info.json").read_text())
        views = {}
        for key, view in (("a2c", "2CH"), ("a4c", "4CH")):
            ed, spacing, _ = _frames(folder / f"{folder.name}_{view}_ED_gt.nii.gz")
            es, _, _ = _frames(folder / f"{folder.name}_{view}_ES_gt.nii.gz")
            views[key] = EchoView(key, np.concatenate([ed, es]), spacing, 0, 1)
        m = measure_echo(**views, length_rule=length_rule)
        ref = info.get("ef_percent")
        rows.append({"patient": folder.name, "edv_ml": m["lv_edv_ml"], "esv_ml": m["lv_esv_ml"],
                     "ef_percent": m["lv_ef_percent"],
                     "reference_ef_percent": float(ref) if isinstance(ref, (int, float)) else None})
    return rows
