"""Mean teacher (Tarvainen & Valpola 2017; for echo/cine video segmentation Wu et al., MedIA 2022).

An exponential moving average of a student network's weights whose segmentation of *unlabelled*
frames, seen under a different perturbation, supervises the student (consistency). No Qt.
"""

from __future__ import annotations

import copy

import torch

from .network import JointMotionSegNet


class MeanTeacher:
    """EMA copy of ``student``: ``θ_teacher ← decay·θ_teacher + (1 − decay)·θ_student`` after each step
    (BatchNorm statistics copied). The teacher never receives gradients and stays in eval mode."""

    def __init__(self, student: JointMotionSegNet, decay: float = 0.99):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"mean-teacher decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(student).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: JointMotionSegNet) -> None:
        """One EMA step towards the student's current weights."""
        for pt, ps in zip(self.model.parameters(), student.parameters()):
            pt.mul_(self.decay).add_(ps.detach(), alpha=1.0 - self.decay)
        for bt, bs in zip(self.model.buffers(), student.buffers()):
            bt.copy_(bs)

    @torch.no_grad()
    def segment(self, frames: torch.Tensor, noise: float = 0.0, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        """Teacher logits ``(N, C, H, W)`` of frames ``(N, H, W)`` (normalised intensities), with additive
        Gaussian noise of standard deviation ``noise`` as the teacher's own perturbation."""
        x = frames.float()
        if noise > 0:
            x = x + noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.model.segment(x.unsqueeze(1)).float()
