"""Clean-up of predicted label maps (no torch, no Qt).

``keep_largest_components`` keeps, per frame, one connected 3D component per structure; stray blobs
elsewhere in the field become background. The LV blood pool kept is the component most enclosed by
myocardium (the largest, when no myocardium is predicted); the myocardium kept is every component that
touches that LV blood pool (the largest, when none does); the RV blood pool kept is the largest component
touching the myocardium (the largest overall, when none does). A large false "LV" far from the heart
therefore cannot win over the real one by size alone.
"""

from __future__ import annotations

import numpy as np

from .conventions import LV_BLOOD_POOL, LV_MYOCARDIUM, RV_BLOOD_POOL

# 3D connectivity: faces within a slice and across neighbouring slices (short-axis slices are far apart)
_STRUCTURE = np.zeros((3, 3, 3), bool)
_STRUCTURE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
_STRUCTURE[0, 1, 1] = _STRUCTURE[2, 1, 1] = True
# in-plane neighbourhood used to test contact between structures
_INPLANE = np.zeros((1, 3, 3), bool)
_INPLANE[0] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    return ndimage.label(mask, structure=_STRUCTURE)


def _contact(comp: np.ndarray, n: int, other: np.ndarray) -> np.ndarray:
    """Voxels of ``other`` touching each component 1..n of ``comp`` (index 0 unused)."""
    from scipy import ndimage

    ring = ndimage.grey_dilation(comp, footprint=np.ones((1, 3, 3), bool))  # label spread 1 voxel in-plane
    return np.bincount(ring[other].ravel(), minlength=n + 1)


def keep_largest_components(labels: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Return ``labels`` (``(Z, Y, X)`` or ``(T, Z, Y, X)`` uint8) with one connected component per
    structure and frame (see module docstring): a copy, or ``labels`` itself changed with ``inplace``."""
    from scipy import ndimage

    lab = np.asarray(labels)
    if lab.ndim == 3:
        return keep_largest_components(lab[None], inplace)[0]
    if lab.ndim != 4:
        raise ValueError(f"labels must be (Z, Y, X) or (T, Z, Y, X), got shape {lab.shape}")
    out = lab if inplace else lab.copy()
    for t in range(lab.shape[0]):
        frame = out[t]
        myo = frame == LV_MYOCARDIUM
        # LV blood pool: the component most enclosed by myocardium
        comp, n = _components(frame == LV_BLOOD_POOL)
        lv = comp > 0
        if n > 1:
            sizes = np.bincount(comp.ravel(), minlength=n + 1)
            sizes[0] = 0
            score = _contact(comp, n, myo).astype(np.float64) if myo.any() else np.zeros(n + 1)
            score[0] = -1
            best = int(np.argmax(score)) if score.max() > 0 else int(np.argmax(sizes))
            lv = comp == best
            frame[(comp > 0) & ~lv] = 0
        # myocardium: components touching the kept LV blood pool
        comp, n = _components(myo)
        if n > 1:
            if lv.any():
                near = ndimage.binary_dilation(lv, structure=_INPLANE)
                keep = set(int(v) for v in np.unique(comp[near & myo]) if v)
            else:
                keep = set()
            if not keep:
                sizes = np.bincount(comp.ravel())
                sizes[0] = 0
                keep = {int(np.argmax(sizes))}
            frame[myo & ~np.isin(comp, list(keep))] = 0
        myo = frame == LV_MYOCARDIUM
        # RV blood pool: the largest component touching the myocardium (else the largest)
        comp, n = _components(frame == RV_BLOOD_POOL)
        if n > 1:
            sizes = np.bincount(comp.ravel(), minlength=n + 1).astype(np.float64)
            sizes[0] = 0
            touching = _contact(comp, n, myo) > 0 if myo.any() else np.zeros(n + 1, bool)
            touching[0] = False
            best = int(np.argmax(np.where(touching, sizes, -1))) if touching.any() else int(np.argmax(sizes))
            frame[(comp > 0) & (comp != best)] = 0
    return out
