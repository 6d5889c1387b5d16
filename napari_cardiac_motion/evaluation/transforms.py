"""Geometry transforms of an evaluation scan, with truthful spacing (robustness checks).

Each transform re-samples a cine ``(T, Z, Y, X)`` (linear) and its labels ``(T, Z, Y, X)`` (nearest) the
same way and returns the new in-plane spacing, as a scanner with another protocol would have written
them:

* ``scale:F`` — pixels ``F``× larger (``scale:0.6``: a 256 matrix becomes ~430; ``scale:1.4``: coarser);
* ``offcentre:N`` — the slice padded into an ``N×N`` field (zero background) with the heart placed away
  from the centre (a quarter of the free space towards a corner chosen by ``seed``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError


def _resample(arr: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    t, z, h, w = arr.shape
    x = torch.from_numpy(np.ascontiguousarray(arr.reshape(t * z, 1, h, w), dtype=np.float32))
    if mode == "nearest":
        y = F.interpolate(x, size=size, mode="nearest-exact")
    else:
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return y.reshape(t, z, *size).numpy().astype(arr.dtype if mode == "nearest" else np.float32)


def apply_transform(image: np.ndarray, labels: np.ndarray, spacing: tuple[float, float, float], spec: str,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Apply ``spec`` (see module docstring) to ``image`` and ``labels`` (both ``(T, Z, Y, X)``);
    returns ``(image, labels, spacing (dz, dy, dx) mm)``."""
    kind, _, arg = spec.partition(":")
    _, h, w = image.shape[1:]
    dz, dy, dx = spacing
    if kind == "scale":
        f = float(arg)
        if not 0.2 <= f <= 5:
            raise InputError(f"scale factor {f} out of range 0.2–5")
        size = (max(16, int(round(h / f))), max(16, int(round(w / f))))
        sy, sx = dy * h / size[0], dx * w / size[1]
        return _resample(image, size, "bilinear"), _resample(labels, size, "nearest"), (dz, sy, sx)
    if kind == "offcentre":
        n = int(arg)
        if n < max(h, w):
            raise InputError(f"offcentre field {n} is smaller than the slice ({h}×{w})")
        rng = np.random.default_rng(seed)
        free_y, free_x = n - h, n - w
        oy = free_y // 2 + int(rng.choice([-1, 1]) * free_y // 4)
        ox = free_x // 2 + int(rng.choice([-1, 1]) * free_x // 4)
        img = np.zeros(image.shape[:2] + (n, n), np.float32)
        lab = np.zeros(labels.shape[:2] + (n, n), labels.dtype)
        img[..., oy:oy + h, ox:ox + w] = image
        lab[..., oy:oy + h, ox:ox + w] = labels
        return img, lab, (dz, dy, dx)
    raise InputError(f"Unknown transform '{spec}'; use scale:F or offcentre:N.")
