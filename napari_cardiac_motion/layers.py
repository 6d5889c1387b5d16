"""Layer data for napari from a prediction (pure numpy: no napari, no Qt).

* :func:`segmentation_layer_data` — a napari ``LayerDataTuple`` for the ``segmentation`` Labels layer
  (fixed colours and named classes, via ``features``, from the model's
  :class:`~.model_description.ModelDescription`; today's MR classes by default).
* :func:`motion_vectors` — arrows for the ``motion`` Vectors layer: napari Vectors data ``(N, 2, 4)``
  (start point, projection) in ``(t, z, y, x)`` *data* coordinates of the image (the layer gets the
  image's scale/translate), with zero ``t``/``z`` components of the projection, so an arrow is drawn on
  the frame and slice where it starts.

Motion convention (:mod:`.conventions`): ``u_t`` (``(dy, dx)`` voxels) maps frame t to ED,
``frame_t(p) ≈ frame_ED(p + u_t(p))``: the tissue at ``p`` in frame t was at ``p + u_t(p)`` at ED.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .conventions import SEGMENTATION_LAYER
from .model_description import MR_DEFAULT, ModelDescription

ArrowMode = Literal["from_ed", "frame_to_frame"]
ARROW_MODES: dict[str, str] = {"from_ed": "from ED", "frame_to_frame": "frame to frame"}

#: spacing (mm) of the motion arrows' grid: every 4th pixel of a 1.5 mm MR cine, every 19th of a 0.308 mm echo clip
ARROW_SPACING_MM = 6.0


#: arrows across the larger side of a frame whose pixel size is unknown (a video)
ARROWS_ACROSS_UNKNOWN = 40


def arrow_step(pixel_mm_yx, frame_yx=None) -> int:
    """Grid step (input pixels) of the motion arrows for in-plane pixels of ``pixel_mm_yx`` (mm, y then x):
    about :data:`ARROW_SPACING_MM` apart whatever the pixel size (a step fixed in pixels drew a 0.3 mm echo
    clip's arrows 25 times as densely as an MR cine's). ``pixel_mm_yx`` None (the image has no pixel size):
    about :data:`ARROWS_ACROSS_UNKNOWN` arrows across the larger side of ``frame_yx``, at least every 4th pixel."""
    if pixel_mm_yx is None:
        return max(4, int(round(max(int(n) for n in frame_yx) / ARROWS_ACROSS_UNKNOWN))) if frame_yx else 4
    px = [float(p) for p in pixel_mm_yx if np.isfinite(float(p)) and float(p) > 0]
    return max(1, int(round(ARROW_SPACING_MM / (sum(px) / len(px))))) if px else 4


def cine_arrow_step(cine) -> int:
    """:func:`arrow_step` of a :class:`~.cine.Cine`: from its pixel size, or its frame size when it has none."""
    return arrow_step(cine.spacing[-2:] if cine.spacing_known else None, np.shape(cine.data)[-2:])


def label_colormap_dict(description: ModelDescription | None = None
                        ) -> dict[int | None, tuple[float, float, float, float]]:
    """``{label: RGBA}`` for napari's ``DirectLabelColormap`` (a plain dict is accepted as ``colormap``).

    Colours of ``description``'s classes (default: today's MR model).
    """
    return (description or MR_DEFAULT).colors()


def label_features(description: ModelDescription | None = None) -> dict[str, list]:
    """The Labels layer's ``features``: ``index`` (label value) and ``name`` of every class, background first."""
    names = (description or MR_DEFAULT).names()
    return {"index": list(names), "name": list(names.values())}


def segmentation_layer_data(
    labels: np.ndarray,
    scale: tuple[float, ...] | None = None,
    translate: tuple[float, ...] | None = None,
    metadata: dict[str, Any] | None = None,
    name: str = SEGMENTATION_LAYER,
    description: ModelDescription | None = None,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """``(data, kwargs, "labels")`` for the segmentation Labels layer.

    Args:
        labels: ``(T, Z, Y, X)`` label array (cast to uint8 without copying when already uint8).
        scale, translate: the image layer's, so the labels overlay it.
        metadata: e.g. ``ed_frame``, ``es_frame``, ``model``, ``source_layer``.
        description: what the model segments (class names and colours); default: today's MR model.
    """
    data = np.asarray(labels)
    if data.dtype != np.uint8:
        data = data.astype(np.uint8)
    kwargs: dict[str, Any] = {
        "name": name,
        "colormap": label_colormap_dict(description),
        "features": label_features(description),
        "metadata": dict(metadata or {}),
        "opacity": 0.5,
    }
    if scale is not None:
        kwargs["scale"] = tuple(float(s) for s in scale)
    if translate is not None:
        kwargs["translate"] = tuple(float(s) for s in translate)
    return data, kwargs, "labels"


def dilate_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of the last two axes by a disc of ``radius`` pixels (numpy only)."""
    mask = np.asarray(mask, dtype=bool)
    r = int(radius)
    if r <= 0:
        return mask.copy()
    h, w = mask.shape[-2:]
    pad = [(0, 0)] * (mask.ndim - 2) + [(r, r), (r, r)]
    padded = np.pad(mask, pad)
    out = np.zeros_like(mask)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= r * r:
                out |= padded[..., r + dy: r + dy + h, r + dx: r + dx + w]
    return out


def sample_bilinear(field: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sample a ``(Y, X, C)`` field at float positions ``(y, x)`` bilinearly (border clamped) → ``(N, C)``."""
    h, w = field.shape[:2]
    y = np.clip(np.asarray(y, dtype=np.float64), 0, h - 1)
    x = np.clip(np.asarray(x, dtype=np.float64), 0, w - 1)
    y0 = np.minimum(np.floor(y).astype(np.intp), max(h - 2, 0))
    x0 = np.minimum(np.floor(x).astype(np.intp), max(w - 2, 0))
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    fy = (y - y0)[:, None]
    fx = (x - x0)[:, None]
    return ((1 - fy) * (1 - fx) * field[y0, x0] + (1 - fy) * fx * field[y0, x1]
            + fy * (1 - fx) * field[y1, x0] + fy * fx * field[y1, x1])


def previous_positions(motion: np.ndarray, q: np.ndarray, t_idx: np.ndarray, z_idx: np.ndarray,
                       iterations: int = 2) -> np.ndarray:
    """Where the ED points ``q`` ``(N, 2)`` ``(y, x)`` voxels sat at the frame before ``t_idx`` (of slice
    ``z_idx``): ``p'`` with ``p' + u_{t-1}(p') = q``, by the fixed-point iteration
    ``p'_{k+1} = q - u_{t-1}(p'_k)`` from ``p'_0 = q`` (``iterations`` ≥ 1; frame 0's previous frame is
    the last). ``motion`` is ``(T, Z, Y, X, 2)`` ``(dy, dx)`` voxels, frame t → ED."""
    n_t = motion.shape[0]
    prev = np.empty_like(q)
    t_prev = (t_idx - 1) % n_t
    for (tp, z) in set(zip(t_prev.tolist(), z_idx.tolist())):
        sel = (t_prev == tp) & (z_idx == z)
        field = motion[tp, z].astype(np.float64)
        qq = q[sel]
        pp = qq.copy()
        for _ in range(max(int(iterations), 1)):
            pp = qq - sample_bilinear(field, pp[:, 0], pp[:, 1])
        prev[sel] = pp
    return prev


def motion_vectors(
    motion: np.ndarray,
    labels: np.ndarray,
    step: int = 4,
    mode: ArrowMode = "from_ed",
    dilate: int = 3,
    min_magnitude: float = 0.0,
    fixed_point_iterations: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Arrows on a subsampled grid inside the heart, per frame and slice.

    Grid points ``p`` lie every ``step`` pixels (offset ``step // 2``) where ``labels[t, z] > 0``
    dilated by ``dilate`` pixels (the heart at that frame plus a margin).

    Modes (``u_t`` = ``motion[t, z]``, positions ``(y, x)`` in voxels):

    * ``"from_ed"``: from where the tissue was at ED, ``q = p + u_t(p)``, to where it is now, ``p``:
      start ``p + u_t(p)``, projection ``-u_t(p)``. (At the ED frame ``u = 0``: zero-length arrows.)
    * ``"frame_to_frame"``: from where the tissue was at frame ``t-1`` to ``p``. The tissue at ``p``
      sat at the ED position ``q = p + u_t(p)``; at frame ``t-1`` that ED point sat at ``p'`` with
      ``p' + u_{t-1}(p') = q``. This is solved by the fixed-point iteration
      ``p'_0 = q``, ``p'_{k+1} = q - u_{t-1}(p'_k)`` (``u_{t-1}`` sampled bilinearly); one iteration
      is the approximation ``p' ≈ q - u_{t-1}(q)`` (exact where ``u_{t-1}`` is locally constant), more
      iterations converge for smooth, small-gradient motion. Arrow: start ``p'``, projection ``p - p'``.
      Frame ``t-1`` of frame 0 is the last frame (the cine is one cardiac cycle).

    Args:
        motion: ``(T, Z, Y, X, 2)`` ``(dy, dx)`` voxels, frame t → ED.
        labels: ``(T, Z, Y, X)``; background 0.
        step: grid spacing in pixels (keeps the count to thousands per frame).
        min_magnitude: arrows shorter than this (voxels) are dropped (e.g. the ED frame's zeros).
        fixed_point_iterations: iterations of the ``frame_to_frame`` inversion (≥ 1).

    Returns:
        ``vectors`` ``(N, 2, 4)`` float32 — ``[:, 0]`` start ``(t, z, y, x)``, ``[:, 1]`` projection
        ``(0, 0, dy, dx)``; and ``magnitudes`` ``(N,)`` float32, the arrow length in voxels.
    """
    motion = np.asarray(motion)
    labels = np.asarray(labels)
    if motion.ndim != 5 or motion.shape[-1] != 2:
        raise ValueError(f"motion must be (T, Z, Y, X, 2); got shape {motion.shape}")
    if labels.shape != motion.shape[:4]:
        raise ValueError(f"labels shape {labels.shape} does not match motion {motion.shape[:4]}")
    if mode not in ARROW_MODES:
        raise ValueError(f"unknown arrow mode {mode!r}; choose one of {list(ARROW_MODES)}")
    step = max(int(step), 1)
    n_t, n_z, h, w = labels.shape
    off = step // 2
    gy, gx = np.mgrid[off:h:step, off:w:step]
    # heart mask sampled at the grid only (dilating the full-resolution mask first)
    mask = dilate_mask(labels > 0, dilate)[:, :, off:h:step, off:w:step]  # (T, Z, gh, gw)
    t_idx, z_idx, iy, ix = np.nonzero(mask)
    if t_idx.size == 0:
        return np.zeros((0, 2, 4), np.float32), np.zeros((0,), np.float32)
    py = gy[iy, ix].astype(np.float64)
    px = gx[iy, ix].astype(np.float64)
    u = motion[t_idx, z_idx, py.astype(np.intp), px.astype(np.intp)].astype(np.float64)  # (N, 2)
    p = np.stack([py, px], axis=1)
    if mode == "from_ed":
        start = p + u
        proj = -u
    else:
        prev = previous_positions(motion, p + u, t_idx, z_idx, fixed_point_iterations)
        start = prev
        proj = p - prev
    mags = np.hypot(proj[:, 0], proj[:, 1])
    keep = mags >= float(min_magnitude) if min_magnitude > 0 else np.ones(mags.shape, bool)
    n = int(keep.sum())
    vectors = np.zeros((n, 2, 4), np.float32)
    vectors[:, 0, 0] = t_idx[keep]
    vectors[:, 0, 1] = z_idx[keep]
    vectors[:, 0, 2:] = start[keep]
    vectors[:, 1, 2:] = proj[keep]
    return vectors, mags[keep].astype(np.float32)
