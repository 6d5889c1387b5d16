"""Chamber volumes, ejection fraction, myocardial mass and body surface area from labels.

Labels are ``(T, Z, Y, X)`` uint8 (today's MR model: ``1`` LV blood pool, ``2`` LV myocardium, ``3`` RV
blood pool; a model's :class:`~..model_description.ModelDescription` says which value holds which structure,
found by its key ``LV``, ``Myo``, ``RV``; a structure the model does not segment has volume 0); spacing is ``(dz, dy, dx)`` in mm, so one voxel holds ``dz·dy·dx`` mm³ and
1 ml = 1000 mm³. Volumes are voxel counts times the voxel volume (the slices are treated as slabs of
thickness ``dz``, the usual "summation of discs" of cardiac MR).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..conventions import ed_es_from_lv_volumes
from ..errors import InputError
from ..model_description import MR_DEFAULT, ModelDescription

#: density of myocardium (g/ml) used for LV mass (the value used by cardiac MR guidelines)
MYOCARDIAL_DENSITY_G_PER_ML = 1.05
MM3_PER_ML = 1000.0


@dataclass
class VolumeCurves:
    """Per-frame volumes and per-slice areas.

    Attributes:
        lv_ml, myo_ml, rv_ml: ``(T,)`` volume of LV blood pool, LV myocardium and RV blood pool, ml.
        area_mm2: ``{"lv", "myo", "rv"}`` → ``(T, Z)`` cross-sectional area per frame and slice, mm².
        time_ms: ``(T,)`` time of each frame from frame 0, ms (``None`` when the frame interval is unknown).
    """

    lv_ml: np.ndarray
    myo_ml: np.ndarray
    rv_ml: np.ndarray
    area_mm2: dict[str, np.ndarray]
    time_ms: np.ndarray | None


def check_labels(labels: np.ndarray, spacing) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Validate a ``(T, Z, Y, X)`` label array (a ``(Z, Y, X)`` one becomes ``T = 1``) and its spacing."""
    lab = np.asarray(labels)
    if lab.ndim == 3:
        lab = lab[None]
    if lab.ndim != 4:
        raise InputError(f"Labels must have axes (T, Z, Y, X); got shape {lab.shape}.")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.equal(np.mod(lab, 1), 0)):
            raise InputError("Labels must be whole numbers (0 background, 1 LV, 2 myocardium, 3 RV).")
        lab = lab.astype(np.uint8)
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise InputError(f"Voxel spacing must be three positive numbers (dz, dy, dx) in mm; got {spacing}.")
    return lab, sp  # type: ignore[return-value]


#: the structures measured, by the key of their class in a model description
MEASURED_KEYS = ("LV", "Myo", "RV")


def volume_curves(labels: np.ndarray, spacing, frame_interval_ms: float = 0.0,
                  description: ModelDescription | None = None) -> VolumeCurves:
    """Volumes (ml) of every frame and areas (mm²) of every slice, for LV, myocardium and RV.

    ``description`` says which label value holds each structure (default: today's MR model).
    """
    lab, (dz, dy, dx) = check_labels(labels, spacing)
    n_t, n_z = lab.shape[:2]
    flat = lab.reshape(n_t * n_z, -1)
    desc = description or MR_DEFAULT
    values = [desc.value_of(k) for k in MEASURED_KEYS]
    # counts[i, c] = number of voxels of class c in (frame, slice) i (0 for a structure the model lacks)
    counts = np.stack([(flat == c).sum(1) if c is not None else np.zeros(len(flat), np.int64) for c in values], 1)
    area = counts.reshape(n_t, n_z, 3).astype(np.float64) * dy * dx
    vol = area.sum(1) * dz / MM3_PER_ML
    time_ms = np.arange(n_t, dtype=np.float64) * frame_interval_ms if frame_interval_ms > 0 else None
    return VolumeCurves(lv_ml=vol[:, 0], myo_ml=vol[:, 1], rv_ml=vol[:, 2],
                        area_mm2={"lv": area[..., 0], "myo": area[..., 1], "rv": area[..., 2]}, time_ms=time_ms)


def choose_ed_es(lv_ml: np.ndarray, ed_frame: int | None = None, es_frame: int | None = None) -> tuple[int, int]:
    """ED = frame of largest LV volume, ES = smallest, unless given (overrides are range-checked)."""
    lv = np.asarray(lv_ml, dtype=np.float64)
    n_t = lv.shape[0]
    for name, f in (("ED", ed_frame), ("ES", es_frame)):
        if f is not None and not 0 <= int(f) < n_t:
            raise InputError(f"{name} frame {f} is out of range: the cine has frames 0–{n_t - 1}.")
    auto_ed, auto_es = ed_es_from_lv_volumes(lv)
    ed = int(ed_frame) if ed_frame is not None else auto_ed
    es = int(es_frame) if es_frame is not None else auto_es
    return ed, es


def ejection_fraction_percent(edv_ml: float, esv_ml: float) -> float:
    """EF = 100·(EDV − ESV)/EDV in percent (``nan`` when EDV is 0)."""
    return float(100.0 * (edv_ml - esv_ml) / edv_ml) if edv_ml > 0 else float("nan")


def myocardial_mass_g(myo_ml: float) -> float:
    """Mass (g) of a myocardial volume (ml) at 1.05 g/ml."""
    return float(myo_ml) * MYOCARDIAL_DENSITY_G_PER_ML


def bsa_mosteller(height_cm: float | None, weight_kg: float | None) -> float | None:
    """Body surface area (m²) by Mosteller: ``sqrt(height_cm · weight_kg / 3600)``; ``None`` if unknown."""
    if height_cm is None or weight_kg is None:
        return None
    if not (height_cm > 0 and weight_kg > 0):
        raise InputError(f"Height ({height_cm} cm) and weight ({weight_kg} kg) must be positive for the body "
                         "surface area; leave them empty when unknown.")
    return float(np.sqrt(height_cm * weight_kg / 3600.0))
