"""Segmentation and motion metrics (numpy/scipy; no torch).

Arrays are label maps ``(Z, Y, X)`` (or any shape) with the label convention of ``conventions.py``;
spacing is ``(dz, dy, dx)`` in mm (voxels when the spacing is unknown: pass ``(1, 1, 1)``).
"""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, gt: np.ndarray, label: int | None = None) -> float:
    """Dice ``2|A∩B| / (|A|+|B|)`` of two boolean masks (or of ``label`` in two label maps).

    Both empty → 1.0 (nothing to find, nothing found); one empty → 0.0.
    """
    a = np.asarray(pred) == label if label is not None else np.asarray(pred, dtype=bool)
    b = np.asarray(gt) == label if label is not None else np.asarray(gt, dtype=bool)
    s = int(a.sum()) + int(b.sum())
    if s == 0:
        return 1.0
    return float(2.0 * np.logical_and(a, b).sum() / s)


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    if not mask.any():
        return mask
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                    border_value=0)
    return mask & ~eroded


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Distances (in the units of ``spacing``) from every surface voxel of each mask to the other mask's
    surface (symmetric: both directions concatenated). Empty if either mask is empty."""
    from scipy import ndimage

    a, b = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if not a.any() or not b.any():
        return np.zeros((0,))
    spacing = tuple(float(s) for s in (spacing or (1.0,) * a.ndim))
    sa, sb = _surface(a), _surface(b)
    dt_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    dt_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return np.concatenate([dt_b[sa], dt_a[sb]])


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...] | None = None,
         label: int | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between two masks (or ``label`` in label maps).

    Returns ``nan`` when either mask is empty (undefined), 0.0 when the surfaces coincide.
    """
    a = np.asarray(pred) == label if label is not None else np.asarray(pred, dtype=bool)
    b = np.asarray(gt) == label if label is not None else np.asarray(gt, dtype=bool)
    d = surface_distances(a, b, spacing)
    if d.size == 0:
        return float("nan")
    return float(np.percentile(d, 95))


def ejection_fraction(ed_volume: float, es_volume: float) -> float:
    """EF = (EDV − ESV) / EDV (a ratio in [0, 1]; ``nan`` if EDV is 0). Volumes in any common unit."""
    if ed_volume <= 0:
        return float("nan")
    return float((ed_volume - es_volume) / ed_volume)


def volume(labels: np.ndarray, label: int, spacing: tuple[float, float, float] | None = None) -> float:
    """Volume of ``label``: voxel count × voxel volume (mm³ when spacing is given, else voxels)."""
    n = float((np.asarray(labels) == label).sum())
    return n * float(np.prod(spacing)) if spacing is not None else n
