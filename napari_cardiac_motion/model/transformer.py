"""Spatial transformer: backward warping of images/label maps by a dense displacement in pixels.

Axis orders: images ``(B, C, H, W)``; flow ``(B, 2, H, W)`` with channels ``(dy, dx)`` in pixels.
``warp(img, u)(p) = img(p + u(p))`` (bilinear, border padding), so with the product's convention
``frame_t(p) ≈ frame_ED(p + u_t(p))`` we have ``warp(frame_ED, u_t) ≈ frame_t``.

Pixel ``i`` of an axis of length ``n`` sits at normalised coordinate ``2 i / (n - 1) - 1``, which is
``grid_sample``'s convention with ``align_corners=True``: both are used together here (the public
PyTorch port mixed them and shifted every warp by half a pixel).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _identity_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gy, gx), dim=0)  # (2, H, W) pixel coordinates (y, x)


def warp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample ``image`` at ``p + flow(p)``.

    Args:
        image: ``(B, C, H, W)``.
        flow: ``(B, 2, H, W)`` displacement ``(dy, dx)`` in pixels.
        mode: ``"bilinear"`` or ``"nearest"`` (nearest for hard label maps).
    Returns:
        ``(B, C, H, W)`` warped image.
    """
    if flow.shape[1] != 2 or flow.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"flow {tuple(flow.shape)} does not match image {tuple(image.shape)}")
    b, _, h, w = image.shape
    coords = _identity_grid(h, w, flow.device, flow.dtype).unsqueeze(0) + flow  # (B, 2, H, W)
    ny = 2.0 * coords[:, 0] / max(h - 1, 1) - 1.0
    nx = 2.0 * coords[:, 1] / max(w - 1, 1) - 1.0
    grid = torch.stack((nx, ny), dim=-1)  # grid_sample wants (x, y) last
    return F.grid_sample(image, grid.to(image.dtype), mode=mode, padding_mode="border", align_corners=True)


def warp_array(image, flow, mode: str = "bilinear"):
    """NumPy front-end of :func:`warp` (the one warp of the package): ``out(p) = image(p + flow(p))``.

    Args:
        image: ``(B, C, H, W)`` array, or ``(1, C, H, W)`` to warp one field by B displacements.
        flow: ``(B, H, W, 2)`` displacement ``(dy, dx)`` in pixels, channels last (as stored in
            :attr:`InferenceResult.motion`).
        mode: ``"bilinear"`` or ``"nearest"`` (label maps; border voxels repeat outside the image).
    Returns:
        ``(B, C, H, W)`` float32 array.
    """
    import numpy as np

    disp = np.asarray(flow, dtype=np.float32)
    img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if img.ndim != 4 or disp.ndim != 4 or disp.shape[-1] != 2:
        raise ValueError(f"warp_array needs image (B, C, H, W) and flow (B, H, W, 2); got {img.shape}, {disp.shape}")
    if img.shape[0] == 1 and disp.shape[0] > 1:
        img = img.expand(disp.shape[0], -1, -1, -1).contiguous()
    f = torch.from_numpy(np.ascontiguousarray(disp)).permute(0, 3, 1, 2)
    with torch.no_grad():
        return warp(img, f, mode=mode).numpy()
