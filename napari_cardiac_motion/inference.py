"""Run the joint model over a whole cine (no Qt, no napari).

``predict_cine`` takes a ``(T, Z, Y, X)`` cine and returns labels ``(T, Z, Y, X)`` uint8 and motion
``(T, Z, Y, X, 2)`` float32 ``(dy, dx)`` in input voxels, from frame t to the ED frame
(``frame_t(p) ≈ frame_ED(p + u_t(p))``, ``u_ED = 0``).

Geometry (:mod:`.geometry`): every slice is resampled in-plane to the model's pixel size
(``JointConfig.pixel_mm``, from the checkpoint) using the cine's true spacing; a cheap first look
(the segmentation branch on the whole field of a few mid-ventricular slices) finds the heart wherever it
lies; the full model runs on the region that holds it, and labels (soft-max probabilities, bilinear) and
motion (bilinear, rescaled to input voxels) are mapped back exactly onto the input grid. Outside the
region the labels are background and the motion zero; ``InferenceResult.metadata["region"]`` says which
input box was processed (``result.json`` carries it).

Batching: all slices of a chunk of the cine go through the encoder together and the motion recurrence
runs over time with the slices as its batch; results stay on the device until the chunk is done (one
device sync per chunk; a typical cine is one chunk). With a given ED frame one pass segments and
estimates motion from the same features; with ``ed_frame=None`` a first pass segments every frame to
pick ED (largest LV blood pool; ES = smallest) and a second pass estimates the motion. Progress goes to
a callback after every slice; cancellation is checked before every slice.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .cine import Cine, validate_cine_array
from .conventions import LV_BLOOD_POOL, ed_es_from_lv_volumes
from .devices import resolve_device
from .errors import CancelledError, InputError
from .geometry import (DEFAULT_REGION_MIN, REGION_MIN_MM, Region, flow_to_input, model_step, region_for_heart,
                       to_input, to_model, whole_field_region)
from .model.network import JointMotionSegNet
from .motion_refine import RefineSettings, pool_probs, refine_motion
from .postprocess import keep_largest_components
from .preprocessing import apply_window, intensity_window
from .qc import QCResult, assess, n_evidence, softmax_evidence

ProgressCallback = Callable[[int, int, str], None]
CancelCheck = Callable[[], bool]


@dataclass
class InferenceResult:
    """Output of :func:`predict_cine`.

    Attributes:
        labels: ``(T, Z, Y, X)`` uint8 (0 bg, 1 LV, 2 Myo, 3 RV).
        motion: ``(T, Z, Y, X, 2)`` float32, ``(dy, dx)`` input voxels, frame t → ED (0 outside the
            processed region).
        ed_frame, es_frame: frame indices used (ES = smallest predicted LV blood pool).
        lv_volume_voxels: ``(T,)`` predicted LV blood-pool voxel count per frame.
        device: the torch device used.
        seconds: wall time of the prediction.
        metadata: ``region`` (the input box processed, model grid and pixel sizes, how it was found),
            ``tta``, ``largest_component``, ``qc`` (summary of :attr:`qc`).
        qc: per (frame, slice) quality-control scores (:class:`.qc.QCResult`), or None when not asked.
    """

    labels: np.ndarray
    motion: np.ndarray
    ed_frame: int
    es_frame: int
    lv_volume_voxels: np.ndarray
    device: str
    seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)
    qc: QCResult | None = None

    @property
    def frames_per_second(self) -> float:
        n = self.labels.shape[0] * self.labels.shape[1]
        return n / self.seconds if self.seconds > 0 else float("inf")


def _autocast(device: torch.device, enabled: bool = True):
    """float16 autocast on CUDA (when ``enabled``); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _check_cancel(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise CancelledError("Cancelled by the user; no results were produced.")


def cycle_order(n_frames: int, ed_frame: int) -> list[int]:
    """Frame indices in the order the recurrence visits them: ED, ED+1, …, ED-1 (wrapping)."""
    return [(ed_frame + k) % n_frames for k in range(n_frames)]


def locate_heart(image: np.ndarray, model: JointMotionSegNet, step: tuple[float, float], device: torch.device,
                 use_amp: bool = False, window: tuple[float, float] = (0.0, 1.0)
                 ) -> tuple[float, float, float, float] | None:
    """Find the heart in a cine ``(T, Z, Y, X)`` (intensities scaled by ``window``): the segmentation branch on the whole field
    (at the model's pixel size) of up to three mid-ventricular slices at frames 0 and T/2; returns the
    input-pixel box ``(y0, y1, x0, x1)`` of the labelled heart (per slice the LV blood pool most enclosed
    by myocardium, its wall and the RV touching it; union over slices), or None when nothing is found."""
    n_t, n_z = image.shape[:2]
    mid = n_z // 2
    zs = sorted({min(max(z, 0), n_z - 1) for z in (mid - 1, mid, mid + 1)})
    ts = sorted({0, n_t // 2})
    region = whole_field_region(image.shape[-2:], step, multiple=16)
    frames = torch.from_numpy(apply_window(image[np.ix_(ts, zs)].reshape(-1, *image.shape[-2:]), window))
    with torch.inference_mode(), _autocast(device, use_amp):
        x = to_model(frames.to(device).unsqueeze(1), region)
        labels_m = model.segment(x).float().softmax(1)
        labels = to_input(labels_m, region).argmax(1).to(torch.uint8).cpu().numpy()
    y0, y1, x0, x1 = region.input_box()
    boxes = []
    for lab in labels:
        lab = keep_largest_components(lab[None])[0]  # one LV (enclosed by myocardium), its wall, one RV
        if (lab == LV_BLOOD_POOL).sum() < 10:
            continue
        ys, xs = np.nonzero(lab > 0)
        boxes.append((y0 + ys.min(), y0 + ys.max() + 1, x0 + xs.min(), x0 + xs.max() + 1))
    if not boxes:
        return None
    b = np.array(boxes, dtype=np.float64)
    return float(b[:, 0].min()), float(b[:, 1].max()), float(b[:, 2].min()), float(b[:, 3].max())


def plan_region(image: np.ndarray, model: JointMotionSegNet, spacing_yx: tuple[float, float] | None,
                device: torch.device, use_amp: bool = False, window: tuple[float, float] = (0.0, 1.0)
                ) -> tuple[Region, str]:
    """The region the full model runs on (see :mod:`.geometry`) and how it was found
    (``"located"``: around the heart found by :func:`locate_heart`; ``"whole field"``)."""
    step = model_step(spacing_yx, getattr(model.config, "pixel_mm", None))
    pixel_mm = getattr(model.config, "pixel_mm", None)
    region_min = int(math.ceil(REGION_MIN_MM / pixel_mm / 16) * 16) if pixel_mm else DEFAULT_REGION_MIN
    full = whole_field_region(image.shape[-2:], step, multiple=16)
    if max(full.size) <= region_min:
        return full, "whole field"
    box = locate_heart(image, model, step, device, use_amp, window)
    if box is None:
        return full, "whole field (heart not found)"
    pixel = float(model.config.pixel_mm) if spacing_yx is not None else float(np.mean(step))
    region = region_for_heart(box, step, image.shape[-2:], pixel_mm=pixel, min_size=region_min)
    return region, ("whole field" if region.covers_whole_slice() and region.size == full.size else "located")


def _release_freed_memory() -> None:
    """Hand memory freed by the last chunk back to the OS (glibc keeps freed heap pages otherwise, and
    several MB-sized temporaries per chunk add up over a long cine)."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass


def _lv_voxels(labels: np.ndarray) -> np.ndarray:
    """LV blood-pool voxel count per frame of ``(T, Z, Y, X)`` labels (frame by frame: no full-size temporary)."""
    return np.array([int(np.count_nonzero(f == LV_BLOOD_POOL)) for f in labels], dtype=np.int64)


def _chunks(n_z: int, n_t: int, max_frames: int) -> list[list[int]]:
    per = max(1, max_frames // max(n_t, 1))
    return [list(range(a, min(a + per, n_z))) for a in range(0, n_z, per)]


def predict_cine(
    cine: Cine | np.ndarray,
    model: JointMotionSegNet,
    device: str | torch.device = "auto",
    ed_frame: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    batch_size: int | None = None,
    spacing: tuple[float, float, float] | None = None,
    tta: bool = False,
    largest_component: bool = True,
    region: Region | None = None,
    max_sub_frames: int | None = None,
    motion_mode: str = "pairwise",
    refine: RefineSettings | None = None,
    qc: bool = True,
) -> InferenceResult:
    """Segment every frame and slice of a cine and estimate its motion to the ED frame.

    Args:
        cine: a :class:`Cine` (its spacing is used) or a ``(T, Z, Y, X)`` array.
        model: the joint network (moved to ``device``; left in eval mode).
        device: ``auto|cpu|cuda|mps`` (an absent device raises :class:`DeviceError`).
        ed_frame: reference frame index; ``None`` = frame of largest predicted LV blood pool.
        progress: ``progress(done, total, message)`` called after every slice of each pass.
        cancel: returns True to stop; checked before every slice (raises :class:`CancelledError`).
        batch_size: frames per chunk (encoder batch); default 240 on a CPU, 2048 on a GPU.
        spacing: ``(dz, dy, dx)`` mm for an array input (default: a Cine's own spacing; an array
            without it is taken to be at the model's pixel size, i.e. not resampled).
        tta: also segment the left-right flipped frames and average (about 1.5× the time).
        largest_component: clean the labels by anatomy (:func:`.postprocess.keep_largest_components`).
        region: force the processed region (default: found by :func:`plan_region`).
        max_sub_frames: frames per encoder call (default 16 on a CPU, 512 on a GPU; bounds memory).
        motion_mode: ``"pairwise"`` (default: each frame's motion from its own (ED, t) pair, no state
            carried over the cycle) or ``"recurrent"`` (one recurrence over the whole cycle; drifts with
            weights trained on ED/ES pairs; kept for comparison).
        refine: test-time refinement of the motion on the model grid (:mod:`.motion_refine`);
            ``None`` = the default settings, ``RefineSettings(steps=0)`` = off.
        qc: score every (frame, slice) for quality control (:mod:`.qc`; the soft-max evidence is summed
            inside the segmenting pass) into ``result.qc``.
    """
    if motion_mode not in ("pairwise", "recurrent"):
        raise InputError(f"Unknown motion mode '{motion_mode}': use 'pairwise' or 'recurrent'.")
    t0 = time.perf_counter()
    if isinstance(cine, Cine):
        data, spacing = cine.data, cine.spacing if spacing is None else spacing
    else:
        data = validate_cine_array(cine)
    n_t, n_z, h, w = data.shape
    if ed_frame is not None and not (0 <= int(ed_frame) < n_t):
        raise InputError(f"ED frame {ed_frame} is out of range: the cine has frames 0–{n_t - 1}.")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    use_amp = dev.type == "cuda"
    # frames per chunk: at most 240 (CPU) / 2048 (GPU), and at most ~64 MB of input pixels
    max_frames = int(batch_size or min(2048 if dev.type != "cpu" else 240, max(1, (16 << 20) // (h * w))))
    window = intensity_window(data)  # per-cine [1, 99] percentile window, applied chunk by chunk
    spacing_yx = (float(spacing[1]), float(spacing[2])) if spacing is not None else None
    if region is None:
        region, how = plan_region(data, model, spacing_yx, dev, use_amp, window)
    else:
        how = "given"
    y0, y1, x0, x1 = region.input_box()
    report = progress or (lambda *_: None)
    labels = np.zeros((n_t, n_z, h, w), dtype=np.uint8)
    emptied: list[tuple[int, int]] = []  # (frame, slice) pairs the clean-up's valve rule emptied
    motion = np.zeros((n_t, n_z, h, w, 2), dtype=np.float32)
    chunks = _chunks(n_z, n_t, max_frames)
    hh, ww = region.size

    sub = max(1, min(n_t, max_sub_frames or (512 if dev.type != "cpu" else 16)))

    refine = RefineSettings() if refine is None else refine
    do_refine = motion_mode == "pairwise" and refine.steps > 0 and n_t > 1
    use_seg_term = do_refine and refine.w_seg > 0
    #: per slice, the refinement's soft-max maps ``(T, C, h, w)`` in frame order (pooled, float16), kept from
    #: the segmenting pass so that a later motion-only pass does not run the segmentation again
    seg_for_refine: dict[int, torch.Tensor] = {}
    evidence = np.zeros((n_t, n_z, n_evidence(model.config.num_classes)), np.float32) if qc else None
    # QC's pixel size (mm): the cine's, else the model's (an array without spacing is taken to be at it)
    qc_pixel = spacing_yx or (float(getattr(model.config, "pixel_mm", None) or 1.0),) * 2
    px_mm2 = float(np.prod(region.step) * np.prod(qc_pixel))  # mm² of one model-grid pixel
    n_passes = 1 if ed_frame is not None else 2
    done = {"slices": 0}

    def tick(what: str, z: int) -> None:
        """Progress after each slice of a pass: ``(slices done, slices in all passes, message)``."""
        done["slices"] += 1
        report(done["slices"], n_passes * n_z, f"{what}, slice {z + 1}/{n_z}")

    def run_chunk(zs: list[int], ed: int, segment: bool, estimate_motion: bool) -> None:
        """Frames of slices ``zs`` in cycle order from ``ed``: segment and/or estimate motion. The encoder
        and segmentation run ``sub`` frames at a time (bounded memory); the motion recurrence runs over
        time with the slices as its batch. Cancellation is checked and progress reported per slice."""
        what = "segmenting" if not estimate_motion else ("estimating motion" if not segment else "slice pass")
        order = cycle_order(n_t, ed)
        b = len(zs)
        pieces = []  # (B·T, 1, H, W) on the model grid, slice-major, re-sampled `sub` frames at a time
        for z in zs:
            for a in range(0, n_t, sub):
                raw = apply_window(data[order[a:a + sub], z], window)  # (≤sub, Y, X), cycle order
                pieces.append(to_model(torch.from_numpy(raw).to(dev).unsqueeze(1), region))
        x = torch.cat(pieces, 0)
        del pieces
        xp, _ = model.pad16(x)
        probs_all, mfeats, evid = [], [], []
        keep_probs = segment and use_seg_term
        for k in range(b):
            _check_cancel(cancel)
            feats_ed, mf, pooled = None, [], []
            for a in range(0, n_t, sub):
                xs = xp[k * n_t + a: k * n_t + min(a + sub, n_t)]
                feats = model.encode(xs)
                if segment:
                    probs = model.segment_features(feats)[..., :hh, :ww].float().softmax(1)
                    if tta:  # left-right flip, flipped back onto the same padded grid
                        logits_f = torch.flip(model.segment_features(model.encode(torch.flip(xs, dims=[-1]))),
                                              dims=[-1])
                        probs = 0.5 * (probs + logits_f[..., :hh, :ww].float().softmax(1))
                    probs_all.append(to_input(probs, region).argmax(1).to(torch.uint8))
                    if evidence is not None:
                        evid.append(softmax_evidence(probs) * px_mm2)
                    if keep_probs:
                        pooled.append(pool_probs(probs, refine.stride).half())
                if estimate_motion and n_t > 1:
                    if feats_ed is None:
                        feats_ed = [f[:1] for f in feats]
                    mf.append(model.motion_features(feats_ed, feats))
            if mf:
                mfeats.append(torch.cat(mf, 0))
            if pooled:  # cycle order -> frame order
                p = torch.cat(pooled, 0)
                seg_for_refine[zs[k]] = torch.empty_like(p).index_copy_(0, torch.tensor(order, device=p.device), p)
            tick(what, zs[k])
        if segment:
            lab = torch.cat(probs_all, 0).view(b, n_t, y1 - y0, x1 - x0).cpu().numpy()
            for k, z in enumerate(zs):
                labels[order, z, y0:y1, x0:x1] = lab[k]
            if evid:
                ev = torch.cat(evid, 0).view(b, n_t, -1).cpu().numpy()
                for k, z in enumerate(zs):
                    evidence[order, z] = ev[k]
        if mfeats:
            mf = torch.stack(mfeats, 0)  # (B, T, head, h, w), frame 0 = (ED, ED)
            flows = (model.pairwise_flows(mf, (hh, ww)) if motion_mode == "pairwise"
                     else model.recurrent_flows(mf, (hh, ww))).float()  # (B, T, 2, H, W)
            del mf
            if do_refine:
                p_m = torch.stack([seg_for_refine[z][order] for z in zs]) if use_seg_term else None
                flows = refine_motion(x.view(b, n_t, hh, ww), flows, p_m, refine)
            u = flow_to_input(flows.flatten(0, 1), region).view(b, n_t, 2, y1 - y0, x1 - x0)
            u = u.permute(0, 1, 3, 4, 2).cpu().numpy()
            for k, z in enumerate(zs):
                motion[order, z, y0:y1, x0:x1] = u[k]
            motion[ed, :, y0:y1, x0:x1] = 0.0  # u_ED = 0 (outside the box it was never written)

    with torch.inference_mode(), _autocast(dev, use_amp):
        if ed_frame is not None:  # ED known: one pass, every frame encoded once
            ed = int(ed_frame)
            for k, zs in enumerate(chunks):
                run_chunk(zs, ed, segment=True, estimate_motion=True)
                _release_freed_memory()
        else:  # pass 1 segments every frame to find ED; pass 2 estimates motion from that ED
            for k, zs in enumerate(chunks):
                run_chunk(zs, 0, segment=True, estimate_motion=False)
                _release_freed_memory()
            if largest_component:
                keep_largest_components(labels, inplace=True, dropped=emptied)
            ed = ed_es_from_lv_volumes(_lv_voxels(labels))[0]
            for k, zs in enumerate(chunks):
                run_chunk(zs, ed, segment=False, estimate_motion=True)
                _release_freed_memory()
    if largest_component and ed_frame is not None:
        keep_largest_components(labels, inplace=True, dropped=emptied)
    lv = _lv_voxels(labels)
    es = ed_es_from_lv_volumes(lv)[1] if n_t > 1 else ed
    qc_result = None
    if evidence is not None:
        qc_result = assess(labels, motion, evidence, ed, pixel_mm=float(np.mean(qc_pixel)),
                           n_classes=model.config.num_classes)
    meta = {"region": dict(region.to_dict(spacing_yx), found=how), "tta": bool(tta),
            "motion": {"mode": motion_mode, "refine": refine.to_dict() if do_refine else None},
            "largest_component": bool(largest_component),
            # (frame, slice) pairs whose blood pool the clean-up's valve rule emptied (less than half a
            # ring of myocardium: the atrium, not the ventricle)
            "valve_slices_emptied": sorted({(int(t), int(z)) for t, z in emptied}),
            "qc": qc_result.summary() if qc_result is not None else None}
    return InferenceResult(
        labels=labels,
        motion=motion,
        ed_frame=ed,
        es_frame=es,
        lv_volume_voxels=lv,
        device=str(dev),
        seconds=time.perf_counter() - t0,
        metadata=meta,
        qc=qc_result,
    )
