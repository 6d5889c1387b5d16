"""The model's passes over a cine, chunk by chunk (no Qt, no napari): the working state of one
:func:`.inference.predict_cine` call.

A chunk is a few slices with all their frames in cycle order from ED. The encoder and the segmentation
run ``sub`` frames at a time (bounded memory); the motion branch runs with the slices as its batch; the
labels (input grid), the motion (input voxels, frame t → ED) and the quality-control evidence are written
into the runner's full-size arrays. Progress is reported and cancellation checked per slice.

Temporal consistency (``fuse`` > 0): once a slice's motion is known, each frame's soft-max ``P_t`` is
blended with the ED soft-max carried to that frame by the motion, ``(1 − w) P_t + w P_ED(p + u_t(p))``,
before the arg-max (model grid; ``w = fuse``; the ED frame is unchanged since ``u_ED = 0``).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

from .conventions import LV_BLOOD_POOL, cycle_order, ed_es_from_lv_volumes
from .errors import CancelledError
from .geometry import Region, flow_to_input, labels_on_input, to_model
from .model.network import JointMotionSegNet
from .model.transformer import warp
from .motion_refine import RefineSettings, pool_probs, refine_motion
from .preprocessing import apply_window
from .qc import n_evidence, softmax_evidence

ProgressCallback = Callable[[int, int, str], None]
CancelCheck = Callable[[], bool]


def autocast_for(device: torch.device, enabled: bool = True):
    """float16 autocast on CUDA (when ``enabled``); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def check_cancel(cancel: CancelCheck | None) -> None:
    """Raise :class:`CancelledError` when ``cancel()`` says so."""
    if cancel is not None and cancel():
        raise CancelledError("Cancelled by the user; no results were produced.")


def release_freed_memory() -> None:
    """Hand memory freed by the last chunk back to the OS (glibc keeps freed heap pages otherwise, and
    several MB-sized temporaries per chunk add up over a long cine)."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass


def lv_voxels(labels: np.ndarray) -> np.ndarray:
    """LV blood-pool voxel count per frame of ``(T, Z, Y, X)`` labels (frame by frame: no full-size temporary)."""
    return np.array([int(np.count_nonzero(f == LV_BLOOD_POOL)) for f in labels], dtype=np.int64)


def slice_chunks(n_z: int, n_t: int, max_frames: int) -> list[list[int]]:
    """Slices grouped so that a group's frames (slices × T) stay within ``max_frames``."""
    per = max(1, max_frames // max(n_t, 1))
    return [list(range(a, min(a + per, n_z))) for a in range(0, n_z, per)]


class CineRunner:
    """The state of one prediction: the cine ``data`` ``(T, Z, Y, X)``, the model on ``device``, the
    processed ``region``, and the outputs ``labels``, ``motion`` and ``evidence`` (QC, or None)."""

    def __init__(self, data: np.ndarray, model: JointMotionSegNet, device: torch.device, region: Region,
                 window: tuple[float, float], *, n_passes: int, sub: int, tta: bool, motion_mode: str,
                 refine: RefineSettings, qc: bool, qc_pixel: tuple[float, float],
                 progress: ProgressCallback | None, cancel: CancelCheck | None, fuse: float = 0.0):
        self.data, self.model, self.dev, self.region, self.window = data, model, device, region, window
        n_t, n_z, h, w = data.shape
        self.n_t, self.n_z = n_t, n_z
        self.sub, self.tta, self.motion_mode, self.refine = sub, tta, motion_mode, refine
        self.labels = np.zeros((n_t, n_z, h, w), dtype=np.uint8)
        self.motion = np.zeros((n_t, n_z, h, w, 2), dtype=np.float32)
        self.evidence = np.zeros((n_t, n_z, n_evidence(model.config.num_classes)), np.float32) if qc else None
        self.px_mm2 = float(np.prod(region.step) * np.prod(qc_pixel))  # mm² of one model-grid pixel
        self.do_refine = motion_mode == "pairwise" and refine.steps > 0 and n_t > 1
        self.use_seg_term = self.do_refine and refine.w_seg > 0
        #: per slice, the refinement's soft-max maps ``(T, C, h, w)`` in frame order (pooled, float16), kept
        #: from the segmenting pass so that a later motion-only pass does not run the segmentation again
        self.seg_for_refine: dict[int, torch.Tensor] = {}
        #: weight of the ED labels carried by the motion in each frame's labels (module doc; 0: off)
        self.fuse = float(fuse) if n_t > 1 else 0.0
        #: per slice, the model-grid soft-max ``(T, C, h, w)`` in frame order (float16) awaiting its motion
        self.probs_for_fusion: dict[int, torch.Tensor] = {}
        self.n_passes, self.done = n_passes, 0
        self.report = progress or (lambda *_: None)
        self.cancel = cancel

    def run_passes(self, chunks: list[list[int]], ed_frame: int | None,
                   clean: Callable[[np.ndarray], object] | None) -> int:
        """All passes over the slice ``chunks``; returns the ED frame. With ``ed_frame`` one pass segments
        and estimates motion from the same features; without, a first pass segments every frame, the
        labels are cleaned and ED picked (largest LV blood pool), and a second pass estimates the motion.
        ``clean`` (in place, e.g. the anatomy clean-up) runs on the final labels (after the fusion too)."""
        known = ed_frame is not None
        ed = int(ed_frame) if known else 0
        for zs in chunks:  # with ED known: segment and motion from the same features; else segment only
            self.run_chunk(zs, ed, segment=True, estimate_motion=known)
            release_freed_memory()
        if clean is not None:
            clean(self.labels)
        if not known:
            ed = ed_es_from_lv_volumes(lv_voxels(self.labels))[0]
            for zs in chunks:
                self.run_chunk(zs, ed, segment=False, estimate_motion=True)
                release_freed_memory()
            if self.fuse > 0 and clean is not None:  # the fused labels of the motion pass
                clean(self.labels)
        return ed

    def tick(self, what: str, z: int) -> None:
        """Progress after each slice of a pass: ``(slices done, slices in all passes, message)``."""
        self.done += 1
        self.report(self.done, self.n_passes * self.n_z, f"{what}, slice {z + 1}/{self.n_z}")

    def model_frames(self, zs: list[int], order: list[int]) -> torch.Tensor:
        """Frames of slices ``zs`` in ``order``, windowed and re-sampled to the model grid,
        ``(B·T, 1, h, w)`` slice-major (``sub`` frames re-sampled at a time)."""
        pieces = []
        for z in zs:
            for a in range(0, self.n_t, self.sub):
                raw = apply_window(self.data[order[a:a + self.sub], z], self.window)  # (≤sub, Y, X)
                pieces.append(to_model(torch.from_numpy(raw).to(self.dev).unsqueeze(1), self.region))
        return torch.cat(pieces, 0)

    def segment(self, xs: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """Soft-max ``(n, C, h, w)`` of frames ``xs`` (padded) from their features (+ flipped, with TTA)."""
        hh, ww = self.region.size
        probs = self.model.segment_features(feats)[..., :hh, :ww].float().softmax(1)
        if self.tta:  # left-right flip, flipped back onto the same padded grid
            logits_f = torch.flip(self.model.segment_features(self.model.encode(torch.flip(xs, dims=[-1]))),
                                  dims=[-1])
            probs = 0.5 * (probs + logits_f[..., :hh, :ww].float().softmax(1))
        return probs

    def run_chunk(self, zs: list[int], ed: int, segment: bool, estimate_motion: bool) -> None:
        """Frames of slices ``zs`` in cycle order from ``ed``: segment and/or estimate motion."""
        what = "segmenting" if not estimate_motion else ("estimating motion" if not segment else "slice pass")
        order = cycle_order(self.n_t, ed)
        x = self.model_frames(zs, order)
        xp, _ = self.model.pad16(x)
        labs, mfeats, evid = [], [], []
        keep_probs = segment and self.use_seg_term
        # with fusion in this same chunk the labels come from the fused soft-max only (one re-sampling)
        labels_now = not (self.fuse > 0 and estimate_motion and self.n_t > 1)
        for k, z in enumerate(zs):
            check_cancel(self.cancel)
            feats_ed, mf, pooled, full = None, [], [], []
            for a in range(0, self.n_t, self.sub):
                xs = xp[k * self.n_t + a: k * self.n_t + min(a + self.sub, self.n_t)]
                feats = self.model.encode(xs)
                if segment:
                    probs = self.segment(xs, feats)
                    if labels_now:
                        labs.append(labels_on_input(probs, self.region))
                    if self.evidence is not None:
                        evid.append(softmax_evidence(probs) * self.px_mm2)
                    if keep_probs:
                        pooled.append(pool_probs(probs, self.refine.stride).half())
                    if self.fuse > 0:
                        full.append(probs.half())
                if estimate_motion and self.n_t > 1:
                    feats_ed = feats_ed or [f[:1] for f in feats]
                    mf.append(self.model.motion_features(feats_ed, feats))
            if mf:
                mfeats.append(torch.cat(mf, 0))
            to_frames = torch.tensor(order, device=xp.device)
            if pooled:  # cycle order -> frame order
                p = torch.cat(pooled, 0)
                self.seg_for_refine[z] = torch.empty_like(p).index_copy_(0, to_frames, p)
            if full:
                p = torch.cat(full, 0)
                self.probs_for_fusion[z] = torch.empty_like(p).index_copy_(0, to_frames, p)
            self.tick(what, z)
        if segment:
            self.write_labels(zs, order, labs, evid)
        if mfeats:
            self.write_motion(zs, order, ed, x, torch.stack(mfeats, 0))

    def write_labels(self, zs: list[int], order: list[int], labs: list[torch.Tensor], evid: list[torch.Tensor]
                     ) -> None:
        """Labels (input grid, inside the processed box) and QC evidence of slices ``zs`` into the outputs."""
        y0, y1, x0, x1 = self.region.input_box()
        if labs:  # (none when the fusion writes them)
            lab = torch.cat(labs, 0).view(len(zs), self.n_t, y1 - y0, x1 - x0).cpu().numpy()
            for k, z in enumerate(zs):
                self.labels[order, z, y0:y1, x0:x1] = lab[k]
        if evid:
            ev = torch.cat(evid, 0).view(len(zs), self.n_t, -1).cpu().numpy()
            for k, z in enumerate(zs):
                self.evidence[order, z] = ev[k]

    def write_motion(self, zs: list[int], order: list[int], ed: int, x: torch.Tensor, mf: torch.Tensor) -> None:
        """Flows of slices ``zs`` from their motion features ``mf`` ``(B, T, head, h, w)`` (frame 0 =
        (ED, ED)), refined, mapped to input voxels and written into the motion output."""
        hh, ww = self.region.size
        y0, y1, x0, x1 = self.region.input_box()
        b = len(zs)
        flows = (self.model.pairwise_flows(mf, (hh, ww)) if self.motion_mode == "pairwise"
                 else self.model.recurrent_flows(mf, (hh, ww))).float()  # (B, T, 2, H, W)
        del mf
        if self.do_refine:
            p_m = torch.stack([self.seg_for_refine[z][order] for z in zs]) if self.use_seg_term else None
            flows = refine_motion(x.view(b, self.n_t, hh, ww), flows, p_m, self.refine)
        if self.fuse > 0:
            self.fuse_labels(zs, order, flows)
        u = flow_to_input(flows.flatten(0, 1), self.region).view(b, self.n_t, 2, y1 - y0, x1 - x0)
        u = u.permute(0, 1, 3, 4, 2).cpu().numpy()
        for k, z in enumerate(zs):
            self.motion[order, z, y0:y1, x0:x1] = u[k]
        self.motion[ed, :, y0:y1, x0:x1] = 0.0  # u_ED = 0 (outside the box it was never written)

    def fuse_labels(self, zs: list[int], order: list[int], flows: torch.Tensor) -> None:
        """Rewrite the labels of slices ``zs`` from their soft-max blended with the ED soft-max carried by
        ``flows`` ``(B, T, 2, h, w)`` (cycle order, model pixels; module doc)."""
        y0, y1, x0, x1 = self.region.input_box()
        for k, z in enumerate(zs):
            probs = self.probs_for_fusion.pop(z, None)
            if probs is None:
                continue
            p = probs[order].float()  # cycle order: ED first
            flow = flows[k].to(p.dtype).clone()
            flow[0] = 0.0  # u_ED = 0, as in the motion output
            carried = warp(p[:1].expand(len(order), -1, -1, -1), flow)
            fused = (1.0 - self.fuse) * p + self.fuse * carried
            lab = labels_on_input(fused, self.region).cpu().numpy()
            self.labels[order, z, y0:y1, x0:x1] = lab
