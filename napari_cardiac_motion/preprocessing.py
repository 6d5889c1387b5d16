"""Intensity normalisation shared by inference and training (no torch). The in-plane geometry step
(pixel size and region) lives in :mod:`napari_cardiac_motion.geometry`.

A cine is clipped to its own [1st, 99th] percentile window and scaled to [0, 1]. The window is computed
once per cine (:func:`intensity_window`, on at most ``MAX_WINDOW_SAMPLES`` evenly strided voxels, so a
512×512×20×50 cine needs no float copy of itself) and applied chunk by chunk (:func:`apply_window`).
"""

from __future__ import annotations

import numpy as np

#: voxels used to estimate the percentile window (a regular stride through the cine beyond this)
MAX_WINDOW_SAMPLES = 8_000_000


def intensity_window(volume: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """The ``(lo, hi)`` intensity window of a volume/cine: its [low, high] percentiles (``hi > lo``)."""
    v = np.asarray(volume)
    flat = v.reshape(-1)
    if flat.size > MAX_WINDOW_SAMPLES:
        flat = flat[:: int(np.ceil(flat.size / MAX_WINDOW_SAMPLES))]
    lo, hi = np.percentile(flat.astype(np.float32, copy=False), [low, high])
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def apply_window(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Scale ``values`` by a window from :func:`intensity_window` and clip to [0, 1] (float32)."""
    lo, hi = window
    out = np.asarray(values, dtype=np.float32) - np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def normalize_intensity(volume: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Clip a whole volume/cine to its [low, high] percentiles and scale to [0, 1] (float32).

    The same normalisation is used in training and inference (the reference code did not).
    """
    return apply_window(volume, intensity_window(volume, low, high))
