"""Load the training data into memory as normalised ``(T, Z, Y, X)`` cines with *label codes*.

Label codes (uint8, one per voxel, ``(T, Z, Y, X)``) extend the label convention so that partly
known voxels can still teach the model:

* ``0..3`` — exact class (0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool);
* ``NOT_LV_MYO`` (10) — the voxel is background *or* RV (Sunnybrook ED slices: outside the
  epicardial contour; Sunnybrook has no RV contours, so "0" there may be RV);
* ``NOT_LV`` (11) — background, myocardium or RV (Sunnybrook ES slices: outside the endocardial
  contour; ES has no epicardial contour, so myocardium is unknown there);
* ``IGNORE_INDEX`` (255) — nothing known (frame/slice not contoured).

The training loss uses the partial-label likelihood ``-log Σ_{c allowed} p_c`` (plain cross-entropy
for exact codes), so a Sunnybrook "0" is never taught as background.

Intensities are normalised per patient over the whole cine (ACDC: ED and ES together) with
:func:`preprocessing.normalize_intensity`, exactly as :func:`inference.predict_cine` does. With
``pixel_mm`` given, every case is re-sampled in-plane to the model's pixel size with the same geometry
step as inference (:mod:`napari_cardiac_motion.geometry`: images bilinear with anti-aliasing, label
codes nearest), using the true voxel spacing of the files.

Validation split (fixed, by patient): ACDC 001, 005, 011, 015, …, 091, 095 (20 patients, four per
disease group) and Sunnybrook SC-HF-I-4, SC-HF-I-5. The UK Biobank-style pair is evaluation only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..model.losses import IGNORE_INDEX, NOT_LV, NOT_LV_MYO
from ..preprocessing import normalize_intensity

#: 20 validation patients, four per ACDC disease group (001–020 DCM, 021–040 HCM, 041–060 MINF,
#: 061–080 NOR, 081–100 RV); the shipped weights never saw them
ACDC_VAL_PATIENTS = tuple(f"patient{n:03d}" for g in range(0, 100, 10) for n in (g + 1, g + 5))
#: the ten validation patients of the earlier runs (kept to compare with their logs)
ACDC_VAL_PATIENTS_10 = tuple(f"patient{n:03d}" for n in range(1, 100, 10))
SUNNYBROOK_VAL_PATIENTS = ("SC-HF-I-4", "SC-HF-I-5")

ACDC_LICENCE = "ACDC (research use only; O. Bernard et al., IEEE TMI 37(11), 2018)"
SUNNYBROOK_LICENCE = "Sunnybrook Cardiac Data (CC0 1.0; P. Radau et al., MIDAS Journal 2009)"


@dataclass
class Case:
    """One patient in memory.

    Attributes:
        name: patient id (folder name).
        source: ``"acdc"`` or ``"sunnybrook"``.
        image: ``(T, Z, Y, X)`` float16 in [0, 1] (ACDC: T = 2, frames ED, ES).
        codes: ``(T, Z, Y, X)`` uint8 label codes (see module docstring).
        ed: ED frame index; es: ES frame index.
        spacing: ``(dz, dy, dx)`` mm, or None when unknown (ACDC files here).
        center: ``(Z, 2)`` in-plane heart centre per slice (y, x), from the ED labels (image centre when
            a slice has none).
        whole_cycle: the frames cover a whole cardiac cycle (the frame after the last is ED again);
            False for clips that cover part of it (e.g. CAMUS ED→ES half cycles).
    """

    name: str
    source: str
    image: np.ndarray
    codes: np.ndarray
    ed: int
    es: int
    spacing: tuple[float, float, float] | None = None
    center: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    whole_cycle: bool = True

    @property
    def n_frames(self) -> int:
        return int(self.image.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.image.shape[1])


def _nifti_tzyx(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a NIfTI (X, Y, Z[, T]) into ``(T, Z, Y, X)`` and its spacing ``(dz, dy, dx)`` mm."""
    from ..io.nifti import read_nifti_volume

    v = read_nifti_volume(path)
    return v.data, tuple(float(s) for s in v.spacing)  # type: ignore[return-value]


def resample_case_arrays(image: np.ndarray, codes: np.ndarray, spacing: tuple[float, float, float] | None,
                         pixel_mm: float | None) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Re-sample ``image`` and ``codes`` ``(T, Z, Y, X)`` in-plane to ``pixel_mm`` (the geometry step of
    inference, over the whole field); returns them and the step (input pixels per model pixel)."""
    import torch

    from ..geometry import model_step, to_model, whole_field_region

    step = model_step(spacing[1:] if spacing else None, pixel_mm)
    if abs(step[0] - 1) < 1e-3 and abs(step[1] - 1) < 1e-3:
        return image, codes, step
    t, z, h, w = image.shape
    region = whole_field_region((h, w), step)
    with torch.no_grad():
        img = to_model(torch.from_numpy(image.reshape(t * z, 1, h, w).astype(np.float32)), region)
        cod = to_model(torch.from_numpy(codes.reshape(t * z, 1, h, w).astype(np.float32)), region,
                       mode="nearest", fill=float(IGNORE_INDEX))
    hh, ww = region.size
    return (img.reshape(t, z, hh, ww).numpy().astype(image.dtype),
            cod.round().reshape(t, z, hh, ww).numpy().astype(np.uint8), step)


def heart_centres(labels_ed: np.ndarray) -> np.ndarray:
    """Per-slice centroid (y, x) of heart labels (codes 1..3) in a ``(Z, Y, X)`` code map."""
    z_n, h, w = labels_ed.shape
    out = np.tile(np.array([[h / 2.0, w / 2.0]]), (z_n, 1))
    heart = (labels_ed >= 1) & (labels_ed <= 3)
    any_heart = heart.any()
    if any_heart:
        ys, xs = np.nonzero(heart.any(0))
        vol_c = np.array([ys.mean(), xs.mean()])
        out[:] = vol_c
    for z in range(z_n):
        ys, xs = np.nonzero(heart[z])
        if len(ys) > 20:
            out[z] = (ys.mean(), xs.mean())
    return out


def acdc_patients(root: str | Path) -> list[Path]:
    """Patient folders (containing ED.nii.gz) under an ACDC-like root, sorted."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if (p / "ED.nii.gz").exists() and (p / "ED_gt.nii.gz").exists())


def load_acdc_case(folder: str | Path, pixel_mm: float | None = None) -> Case:
    """An ACDC-like patient (ED, ES and their labels), re-sampled to ``pixel_mm`` when given."""
    folder = Path(folder)
    ed, spacing = _nifti_tzyx(folder / "ED.nii.gz")
    es, _ = _nifti_tzyx(folder / "ES.nii.gz")
    ed_gt, _ = _nifti_tzyx(folder / "ED_gt.nii.gz")
    es_gt, _ = _nifti_tzyx(folder / "ES_gt.nii.gz")
    image = normalize_intensity(np.concatenate([ed, es], 0)).astype(np.float16)
    codes = np.concatenate([ed_gt, es_gt], 0).astype(np.uint8)
    known = None if np.allclose(spacing, 1.0) else spacing
    image, codes, _ = resample_case_arrays(image, codes, known, pixel_mm)
    return Case(folder.name, "acdc", image, codes, 0, 1, known, heart_centres(codes[0]))


def load_acdc(root: str | Path, names: list[str] | None = None, exclude: tuple[str, ...] = (),
              limit: int | None = None, pixel_mm: float | None = None) -> list[Case]:
    """Load ACDC-like patients under ``root`` (optionally only ``names``; minus ``exclude``)."""
    folders = [p for p in acdc_patients(root) if p.name not in exclude and (names is None or p.name in names)]
    if limit is not None:
        folders = folders[:limit]
    return [load_acdc_case(p, pixel_mm) for p in folders]


def load_sunnybrook_case(folder: str | Path, pixel_mm: float | None = None) -> Case:
    """A Sunnybrook cine with its partial labels turned into label codes (see module docstring)."""
    folder = Path(folder)
    sa, spacing = _nifti_tzyx(folder / "sa.nii.gz")
    lab, _ = _nifti_tzyx(folder / "labels.nii.gz")
    info = json.loads((folder / "info.json").read_text())
    endo = {int(k): set(int(s) for s in v) for k, v in info.get("endo_contour_frames", {}).items()}
    epi = {int(k): set(int(s) for s in v) for k, v in info.get("epi_contour_frames", {}).items()}
    codes = np.full(lab.shape, IGNORE_INDEX, dtype=np.uint8)
    for t, slices in endo.items():
        for z in slices:
            sl = lab[t, z]
            if z in epi.get(t, set()):
                # LV blood pool and myocardium known; outside the epicardium: background or RV
                codes[t, z] = np.where(sl == 1, 1, np.where(sl == 2, 2, NOT_LV_MYO))
            else:
                # only the endocardium: inside = LV blood pool, outside = anything but LV blood pool
                codes[t, z] = np.where(sl == 1, 1, NOT_LV)
    ed = max(epi, key=lambda t: len(epi[t])) if epi else (max(endo) if endo else 0)
    es_candidates = [t for t in endo if t != ed]
    es = es_candidates[0] if es_candidates else ed
    image = normalize_intensity(sa).astype(np.float16)
    image, codes, _ = resample_case_arrays(image, codes, spacing, pixel_mm)
    c_ed = codes[ed].copy()
    c_ed[(c_ed == NOT_LV_MYO) | (c_ed == NOT_LV)] = 0
    c_ed[c_ed == IGNORE_INDEX] = 0
    return Case(folder.name, "sunnybrook", image, codes, int(ed), int(es), spacing, heart_centres(c_ed))


def load_sunnybrook(root: str | Path, names: list[str] | None = None, exclude: tuple[str, ...] = (),
                    pixel_mm: float | None = None) -> list[Case]:
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if (p / "sa.nii.gz").exists() and (p / "labels.nii.gz").exists()) \
        if root.is_dir() else []
    return [load_sunnybrook_case(p, pixel_mm) for p in folders
            if p.name not in exclude and (names is None or p.name in names)]
