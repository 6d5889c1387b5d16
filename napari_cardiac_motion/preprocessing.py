"""Intensity normalisation shared by inference and training (no torch). The in-plane geometry step
(pixel size and region) lives in :mod:`napari_cardiac_motion.geometry`."""

from __future__ import annotations

import numpy as np


def normalize_intensity(volume: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Clip a whole volume/cine to its [low, high] percentiles and scale to [0, 1] (float32).

    The same normalisation is used in training and inference (the reference code did not).
    """
    v = np.asarray(volume, dtype=np.float32)
    lo, hi = np.percentile(v, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
