"""Conventions shared by every part of the plugin (each is defined here once; no Qt, no torch).

Labels: 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool (uint8) — today's MR model; a
model says what it segments in its :class:`~.model_description.ModelDescription`.
Cine arrays are ``(T, Z, Y, X)``; motion arrays ``(T, Z, Y, X, 2)`` with components ``(dy, dx)`` in
voxels, from frame t to the ED frame: ``frame_t(p) ≈ frame_ED(p + u_t(p))``.
The cardiac phases: ED is the frame of the largest LV blood pool, ES the smallest
(:func:`ed_es_from_lv_volumes`); a cycle is walked from ED, wrapping (:func:`cycle_order`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

BACKGROUND, LV_BLOOD_POOL, LV_MYOCARDIUM, RV_BLOOD_POOL = 0, 1, 2, 3
NUM_CLASSES = 4

#: label value -> human-readable name
LABEL_NAMES: dict[int, str] = {
    BACKGROUND: "background",
    LV_BLOOD_POOL: "LV blood pool",
    LV_MYOCARDIUM: "LV myocardium",
    RV_BLOOD_POOL: "RV blood pool",
}

#: short names used in tables and JSON
STRUCTURE_KEYS: dict[int, str] = {LV_BLOOD_POOL: "LV", LV_MYOCARDIUM: "Myo", RV_BLOOD_POOL: "RV"}

#: fixed RGBA colours (0-1) of the segmentation Labels layer
LABEL_COLORS: dict[int | None, tuple[float, float, float, float]] = {
    None: (0.0, 0.0, 0.0, 0.0),
    BACKGROUND: (0.0, 0.0, 0.0, 0.0),
    LV_BLOOD_POOL: (0.90, 0.20, 0.20, 1.0),
    LV_MYOCARDIUM: (0.20, 0.75, 0.30, 1.0),
    RV_BLOOD_POOL: (0.25, 0.45, 0.95, 1.0),
}

#: value in a corrections file marking a (frame, slice) as not labelled; the same value is the
#: ignored target of the losses (``model.losses.IGNORE_INDEX``)
UNLABELLED = 255

SEGMENTATION_LAYER = "segmentation"
MOTION_LAYER = "motion"

#: napari axis labels of every ``(T, Z, Y, X)`` layer the plugin makes (the viewer's sliders read t and z)
AXIS_LABELS = ("t", "z", "y", "x")


def ed_es_from_lv_volumes(lv_volumes: Sequence[float] | np.ndarray) -> tuple[int, int]:
    """``(ED, ES)`` frames from an LV blood-pool size per frame (any unit: voxels or ml).

    ED = the frame of the largest LV blood pool, ES = the smallest (first one on ties).
    """
    lv = np.asarray(lv_volumes, dtype=np.float64)
    if lv.ndim != 1 or lv.size == 0:
        raise ValueError(f"LV volumes must be one value per frame; got shape {lv.shape}")
    return int(np.argmax(lv)), int(np.argmin(lv))


def cycle_order(n_frames: int, ed_frame: int) -> list[int]:
    """Frame indices in cycle order from ED: ED, ED+1, …, ED-1 (wrapping). The order the model's passes
    and the fine-tuning visit a cine's frames."""
    return [(ed_frame + k) % n_frames for k in range(n_frames)]
