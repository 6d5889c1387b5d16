"""Test-time refinement of the motion: it must move a poor start towards the true motion."""

from __future__ import annotations

import numpy as np
import torch

from napari_cardiac_motion.model.transformer import warp
from napari_cardiac_motion.motion_refine import RefineSettings, pool_probs, refine_motion


def _blob_sequence(shifts_yx, size=64):
    """(1, T, H, W) frames: a smooth blob whose frame t is frame 0 shifted by ``shifts_yx[t]`` pixels."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    base = np.exp(-((yy - 30) ** 2 + (xx - 34) ** 2) / (2 * 7.0 ** 2))
    base += 0.5 * np.exp(-((yy - 40) ** 2 + (xx - 20) ** 2) / (2 * 4.0 ** 2))
    frames = []
    for dy, dx in shifts_yx:
        # frame_t(p) = frame_0(p + u) with u = -shift: the content moved by +shift
        flow = torch.tensor([-dy, -dx], dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, size, size)
        frames.append(warp(torch.from_numpy(base)[None, None], flow.contiguous())[0, 0])
    return torch.stack(frames)[None]


def test_refinement_recovers_a_translation_from_zero_motion():
    shifts = [(0, 0), (1.5, -1.0), (3.0, -2.0), (1.5, -1.0)]
    img = _blob_sequence(shifts)
    flows = torch.zeros(1, 4, 2, 64, 64)
    out = refine_motion(img, flows, None, RefineSettings(steps=60, lr=0.3, w_time=0.0))
    assert out.shape == flows.shape
    assert not out[:, 0].any()  # u_ED stays 0
    for t, (dy, dx) in enumerate(shifts[1:], start=1):
        got = out[0, t, :, 22:42, 22:46].mean(dim=(1, 2))
        err = float(torch.hypot(got[0] + dy, got[1] + dx))
        assert err < 0.5, (t, got.tolist(), (-dy, -dx))
    before = (warp(img[:, :1].expand(3, -1, -1, -1).reshape(3, 1, 64, 64), flows[0, 1:]) - img[0, 1:, None]).pow(2).mean()
    after = (warp(img[:, :1].expand(3, -1, -1, -1).reshape(3, 1, 64, 64), out[0, 1:]) - img[0, 1:, None]).pow(2).mean()
    assert after < 0.2 * before


def test_no_steps_returns_the_motion_unchanged():
    img = torch.rand(2, 3, 32, 32)
    flows = torch.randn(2, 3, 2, 32, 32)
    assert refine_motion(img, flows, None, RefineSettings(steps=0)) is flows


def test_refinement_runs_under_inference_mode_with_probabilities():
    """Inference calls it inside ``torch.inference_mode``; the segmentation term uses soft-max maps."""
    img = _blob_sequence([(0, 0), (2.0, 0.0)])
    probs = torch.stack([1 - img, img, torch.zeros_like(img), torch.zeros_like(img)], 2)  # (1, T, 4, H, W)
    probs = pool_probs(probs[0], RefineSettings().stride)[None]  # as inference keeps them
    with torch.inference_mode():
        out = refine_motion(img, torch.zeros(1, 2, 2, 64, 64), probs, RefineSettings(steps=40, lr=0.3))
    got = out[0, 1, :, 22:42, 22:46].mean(dim=(1, 2))
    assert float(got[0]) < -1.2 and abs(float(got[1])) < 0.5, got.tolist()
