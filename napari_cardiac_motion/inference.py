"""Run the joint model over a whole cine (no Qt, no napari).

``predict_cine`` takes a ``(T, Z, Y, X)`` cine and returns labels ``(T, Z, Y, X)`` uint8 and motion
``(T, Z, Y, X, 2)`` float32 ``(dy, dx)`` in voxels, from frame t to the ED frame
(``frame_t(p) ≈ frame_ED(p + u_t(p))``, ``u_ED = 0``).

Two passes, slice by slice: (1) segment every frame (this picks ED = largest LV blood pool, ES =
smallest, unless ED is given); (2) run the motion branch over the sequence ED, ED+1, …, ED-1 (the
recurrence follows the cardiac cycle from ED). Progress goes to a callback; cancellation is checked
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
    total = 2 * n_z
    done = 0
    report = progress or (lambda *_: None)

    probs_lv = np.zeros((n_t,), dtype=np.float64)
    labels_net = np.zeros((n_t, n_z) + size, dtype=np.uint8)
    motion_net = np.zeros((n_t, n_z) + size + (2,), dtype=np.float32)
    with torch.inference_mode(), _autocast(dev):
        # pass 1: segmentation of every frame
        for z in range(n_z):
            _check_cancel(cancel)
            frames = torch.from_numpy(image[:, z]).unsqueeze(1)  # (T, 1, H, W)
            for a in range(0, n_t, batch_size):
                logits = model.segment(frames[a:a + batch_size].to(dev))
                labels_net[a:a + batch_size, z] = logits.argmax(1).to(torch.uint8).cpu().numpy()
            done += 1
            report(done, total, f"segmenting slice {z + 1}/{n_z}")
        probs_lv = (labels_net == LV_BLOOD_POOL).reshape(n_t, -1).sum(1).astype(np.float64)
        ed = int(ed_frame) if ed_frame is not None else int(np.argmax(probs_lv))
        es = int(np.argmin(probs_lv)) if n_t > 1 else ed
        # pass 2: motion over the cycle starting at ED
        order = cycle_order(n_t, ed)
        for z in range(n_z):
            _check_cancel(cancel)
            if n_t > 1:
                seq = torch.from_numpy(image[order, z]).unsqueeze(1).to(dev)  # (T, 1, H, W) ED first
                x, _ = model._pad16(seq)
                feats_ed = None
                hidden = None
                for a in range(0, n_t, batch_size):
                    feats = model.encode(x[a:a + batch_size])
                    if feats_ed is None:
                        feats_ed = [f[:1] for f in feats]
                    mfeat = model.motion_features(feats_ed, feats)
                    for k in range(mfeat.shape[0]):
                        flow, hidden = model.flow_step(mfeat[k:k + 1], hidden)
                        motion_net[order[a + k], z] = flow[0, :, : size[0], : size[1]].float().permute(1, 2, 0).cpu().numpy()
                motion_net[ed, z] = 0.0
            done += 1
            report(done, total, f"estimating motion, slice {z + 1}/{n_z}")

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
