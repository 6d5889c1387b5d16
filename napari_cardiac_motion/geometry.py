"""The one geometry step between a scan's pixel grid and the model's (no Qt, no napari).

The network works at a fixed in-plane pixel size (``JointConfig.pixel_mm``, stored in every
checkpoint) on a rectangular *region* of each short-axis slice that holds the heart. Inference,
training, fine-tuning and evaluation all go through :class:`Region` and the two samplers here, so a
scan with 0.7 mm or 2 mm pixels, anisotropic pixels (dy ≠ dx), or the heart anywhere in a large field
of view is seen by the network the same way.

Coordinates: ``(y, x)`` are array indices of an input slice (axes ``Y``, ``X``); ``(j, i)`` are array
indices on the region's model grid. They are related exactly by::

    y = origin_y + j * step_y        x = origin_x + i * step_x

with ``step = pixel_mm / spacing`` (input pixels per model pixel). Displacements convert by the same
steps: ``u_input = u_model * step`` per component ``(dy, dx)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: smallest region side (mm): holds an adult heart (LV + RV, ~70–130 mm across) with margin
REGION_MIN_MM = 168.0
#: smallest region side in model pixels at the default 1.5 mm pixel size
DEFAULT_REGION_MIN = 112
#: margin added around the located heart on every side (mm)
HEART_MARGIN_MM = 18.0


@dataclass(frozen=True)
class Region:
    """A model-grid region of an input slice (same for every frame and slice of a cine).

    Attributes:
        origin: input ``(y, x)`` of model pixel ``(0, 0)`` (input pixel units, may be fractional or
            outside the image).
        step: input pixels per model pixel ``(step_y, step_x)``.
        size: model grid ``(H, W)``.
        input_shape: input slice ``(Y, X)``.
    """

    origin: tuple[float, float]
    step: tuple[float, float]
    size: tuple[int, int]
    input_shape: tuple[int, int]

    def input_box(self) -> tuple[int, int, int, int]:
        """Input pixels the region covers, ``(y0, y1, x0, x1)`` half-open, clipped to the image."""
        box = []
        for o, s, n, lim in zip(self.origin, self.step, self.size, self.input_shape):
            lo = max(int(math.ceil(o - 1e-6)), 0)
            hi = min(int(math.floor(o + (n - 1) * s + 1e-6)) + 1, lim)
            box += [lo, max(hi, lo)]
        return box[0], box[1], box[2], box[3]

    def covers_whole_slice(self) -> bool:
        y0, y1, x0, x1 = self.input_box()
        return (y0, x0) == (0, 0) and (y1, x1) == tuple(self.input_shape)

    def to_dict(self, spacing_yx: Sequence[float] | None = None) -> dict[str, Any]:
        """JSON description (``result.json``): the input box processed and the model grid."""
        y0, y1, x0, x1 = self.input_box()
        d: dict[str, Any] = {
            "input_box_yx": [y0, y1, x0, x1],
            "input_shape_yx": list(self.input_shape),
            "whole_slice": self.covers_whole_slice(),
            "model_grid_hw": list(self.size),
            "input_pixels_per_model_pixel_yx": [round(float(s), 6) for s in self.step],
            "origin_yx": [round(float(o), 4) for o in self.origin],
        }
        if spacing_yx is not None:
            d["model_pixel_mm_yx"] = [round(float(s) * float(p), 6) for s, p in zip(self.step, spacing_yx)]
        return d


def model_step(spacing_yx: Sequence[float] | None, pixel_mm: float | None) -> tuple[float, float]:
    """Input pixels per model pixel along (y, x); ``(1, 1)`` when either size is unknown."""
    if spacing_yx is None or pixel_mm is None or pixel_mm <= 0:
        return 1.0, 1.0
    sy, sx = (float(s) for s in spacing_yx)
    if not (sy > 0 and sx > 0 and math.isfinite(sy) and math.isfinite(sx)):
        return 1.0, 1.0
    return float(pixel_mm) / sy, float(pixel_mm) / sx


def whole_field_region(input_shape: Sequence[int], step: Sequence[float], multiple: int = 1) -> Region:
    """A region covering the whole slice (padded on the far side to a multiple of ``multiple``)."""
    size = []
    for n, s in zip(input_shape, step):
        m = int(math.floor((n - 1) / s + 1e-6)) + 1
        size.append(int(math.ceil(m / multiple) * multiple))
    return Region((0.0, 0.0), (float(step[0]), float(step[1])), (size[0], size[1]),
                  (int(input_shape[0]), int(input_shape[1])))


def region_around(center_yx: Sequence[float], size: Sequence[int], step: Sequence[float],
                  input_shape: Sequence[int]) -> Region:
    """A ``size`` (model pixels) region centred on input ``center_yx``, moved inside the image when it
    fits there (a region larger than the field is centred on the field)."""
    origin = []
    for c, n, s, lim in zip(center_yx, size, step, input_shape):
        span = (n - 1) * s  # input pixels from first to last model pixel centre
        o = float(c) - span / 2.0
        if span <= lim - 1:
            o = min(max(o, 0.0), (lim - 1) - span)
        else:
            o = (lim - 1) / 2.0 - span / 2.0
        origin.append(o)
    return Region((origin[0], origin[1]), (float(step[0]), float(step[1])), (int(size[0]), int(size[1])),
                  (int(input_shape[0]), int(input_shape[1])))


def region_for_heart(box_yx: Sequence[float] | None, step: Sequence[float], input_shape: Sequence[int],
                     pixel_mm: float, min_size: int = DEFAULT_REGION_MIN, multiple: int = 16,
                     margin_mm: float = HEART_MARGIN_MM) -> Region:
    """The region the full model runs on: the heart's input box ``(y0, y1, x0, x1)`` plus a margin,
    at least ``min_size`` model pixels a side, rounded up to ``multiple``; never larger than needed to
    cover the whole field. ``box_yx=None`` (heart not found) gives the whole field."""
    full = whole_field_region(input_shape, step, multiple)
    if box_yx is None:
        return full
    y0, y1, x0, x1 = (float(v) for v in box_yx)
    margin_px = margin_mm / pixel_mm
    size = []
    for lo, hi, s, full_n in zip((y0, x0), (y1, x1), step, full.size):
        need = (hi - lo) / s + 2 * margin_px
        n = int(math.ceil(max(need, min_size) / multiple) * multiple)
        size.append(min(n, full_n))
    if tuple(size) == tuple(full.size):
        return full
    return region_around(((y0 + y1) / 2.0, (x0 + x1) / 2.0), size, step, input_shape)


# --------------------------------------------------------------------------------------------------
# sampling between the grids (torch; any device)

def _norm(coord: torch.Tensor, n: int) -> torch.Tensor:
    """Pixel coordinate → grid_sample's normalised coordinate (``align_corners=True``)."""
    return 2.0 * coord / max(n - 1, 1) - 1.0


def antialias_sigma(step: Sequence[float]) -> tuple[float, float]:
    """Blur (input pixels) before sampling input pixels every ``step``: ``(step - 1) / 2`` when
    shrinking, none when enlarging."""
    return max(0.0, (float(step[0]) - 1.0) / 2.0), max(0.0, (float(step[1]) - 1.0) / 2.0)


def _axis_weights(n_in: int, origin: float, step: float, n_out: int, sigma: float) -> np.ndarray:
    """``(n_out, n_in)`` weights of one axis of :func:`to_model`: a Gaussian blur of the input axis
    (``sigma`` input pixels, taps out to ``ceil(3 sigma)``, normalised; mirror padding without
    repeating the edge pixel, or replicate padding when the axis is shorter than the kernel's radius;
    none below sigma 0.2) followed by linear interpolation at ``origin + j * step`` (input pixels;
    ``grid_sample``'s ``align_corners=True`` convention, neighbours outside the input count as 0).
    Separable, so :func:`to_model` applies it as two small matrix products, 5× faster on the CPU than a
    blur of the whole input followed by ``grid_sample``."""
    pos = float(origin) + float(step) * np.arange(n_out, dtype=np.float64)
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo
    rows = np.arange(n_out)
    if sigma < 0.2:
        r, taps = 0, np.ones(1)
    else:
        r = max(1, int(math.ceil(3 * sigma)))
        taps = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        taps /= taps.sum()
    w = np.zeros((n_out, n_in))
    for idx, wt in ((lo, 1.0 - frac), (lo + 1, frac)):  # the two interpolation neighbours
        ok = (idx >= 0) & (idx < n_in)
        for d, k in zip(range(-r, r + 1), taps):  # each spread over the blur's taps
            j = idx[ok] + d
            if n_in > r:  # mirror (the edge pixel not repeated), as F.pad(mode="reflect")
                j = np.where(j < 0, -j, j)
                j = np.where(j > n_in - 1, 2 * (n_in - 1) - j, j)
            else:  # replicate
                j = np.clip(j, 0, n_in - 1)
            np.add.at(w, (rows[ok], j), wt[ok] * k)
    return w


def _model_grid(region: Region, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    (oy, ox), (sy, sx), (h, w), (ny, nx) = region.origin, region.step, region.size, region.input_shape
    ys = oy + sy * torch.arange(h, device=device, dtype=torch.float64)
    xs = ox + sx * torch.arange(w, device=device, dtype=torch.float64)
    gy, gx = torch.meshgrid(_norm(ys, ny), _norm(xs, nx), indexing="ij")
    return torch.stack((gx, gy), -1).to(dtype).unsqueeze(0)  # (1, H, W, 2) as (x, y)


def to_model(images: torch.Tensor, region: Region, mode: str = "bilinear", antialias: bool = True,
             fill: float = 0.0) -> torch.Tensor:
    """Resample input slices ``(N, C, Y, X)`` onto the region's model grid → ``(N, C, H, W)``.

    Bilinear (or ``"nearest"`` for label maps, which are never blurred); pixels outside the input
    field get ``fill``. When the model grid is coarser than the input (``step`` > 1.4), a Gaussian blur of
    ``(step - 1) / 2`` input pixels comes first against aliasing (``antialias``); blur and sampling are
    then applied together as two matrix products (:func:`_axis_weights`) in float32 (outside autocast).
    """
    if tuple(images.shape[-2:]) != tuple(region.input_shape):
        raise ValueError(f"images {tuple(images.shape)} do not match region input {region.input_shape}")
    x = images if images.is_floating_point() else images.float()
    sigma = antialias_sigma(region.step) if mode == "bilinear" and antialias else (0.0, 0.0)
    if max(sigma) >= 0.2:  # shrinking: blur + sample as two small matrix products (separable, exact)
        (ny, nx), (oy, ox), (sy, sx), (h, w) = region.input_shape, region.origin, region.step, region.size
        wy = torch.from_numpy(_axis_weights(ny, oy, sy, h, sigma[0])).to(device=x.device, dtype=x.dtype)
        wx = torch.from_numpy(_axis_weights(nx, ox, sx, w, sigma[1])).to(device=x.device, dtype=x.dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = torch.matmul(torch.matmul(wy, x - fill if fill != 0.0 else x), wx.T)
        return out + fill if fill != 0.0 else out
    grid = _model_grid(region, x.device, x.dtype).expand(x.shape[0], -1, -1, -1)
    if fill != 0.0:
        out = F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=True) + fill
    else:
        out = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out


def to_input(values: torch.Tensor, region: Region, mode: str = "bilinear") -> torch.Tensor:
    """Resample model-grid maps ``(N, C, H, W)`` back onto the input pixels of ``region.input_box()``
    → ``(N, C, y1 - y0, x1 - x0)`` (bilinear; border values at the region's rim)."""
    if tuple(values.shape[-2:]) != tuple(region.size):
        raise ValueError(f"values {tuple(values.shape)} do not match the region's grid {region.size}")
    y0, y1, x0, x1 = region.input_box()
    (oy, ox), (sy, sx), (h, w) = region.origin, region.step, region.size
    dev = values.device
    js = (torch.arange(y0, y1, device=dev, dtype=torch.float64) - oy) / sy
    is_ = (torch.arange(x0, x1, device=dev, dtype=torch.float64) - ox) / sx
    gy, gx = torch.meshgrid(_norm(js, h), _norm(is_, w), indexing="ij")
    grid = torch.stack((gx, gy), -1).to(values.dtype).unsqueeze(0).expand(values.shape[0], -1, -1, -1)
    return F.grid_sample(values, grid, mode=mode, padding_mode="border", align_corners=True)


def flow_to_input(flow_model: torch.Tensor, region: Region) -> torch.Tensor:
    """Model-grid displacements ``(N, 2, H, W)`` ``(dy, dx)`` in model pixels → input pixels of the
    region's input box ``(N, 2, y1 - y0, x1 - x0)`` ``(dy, dx)`` in input pixels."""
    scale = torch.tensor(region.step, device=flow_model.device, dtype=flow_model.dtype).view(1, 2, 1, 1)
    return to_input(flow_model, region) * scale


def labels_on_input(probs: torch.Tensor, region: Region) -> torch.Tensor:
    """Model-grid class scores ``(N, C, H, W)`` → labels ``(N, y1 - y0, x1 - x0)`` uint8 on the region's
    input box: :func:`to_input` then the arg-max over classes (taken on a classes-last copy, about 5×
    faster on the CPU than along the strided class axis)."""
    up = to_input(probs, region)
    return up.permute(0, 2, 3, 1).contiguous().argmax(-1).to(torch.uint8)
