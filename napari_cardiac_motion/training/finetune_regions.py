"""Fine-tuning's inputs and geometry (no Qt, no napari): the corrections array checked, the corrected
(frame, slice) pairs, and the region on the model grid the cine is resampled onto — exactly as inference
sees it (:mod:`napari_cardiac_motion.geometry`).

Corrections are ``(T, Z, Y, X)`` uint8 on the image's grid, labels 0–3 with
:data:`~napari_cardiac_motion.conventions.UNLABELLED` (255) for unlabelled voxels.
"""

from __future__ import annotations

import numpy as np
import torch

from ..conventions import UNLABELLED
from ..errors import InputError
from ..geometry import Region, model_step, region_for_heart, to_model
from ..model.network import JointMotionSegNet
from ..preprocessing import apply_window, intensity_window


def validate_corrections(corrections: np.ndarray, shape: tuple[int, ...],
                         classes: dict[int, str] | None = None) -> np.ndarray:
    """Check a corrections array against the image shape ``(T, Z, Y, X)``; returns it as uint8
    (no copy when it already is). ``classes`` ``{value: name}`` are the model's foreground labels (default:
    the MR ones, 1 LV, 2 myocardium, 3 RV)."""
    corr = np.asarray(corrections)
    if corr.shape != tuple(shape):
        raise InputError(
            f"The corrections have shape {tuple(corr.shape)} (T, Z, Y, X) but the image has shape {tuple(shape)}; "
            "they must be on the image's grid (in a NIfTI file: X×Y×Z×T = "
            f"{'×'.join(str(s) for s in tuple(shape)[::-1])})."
        )
    if corr.size and (corr.min() < 0 or corr.max() > 255):
        raise InputError("Correction labels must be 0–3, with 255 for unlabelled voxels.")
    corr = corr.astype(np.uint8, copy=False)
    classes = classes or {1: "LV", 2: "myocardium", 3: "RV"}
    top = max(classes)
    bad: set[int] = set()
    for frame in corr:  # frame by frame: no cine-sized temporaries
        v = np.unique(frame)
        bad |= {int(x) for x in v if top < x < UNLABELLED}
    if bad:
        names = ", ".join(["background", *(classes[k] for k in sorted(classes))])
        raise InputError(
            f"The corrections contain label values {sorted(bad)}; only 0–{top} "
            f"({names}) and 255 (unlabelled) are allowed."
        )
    return corr


def labelled_mask(corrections: np.ndarray) -> np.ndarray:
    """``(T, Z)`` bool: the (frame, slice) pairs that carry a correction (not all 255)."""
    c = np.asarray(corrections)
    return np.stack([(f != UNLABELLED).reshape(c.shape[1], -1).any(-1) for f in c])


def foreground_box(corrections: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Input-pixel box ``(y0, y1, x0, x1)`` (half-open) of the corrected structures (labels 1–3)."""
    fg = np.zeros(corrections.shape[-2:], bool)
    for t, z in zip(*np.nonzero(mask)):
        sl = corrections[t, z]
        fg |= (sl != UNLABELLED) & (sl > 0)
    if not fg.any():
        return None
    ys, xs = np.nonzero(fg)
    return float(ys.min()), float(ys.max() + 1), float(xs.min()), float(xs.max() + 1)


def finetune_regions(corrections: np.ndarray, mask: np.ndarray, model: JointMotionSegNet,
                     spacing_yx: tuple[float, float] | None, margin: int,
                     whole_frame: bool = False) -> tuple[Region, Region]:
    """``(check, train)`` regions on the model grid: ``check`` is the region inference would run on
    around the corrected structures (:func:`geometry.region_for_heart`, at least the model's
    ``input_size``), or with ``whole_frame`` (echo models) the whole frame as echo inference sees it
    (:func:`..inference.echo_region`); ``train`` is the same grid grown by ``margin`` model pixels on every
    side, so that ``check`` = ``train[margin:-margin, margin:-margin]`` and training crops can be jittered."""
    h, w = corrections.shape[-2:]
    pixel = getattr(model.config, "pixel_mm", None)
    step = model_step(spacing_yx, pixel)
    if whole_frame:
        from ..inference import echo_region

        check = echo_region((h, w), spacing_yx, pixel)
    else:
        box = foreground_box(corrections, mask)
        # larger than inference's minimum (112 at 1.5 mm) on purpose: with 112 the held-out check let a
        # −0.021 LV drop through on ACDC patient071 (benchmarks/finetune_benchmark.py --cases patient071)
        min_size = int(max(model.config.input_size))
        pixel = float(np.mean(step)) if spacing_yx is None or pixel is None else pixel
        check = region_for_heart(box, step, (h, w), pixel_mm=float(pixel), min_size=min_size)
    (oy, ox), (sy, sx), (rh, rw) = check.origin, check.step, check.size
    train = Region((oy - margin * sy, ox - margin * sx), (sy, sx), (rh + 2 * margin, rw + 2 * margin), (h, w))
    return check, train


def sample_region(data: np.ndarray, corrections: np.ndarray, region: Region, device: torch.device
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The cine ``(T, Z, Y, X)`` normalised with the cine's own intensity window (as inference does:
    :func:`preprocessing.intensity_window`) and resampled onto ``region`` like inference
    (:func:`geometry.to_model`), and the corrections resampled by nearest neighbour (outside the image:
    255). Returns float32 and uint8 arrays ``(T, Z, H, W)``; works frame by frame (no normalised copy of
    the whole cine)."""
    window = intensity_window(data)
    n_t, n_z = data.shape[:2]
    image = np.empty((n_t, n_z) + tuple(region.size), np.float32)
    labels = np.empty((n_t, n_z) + tuple(region.size), np.uint8)
    with torch.inference_mode():
        for t in range(n_t):
            x = torch.from_numpy(apply_window(data[t], window)).unsqueeze(1).to(device)
            image[t] = to_model(x, region)[:, 0].cpu().numpy()
            c = torch.from_numpy(corrections[t].astype(np.float32)).unsqueeze(1).to(device)
            labels[t] = to_model(c, region, mode="nearest", fill=float(UNLABELLED))[:, 0].round().cpu().numpy()
    return image, labels
