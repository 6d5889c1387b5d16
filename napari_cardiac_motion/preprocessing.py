"""Intensity normalisation and in-plane crop/pad shared by inference and training (no torch)."""

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


def crop_pad_slices(size_in: tuple[int, int], size_out: tuple[int, int]) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Index pairs for centre crop/pad from ``size_in`` (H, W) to ``size_out``.

    Returns ``(src, dst)`` such that ``out[..., dst[0], dst[1]] = inp[..., src[0], src[1]]`` centres the
    input in the output; the reverse assignment undoes it exactly.
    """
    src, dst = [], []
    for n_in, n_out in zip(size_in, size_out):
        if n_in >= n_out:
            a = (n_in - n_out) // 2
            src.append(slice(a, a + n_out))
            dst.append(slice(0, n_out))
        else:
            a = (n_out - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(a, a + n_in))
    return (src[0], src[1]), (dst[0], dst[1])


def to_network_grid(images: np.ndarray, size: tuple[int, int], fill: float = 0.0) -> np.ndarray:
    """Centre crop/zero-pad the last two axes of ``images`` to ``size``."""
    (sy, sx), (dy, dx) = crop_pad_slices(images.shape[-2:], size)
    out = np.full(images.shape[:-2] + tuple(size), fill, dtype=images.dtype)
    out[..., dy, dx] = images[..., sy, sx]
    return out


def from_network_grid(arr: np.ndarray, size: tuple[int, int], spatial_axes: tuple[int, int] = (-2, -1),
                      fill: float = 0) -> np.ndarray:
    """Inverse of :func:`to_network_grid`: put network-grid ``arr`` back onto an ``size`` (H, W) grid.

    ``spatial_axes`` names the (H, W) axes of ``arr`` (e.g. ``(-3, -2)`` for a trailing vector axis).
    Regions outside the network's field of view get ``fill``.
    """
    ay, ax = (a % arr.ndim for a in spatial_axes)
    net_size = (arr.shape[ay], arr.shape[ax])
    (sy, sx), (dy, dx) = crop_pad_slices(tuple(size), net_size)
    shape = list(arr.shape)
    shape[ay], shape[ax] = size
    out = np.full(shape, fill, dtype=arr.dtype)
    idx_out = [slice(None)] * arr.ndim
    idx_in = [slice(None)] * arr.ndim
    idx_out[ay], idx_out[ax] = sy, sx
    idx_in[ay], idx_in[ax] = dy, dx
    out[tuple(idx_out)] = arr[tuple(idx_in)]
    return out
