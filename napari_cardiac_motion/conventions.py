"""Conventions shared by every part of the plugin (see DESIGN.md §1).

Labels: 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool (uint8).
Cine arrays are ``(T, Z, Y, X)``; motion arrays ``(T, Z, Y, X, 2)`` with components ``(dy, dx)`` in
voxels, from frame t to the ED frame: ``frame_t(p) ≈ frame_ED(p + u_t(p))``.
"""

from __future__ import annotations

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

#: value in a corrections file marking a (frame, slice) as not labelled
UNLABELLED = 255

SEGMENTATION_LAYER = "segmentation"
MOTION_LAYER = "motion"
