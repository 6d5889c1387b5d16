"""Batched augmentation of image sequences and their label codes (torch ``affine_grid``/``grid_sample``).

Every sample of a batch is a sequence ``(T, H, W)`` (source frame first) with label codes ``(T, H, W)``;
one random geometric transform per sample is applied to all its frames and codes alike (so the motion
between the frames is unchanged), and one random intensity transform per sample to all its frames.

Geometric: rotation ±10°, isotropic scale ±15% (covers the in-plane spacing differences between
sites: 1.3–1.8 mm), shift ±10 px, optional flips; "wide" samples zoom out further (up to ×1.5) so the
model also sees full-field slices with the heart off-centre, as at inference (centre crop to 192²).
Acquisition resolution: cases are stored at the model's pixel size (1.5 mm); half the samples are
blurred as if acquired with pixels up to 2.0 mm (down- then up-sampled by 1–1.4×); finer acquisitions
(0.7 mm) reach the model anti-aliased by the geometry step, as at inference.
Intensity (scanner differences): gamma 0.7–1.4, contrast ±10%, brightness ±0.05, a smooth
multiplicative bias field (±20% across the field: coil sensitivity), Gaussian noise σ ≤ 0.02.
Voxels whose codes fall outside the source field become ``IGNORE_INDEX``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..model.losses import IGNORE_INDEX


def crop_centered(arr: np.ndarray, cy: float, cx: float, size: int, fill) -> np.ndarray:
    """Crop the last two axes of ``arr`` to ``size``² centred at (cy, cx), padding with ``fill``."""
    h, w = arr.shape[-2:]
    y0, x0 = int(round(cy)) - size // 2, int(round(cx)) - size // 2
    out = np.full(arr.shape[:-2] + (size, size), fill, dtype=arr.dtype)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + size, h), min(x0 + size, w)
    if sy1 > sy0 and sx1 > sx0:
        out[..., sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = arr[..., sy0:sy1, sx0:sx1]
    return out


def random_affine(n: int, in_size: int, out_size: int, rng: np.random.Generator, wide: np.ndarray | None = None,
                  rot_deg: float = 10.0, scale: float = 0.15, shift_px: float = 10.0, flip: bool = True) -> torch.Tensor:
    """``(n, 2, 3)`` thetas for ``affine_grid`` mapping an ``out_size``² output onto an ``in_size``² input
    with the pixel size kept (up to the random scale)."""
    thetas = np.zeros((n, 2, 3), np.float32)
    for i in range(n):
        a = math.radians(rng.uniform(-rot_deg, rot_deg))
        s = math.exp(rng.uniform(math.log(1 - scale), math.log(1 + scale)))
        if wide is not None and wide[i]:
            s *= rng.uniform(1.0, 1.5)
        fy = -1.0 if (flip and rng.random() < 0.5) else 1.0
        fx = -1.0 if (flip and rng.random() < 0.5) else 1.0
        k = out_size / in_size * s
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], np.float32)
        thetas[i, :, :2] = k * rot @ np.diag([fx, fy])  # theta acts on (x, y)
        thetas[i, :, 2] = rng.uniform(-shift_px, shift_px, 2) * 2.0 / in_size
    return torch.from_numpy(thetas)


def apply_affine(images: torch.Tensor, codes: torch.Tensor, theta: torch.Tensor, out_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``images`` (B, T, H, W) bilinearly and ``codes`` (B, T, H, W) by nearest neighbour."""
    b, t = images.shape[:2]
    grid = F.affine_grid(theta.to(images.device), [b, t, out_size, out_size], align_corners=False)
    img = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    c = F.grid_sample(codes.float() + 1.0, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    c = c.round().long() - 1
    c[c < 0] = IGNORE_INDEX
    return img, c


def random_resolution(images: torch.Tensor, rng: np.random.Generator, max_factor: float = 1.4,
                      prob: float = 0.5) -> torch.Tensor:
    """Blur ``(B, T, H, W)`` images as if acquired with pixels up to ``max_factor``× coarser (down-sample
    by a random factor per sample, then up-sample back bilinearly)."""
    out = images.clone()
    h, w = images.shape[-2:]
    for i in range(images.shape[0]):
        if rng.random() >= prob:
            continue
        f = float(rng.uniform(1.05, max_factor))
        small = F.interpolate(images[i:i + 1], size=(max(8, int(round(h / f))), max(8, int(round(w / f)))),
                              mode="bilinear", align_corners=False, antialias=True)
        out[i:i + 1] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return out


def random_bias_field(images: torch.Tensor, rng: np.random.Generator, strength: float = 0.2) -> torch.Tensor:
    """Multiply ``(B, T, H, W)`` images by a smooth per-sample field ``exp(a·y + b·x + c·y·x + d·(y² + x²))``
    with coordinates in [-1, 1], scaled so the field spans about ±``strength``."""
    b, _, h, w = images.shape
    yy = torch.linspace(-1, 1, h, device=images.device, dtype=images.dtype).view(h, 1)
    xx = torch.linspace(-1, 1, w, device=images.device, dtype=images.dtype).view(1, w)
    basis = torch.stack([yy.expand(h, w), xx.expand(h, w), yy * xx, (yy ** 2 + xx ** 2) - 0.66])  # (4, H, W)
    coef = torch.tensor(rng.uniform(-1, 1, (b, 4)) * strength / 2, dtype=images.dtype, device=images.device)
    field = torch.exp(torch.einsum("bk,khw->bhw", coef, basis)).unsqueeze(1)
    return images * field


def random_intensity(images: torch.Tensor, rng: np.random.Generator, noise: float = 0.02) -> torch.Tensor:
    """Per-sample gamma/contrast/brightness/bias field/noise on ``(B, T, H, W)`` images in [0, 1]."""
    b = images.shape[0]
    gamma = torch.tensor(np.exp(rng.uniform(math.log(0.7), math.log(1.4), b)), dtype=images.dtype,
                         device=images.device).view(b, 1, 1, 1)
    contrast = torch.tensor(rng.uniform(0.9, 1.1, b), dtype=images.dtype, device=images.device).view(b, 1, 1, 1)
    bright = torch.tensor(rng.uniform(-0.05, 0.05, b), dtype=images.dtype, device=images.device).view(b, 1, 1, 1)
    sigma = torch.tensor(rng.uniform(0, noise, b), dtype=images.dtype, device=images.device).view(b, 1, 1, 1)
    gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**31)))
    eps = torch.randn(images.shape, generator=gen).to(images.device, images.dtype)
    out = random_bias_field(images.clamp(0, 1), rng) ** gamma * contrast + bright + sigma * eps
    return out.clamp(0.0, 1.2)


def augment_batch(images: np.ndarray, codes: np.ndarray, out_size: int, rng: np.random.Generator,
                  wide: np.ndarray | None = None, geometric: bool = True, intensity: bool = True,
                  flip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a numpy batch ``images`` (B, T, M, M) / ``codes`` (B, T, M, M) → torch ``(B, T, S, S)``
    float images and int64 codes (S = ``out_size``). Without ``geometric`` the centre is cropped."""
    img = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    cod = torch.from_numpy(np.ascontiguousarray(codes)).long()
    m = img.shape[-1]
    if geometric:
        theta = random_affine(img.shape[0], m, out_size, rng, wide, flip=flip)
    else:
        theta = torch.zeros(img.shape[0], 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = out_size / m
    img, cod = apply_affine(img, cod, theta, out_size)
    if geometric:
        img = random_resolution(img, rng)
    if intensity:
        img = random_intensity(img, rng)
    return img, cod
