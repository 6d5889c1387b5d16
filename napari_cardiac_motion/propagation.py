"""Carry a corrected slice's labels to the other frames of that slice through the estimated motion.

Convention (:mod:`.conventions`): ``u_t`` is the displacement, in voxels ``(dy, dx)``, from frame t to the
ED frame: the tissue at pixel ``p`` of frame t was at ``p + u_t(p)`` at ED, so
``frame_t(p) ≈ frame_ED(p + u_t(p))`` and ``label_t(p) = label_ED(p + u_t(p))``; ``u_ED = 0``.

From a labelled frame ``s`` that is not ED we first need the labels at ED. The map ``p ↦ p + u_s(p)``
goes from frame s to ED; its inverse ``q ↦ q + v_s(q)`` (ED to frame s) satisfies
``v_s(q) = -u_s(q + v_s(q))``, solved by a few fixed-point iterations starting from ``v = -u_s``.
Then ``label_ED(q) = label_s(q + v_s(q))`` and, composing,

    label_t(p) = label_s(p + w(p)),   w(p) = u_t(p) + v_s(p + u_t(p)).

The displacement ``w`` is composed with bilinear sampling and the labels are sampled once, with
nearest-neighbour sampling (labels are never averaged; border voxels are repeated outside the image).
For ``s = ED``, ``v_s = 0`` and this is the plain convention.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .model.transformer import warp_array


def _sample(field: np.ndarray, disp: np.ndarray, mode: str) -> np.ndarray:
    """Sample ``field`` ``(C, Y, X)`` at ``p + disp(p)``; ``disp`` ``(N, Y, X, 2)`` → ``(N, C, Y, X)``."""
    return warp_array(np.asarray(field)[None], disp, mode=mode)


def invert_displacement(u: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Approximate inverse ``v`` of a displacement ``u`` ``(Y, X, 2)``: ``v(q) = -u(q + v(q))``."""
    u = np.asarray(u, dtype=np.float32)
    field = np.moveaxis(u, -1, 0)  # (2, Y, X)
    v = -u.copy()
    for _ in range(iterations):
        v = -np.moveaxis(_sample(field, v[None], "bilinear")[0], 0, -1)
    return v


def propagate_labels(labels_slice: np.ndarray, motion: np.ndarray, source_frame: int) -> np.ndarray:
    """Propagate the labels of one slice at frame ``source_frame`` to every frame of that slice.

    Args:
        labels_slice: ``(Y, X)`` integer labels at frame ``source_frame``.
        motion: ``(T, Y, X, 2)`` displacement ``(dy, dx)`` in voxels from each frame to ED (this slice).
        source_frame: the frame the labels belong to (ED or any other frame).
    Returns:
        ``(T, Y, X)`` labels (same dtype as ``labels_slice``); frame ``source_frame`` is the input.
    """
    lab = np.asarray(labels_slice)
    mot = np.asarray(motion, dtype=np.float32)
    if lab.ndim != 2 or mot.ndim != 4 or mot.shape[-1] != 2 or mot.shape[1:3] != lab.shape:
        raise InputError(
            f"Propagation needs labels (Y, X) and motion (T, Y, X, 2) on the same grid; got labels "
            f"{lab.shape} and motion {mot.shape}."
        )
    n_t = mot.shape[0]
    s = int(source_frame)
    if not 0 <= s < n_t:
        raise InputError(f"Source frame {s} is out of range 0–{n_t - 1}.")
    if np.abs(mot[s]).max() > 0:
        v = invert_displacement(mot[s])  # ED -> frame s
        w = mot + np.moveaxis(_sample(np.moveaxis(v, -1, 0), mot, "bilinear"), 1, -1)
    else:  # the source is the ED frame (u_s = 0)
        w = mot
    out = _sample(lab[None].astype(np.float32), w, "nearest")[:, 0]
    out = np.rint(out).astype(lab.dtype)
    out[s] = lab
    return out
