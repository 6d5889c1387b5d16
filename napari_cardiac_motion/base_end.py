"""Which end of a short-axis stack is the base (no torch, no Qt): one rule for the clean-up, the
read-out's slice rules and the strain's basal/mid/apical levels."""

from __future__ import annotations

import numpy as np


def base_is_first(area: np.ndarray) -> bool:
    """Whether slice 0 is the base, from ``area`` ``(Z,)``: the end-diastolic area of the LV (blood pool
    + myocardium, any unit; 0 where the slice holds none) per slice.

    The LV tapers towards the apex, so the half of the labelled slices with the larger total area is the
    basal half. Blood pool alone misleads: a hypertrophic or trabeculated base can hold less cavity than
    the mid slices while its ring is still the widest. Fewer than two labelled slices, or a tie: slice 0.
    """
    a = np.asarray(area, dtype=np.float64).ravel()
    zs = np.nonzero(a > 0)[0]
    if zs.size < 2:
        return True
    half = zs.size // 2
    return bool(a[zs[:half]].sum() >= a[zs[zs.size - half:]].sum())
