"""Classical baseline: SimpleITK diffeomorphic demons, slice by slice, ED labels propagated to ES.

SimpleITK is an optional extra (``pip install napari-cardiac-motion[baseline]``), imported lazily.
Convention as the model's (see ``conventions``): for each slice, the displacement ``u`` on the ES grid
satisfies ``ES(p) ≈ ED(p + u(p))`` (ITK: fixed = ES, moving = ED), and the propagated labels are
``label_ES(p) = label_ED(p + u(p))`` (nearest neighbour).

A three-level pyramid (1/4, 1/2, full resolution) handles the large ED→ES motion.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import CardiacMotionError, optional_module
from ..preprocessing import normalize_intensity


def _sitk():
    return optional_module(
        "SimpleITK", "The demons baseline needs SimpleITK, an optional extra: pip install "
        "'napari-cardiac-motion[baseline]' (or pip install SimpleITK), or run the evaluation without --baseline "
        "demons.", error=CardiacMotionError)


def demons_slice(fixed: np.ndarray, moving: np.ndarray, iterations: tuple[int, ...] = (60, 40, 30),
                 levels: tuple[int, ...] = (4, 2, 1), smoothing_sd: float = 1.5) -> np.ndarray:
    """Displacement ``(H, W, 2)`` (dy, dx) in pixels with ``fixed(p) ≈ moving(p + u(p))``."""
    sitk = _sitk()
    f_full = sitk.GetImageFromArray(np.ascontiguousarray(fixed, dtype=np.float32))
    m_full = sitk.GetImageFromArray(np.ascontiguousarray(moving, dtype=np.float32))
    field = None
    for lev, n_it in zip(levels, iterations):
        if lev > 1:
            f = sitk.Shrink(sitk.SmoothingRecursiveGaussian(f_full, 0.5 * lev), [lev, lev])
            m = sitk.Shrink(sitk.SmoothingRecursiveGaussian(m_full, 0.5 * lev), [lev, lev])
        else:
            f, m = f_full, m_full
        demons = sitk.DiffeomorphicDemonsRegistrationFilter()
        demons.SetNumberOfIterations(int(n_it))
        demons.SetStandardDeviations(float(smoothing_sd))
        if field is None:
            field = demons.Execute(f, m)
        else:
            init = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = demons.Execute(f, m, init)
    if field.GetSize() != f_full.GetSize() or field.GetSpacing() != f_full.GetSpacing():
        field = sitk.Resample(field, f_full, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
    u = sitk.GetArrayFromImage(field)  # (H, W, 2) components (x, y) in physical units = pixels here
    return np.stack([u[..., 1], u[..., 0]], -1).astype(np.float32)


def warp_labels(labels: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``out(p) = labels(p + flow(p))`` by nearest neighbour, per slice (the package's one warp,
    :func:`~napari_cardiac_motion.model.transformer.warp_array`; border voxels repeat outside).

    Args:
        labels: ``(Z, Y, X)`` uint8; flow: ``(Z, Y, X, 2)`` (dy, dx) pixels.
    """
    from ..model.transformer import warp_array

    out = warp_array(np.asarray(labels)[:, None], flow, mode="nearest")[:, 0]
    return np.rint(out).astype(labels.dtype)


def demons_propagate(ed_image: np.ndarray, es_image: np.ndarray, ed_labels: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, float]:
    """Register every slice ES (fixed) to ED (moving) and propagate ED labels to ES.

    Args:
        ed_image, es_image: ``(Z, Y, X)`` images (normalised together here, as the model does);
        ed_labels: ``(Z, Y, X)`` uint8.
    Returns:
        ``(propagated labels (Z, Y, X), flow (Z, Y, X, 2) (dy, dx), seconds)``; seconds cover the
        registration and the warping (not the file reading).
    """
    _sitk()
    t0 = time.perf_counter()
    both = normalize_intensity(np.stack([ed_image, es_image]))
    flow = np.stack([demons_slice(both[1, z], both[0, z]) for z in range(both.shape[1])])
    prop = warp_labels(np.asarray(ed_labels, dtype=np.uint8), flow)
    return prop, flow, time.perf_counter() - t0
