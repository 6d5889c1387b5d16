"""Test-time refinement of the network's motion, batched over every slice and frame (no Qt, no napari).

The network's motion (:meth:`~.model.network.JointMotionSegNet.pairwise_flows`) is a good start but
only as exact as a network trained on a few hundred ED/ES pairs. A few gradient steps per cine, on the
model grid and for all slices and frames at once, anchor it to this cine's images and to the model's
own segmentation of every frame:

    E(u) = w_image · MSE(warp(I_ED, u_t), I_t)                         image match (intensities in [0, 1])
         + w_seg   · Σ_c MSE(warp(P_ED,c, u_t), P_t,c)                 the ED segmentation carried to frame t
                                                                      agrees with frame t's (P: soft-max)
         + w_smooth · |∇(u_t − u⁰_t)|²                                 the correction is spatially smooth
         + w_time   · |u_{t−1} − 2 u_t + u_{t+1}|²                     and smooth in time (cycle order)

``u⁰`` is the network's motion. The refinement runs at 1/``stride`` resolution (images and
probabilities average-pooled, motion in pooled pixels) and the correction ``u − u⁰`` is up-sampled
bilinearly onto the model grid (motion is smooth; ``stride²`` fewer samples per step). Optimised with
Adam for ``steps`` steps; the ED frame's motion stays 0. ``closed_cycle`` adds the ED frame again after
the last one to the temporal term (for cines that cover the whole cycle).

Axis orders: images ``(B, T, H, W)``, motion ``(B, T, 2, H, W)`` ``(dy, dx)`` in model pixels,
probabilities ``(B, T, C, H, W)``; frame 0 of every sequence is ED.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .model.transformer import warp


@dataclass
class RefineSettings:
    """Weights and schedule of the refinement (``steps = 0`` turns it off).

    The defaults were chosen on validation data (20 ACDC ED/ES pairs, the Sunnybrook cines SC-HF-I-4 and
    -5 and ACDC patient090's cine; see the model card): 16 steps pay for their ~1 s per cine; a heavier
    segmentation term or more steps add little propagation and move the last frames away from ED."""

    steps: int = 16
    lr: float = 0.25
    w_image: float = 1.0
    w_seg: float = 1.0
    w_smooth: float = 0.02
    w_time: float = 0.1
    stride: int = 2
    closed_cycle: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class _Adam:
    """Adam (Kingma & Ba) on one tensor, written out: ``torch.optim``'s first use in a process imports
    torch's compiler stack (seconds, holding the GIL), which a 1-second refinement should not pay."""

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.k = 0

    @torch.no_grad()
    def step(self) -> None:
        g = self.param.grad
        b1, b2 = self.betas
        self.k += 1
        self.m.mul_(b1).add_(g, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.v / (1 - b2 ** self.k)).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.m, denom, value=-self.lr / (1 - b1 ** self.k))


def pool_probs(probs: torch.Tensor, stride: int) -> torch.Tensor:
    """The refinement's view of soft-max maps ``(N, C, H, W)``: the foreground classes (background,
    class 0, dropped) average-pooled by ``stride`` → ``(N, C − 1, ⌈H/stride⌉, ⌈W/stride⌉)``."""
    p = probs[:, 1:].float()
    k = max(1, int(stride))
    return F.avg_pool2d(p, k, ceil_mode=True) if k > 1 else p


def _per_sequence(x: torch.Tensor, b: int) -> torch.Tensor:
    """Mean of ``x`` over everything but its B sequences, summed over them: each slice's correction is
    the same whether it is refined alone or with others (Adam's step is scale-free, its ε is not)."""
    return x.reshape(b, -1).mean(1).sum()


def _grad_sq(d: torch.Tensor, b: int) -> torch.Tensor:
    """Squared finite differences of ``(B·N, 2, h, w)`` along y and x (per sequence: :func:`_per_sequence`)."""
    dy = (d[..., 1:, :] - d[..., :-1, :]).pow(2)
    dx = (d[..., :, 1:] - d[..., :, :-1]).pow(2)
    return _per_sequence(dy, b) + _per_sequence(dx, b)


def refine_motion(images: torch.Tensor, flows: torch.Tensor, probs: torch.Tensor | None = None,
                  settings: RefineSettings | None = None) -> torch.Tensor:
    """Refine ``flows`` (see the module docstring); returns a new ``(B, T, 2, H, W)`` tensor.

    Args:
        images: ``(B, T, H, W)`` frames in [0, 1] (windowed), frame 0 = ED.
        flows: ``(B, T, 2, H, W)`` initial motion, frame t → frame 0, model pixels.
        probs: ``(B, T, C − 1, ⌈H/stride⌉, ⌈W/stride⌉)``: the model's soft-max per frame through
            :func:`pool_probs` (kept from segmentation, so the maps are pooled once); ``None`` drops the
            segmentation term.
        settings: weights and steps (default :class:`RefineSettings`).
    """
    s = settings or RefineSettings()
    b, t, h, w = images.shape
    if s.steps <= 0 or t < 2:
        return flows
    k = max(1, int(s.stride))
    with torch.inference_mode(False), torch.enable_grad():
        img = images.detach().clone().float().view(b * t, 1, h, w)
        u_full = flows.detach().clone().float()
        if k > 1:  # everything at 1/k resolution: k² fewer samples per step
            img = F.avg_pool2d(img, k, ceil_mode=True)
        hs, ws = img.shape[-2:]
        img = img.view(b, t, hs, ws)
        u0 = u_full[:, 1:].reshape(-1, 2, h, w)
        if k > 1:
            u0 = F.avg_pool2d(u0, k, ceil_mode=True) / k
        n = b * (t - 1)
        src = img[:, :1].expand(-1, t - 1, -1, -1).reshape(n, 1, hs, ws)
        tgt = img[:, 1:].reshape(n, 1, hs, ws)
        weights = [s.w_image]
        if probs is not None and s.w_seg > 0:
            p = probs.detach().clone().float()
            c = p.shape[2]
            if p.shape[-2:] != (hs, ws):
                raise ValueError(f"probs {tuple(p.shape)} are not at the refinement's resolution {(hs, ws)}: "
                                 "use pool_probs")
            src = torch.cat([src, p[:, :1].expand(-1, t - 1, -1, -1, -1).reshape(n, c, hs, ws)], 1)
            tgt = torch.cat([tgt, p[:, 1:].reshape(n, c, hs, ws)], 1)
            weights += [s.w_seg] * c
        weight = torch.tensor(weights, device=img.device).view(1, -1, 1, 1)
        delta = torch.zeros(n, 2, hs, ws, device=img.device, requires_grad=True)
        adam = _Adam(delta, lr=s.lr / k)
        for _ in range(s.steps):
            delta.grad = None
            u = u0 + delta
            loss = _per_sequence((warp(src, u) - tgt).pow(2) * weight, b) * weight.numel()
            if s.w_smooth > 0:
                loss = loss + s.w_smooth * _grad_sq(delta, b)
            if s.w_time > 0 and t > 2:
                ed = torch.zeros(b, 1, 2, hs, ws, device=u.device)  # u_ED = 0
                seq = torch.cat([ed, u.view(b, t - 1, 2, hs, ws)], 1)
                if s.closed_cycle:  # the frame after the last is ED again
                    seq = torch.cat([seq, seq[:, :1]], 1)
                loss = loss + s.w_time * _per_sequence((seq[:, 2:] - 2 * seq[:, 1:-1] + seq[:, :-2]).pow(2), b)
            loss.backward()
            adam.step()
        with torch.no_grad():
            d = delta.detach()
            if k > 1:
                d = F.interpolate(d * k, size=(h, w), mode="bilinear", align_corners=False)
            out = (u_full[:, 1:].reshape(-1, 2, h, w) + d).view(b, t - 1, 2, h, w)
    return torch.cat([flows[:, :1].float(), out.to(flows.device)], 1)
