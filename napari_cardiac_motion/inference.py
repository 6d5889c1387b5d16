"""Run the joint model over a whole cine (no Qt, no napari).

``predict_cine`` takes a ``(T, Z, Y, X)`` cine and returns labels ``(T, Z, Y, X)`` uint8 and motion
``(T, Z, Y, X, 2)`` float32 ``(dy, dx)`` in voxels, from frame t to the ED frame
(``frame_t(p) ≈ frame_ED(p + u_t(p))``, ``u_ED = 0``).

Slice by slice, the frames are encoded in cycle order ED, ED+1, …, ED-1 (the motion recurrence
follows the cardiac cycle from ED). With a given ED frame one pass segments and estimates motion
from the same features; with ``ed_frame=None`` a first pass segments every frame to pick ED (largest
LV blood pool; ES = smallest) and a second pass estimates the motion. Progress goes to a callback; cancellation is checked
between slices.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .cine import Cine, validate_cine_array
from .conventions import LV_BLOOD_POOL
from .devices import resolve_device
from .errors import CancelledError, InputError
from .model.network import JointMotionSegNet
from .preprocessing import from_network_grid, normalize_intensity, to_network_grid

ProgressCallback = Callable[[int, int, str], None]
CancelCheck = Callable[[], bool]


@dataclass
class InferenceResult:
    """Output of :func:`predict_cine`.

    Attributes:
        labels: ``(T, Z, Y, X)`` uint8 (0 bg, 1 LV, 2 Myo, 3 RV).
        motion: ``(T, Z, Y, X, 2)`` float32, ``(dy, dx)`` voxels, frame t → ED.
        ed_frame, es_frame: frame indices used (ES = smallest predicted LV blood pool).
        lv_volume_voxels: ``(T,)`` predicted LV blood-pool voxel count per frame.
        device: the torch device used.
        seconds: wall time of the prediction.
    """

    labels: np.ndarray
    motion: np.ndarray
    ed_frame: int
    es_frame: int
    lv_volume_voxels: np.ndarray
    device: str
    seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        n = self.labels.shape[0] * self.labels.shape[1]
        return n / self.seconds if self.seconds > 0 else float("inf")


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _check_cancel(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise CancelledError("Cancelled by the user; no results were produced.")


def cycle_order(n_frames: int, ed_frame: int) -> list[int]:
    """Frame indices in the order the recurrence visits them: ED, ED+1, …, ED-1 (wrapping)."""
    return [(ed_frame + k) % n_frames for k in range(n_frames)]


def predict_cine(
    cine: Cine | np.ndarray,
    model: JointMotionSegNet,
    device: str | torch.device = "auto",
    ed_frame: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    batch_size: int = 10,
) -> InferenceResult:
    """Segment every frame and slice of a cine and estimate its motion to the ED frame.

    Args:
        cine: a :class:`Cine` or a ``(T, Z, Y, X)`` array.
        model: the joint network (moved to ``device``; left in eval mode).
        device: ``auto|cpu|cuda|mps`` (an absent device raises :class:`DeviceError`).
        ed_frame: reference frame index; ``None`` = frame of largest predicted LV blood pool.
        progress: ``progress(done, total, message)`` called after every slice of each pass.
        cancel: returns True to stop; checked between slices (raises :class:`CancelledError`).
        batch_size: frames per forward pass.
    """
    t0 = time.perf_counter()
    data = cine.data if isinstance(cine, Cine) else validate_cine_array(cine)
    n_t, n_z, h, w = data.shape
    if ed_frame is not None and not (0 <= int(ed_frame) < n_t):
        raise InputError(f"ED frame {ed_frame} is out of range: the cine has frames 0–{n_t - 1}.")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    # centre-crop larger images to the network's size; smaller ones are not padded (fully convolutional)
    size = tuple(min(int(s), n) for s, n in zip(model.config.input_size, (h, w)))
    image = to_network_grid(normalize_intensity(data), size)  # (T, Z, H', W')
    report = progress or (lambda *_: None)
    labels_net = np.zeros((n_t, n_z) + size, dtype=np.uint8)
    motion_net = np.zeros((n_t, n_z) + size + (2,), dtype=np.float32)

    def slice_pass(z: int, ed: int, segment: bool, motion: bool) -> None:
        """Encode slice z's frames once (in cycle order from ``ed``); segment and/or estimate motion."""
        order = cycle_order(n_t, ed)
        x, _ = model._pad16(torch.from_numpy(image[order, z]).unsqueeze(1).to(dev))  # (T, 1, H, W) ED first
        feats_ed, hidden = None, None
        for a in range(0, n_t, batch_size):
            idx = order[a:a + batch_size]
            feats = model.encode(x[a:a + batch_size])
            if segment:
                logits = model.segment_features(feats)[..., : size[0], : size[1]]
                labels_net[idx, z] = logits.argmax(1).to(torch.uint8).cpu().numpy()
            if motion and n_t > 1:
                if feats_ed is None:
                    feats_ed = [f[:1] for f in feats]
                mfeat = model.motion_features(feats_ed, feats)
                for k in range(mfeat.shape[0]):
                    flow, hidden = model.flow_step(mfeat[k:k + 1], hidden)
                    motion_net[idx[k], z] = flow[0, :, : size[0], : size[1]].float().permute(1, 2, 0).cpu().numpy()
        motion_net[ed, z] = 0.0

    with torch.inference_mode(), _autocast(dev):
        if ed_frame is not None:  # ED known: one pass, every frame encoded once
            ed = int(ed_frame)
            for z in range(n_z):
                _check_cancel(cancel)
                slice_pass(z, ed, segment=True, motion=True)
                report(z + 1, n_z, f"slice {z + 1}/{n_z}")
        else:  # pass 1 segments every frame to find ED; pass 2 estimates motion from that ED
            for z in range(n_z):
                _check_cancel(cancel)
                slice_pass(z, 0, segment=True, motion=False)
                report(z + 1, 2 * n_z, f"segmenting slice {z + 1}/{n_z}")
            ed = int(np.argmax((labels_net == LV_BLOOD_POOL).reshape(n_t, -1).sum(1)))
            for z in range(n_z):
                _check_cancel(cancel)
                slice_pass(z, ed, segment=False, motion=True)
                report(n_z + z + 1, 2 * n_z, f"estimating motion, slice {z + 1}/{n_z}")
    lv = (labels_net == LV_BLOOD_POOL).reshape(n_t, -1).sum(1)
    es = int(np.argmin(lv)) if n_t > 1 else ed

    labels = from_network_grid(labels_net, (h, w))
    motion = from_network_grid(motion_net, (h, w), spatial_axes=(-3, -2))
    return InferenceResult(
        labels=labels,
        motion=motion,
        ed_frame=ed,
        es_frame=es,
        lv_volume_voxels=(labels == LV_BLOOD_POOL).reshape(n_t, -1).sum(1),
        device=str(dev),
        seconds=time.perf_counter() - t0,
    )
