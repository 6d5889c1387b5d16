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

Echo models (the model description's modality ``"US"``, see :mod:`.model_description`): the model sees
the **whole frame** re-sampled to its pixel size where the clip's pixel size is known (the CAMUS
full-resolution clips, 0.308 mm, are re-sampled to the model's 1 mm exactly as its training frames were
made, :func:`.training.data.resample_case_arrays`), and where it is not (videos, 224×224 CAMUS files:
``spacing_known`` False) resized so that its larger side spans 224 model pixels, the scale of the 224² training
views (:data:`ECHO_FIELD_PX`; a 224² file is read as it is); no heart finding (the MR region finder looks
for a short-axis LV ringed by myocardium), no MR anatomy clean-up but the echo one
(:func:`.postprocess.clean_echo_labels`), no quality control (MR-specific; ``metadata["qc_note"]`` says
so), and the motion refinement's temporal term does not close the clip on itself (echo clips are often
half cycles, ED→ES).

Batching: all slices of a chunk of the cine go through the encoder together and the motion recurrence
runs over time with the slices as its batch; results stay on the device until the chunk is done (one
device sync per chunk; a typical cine is one chunk). With a given ED frame one pass segments and
estimates motion from the same features; with ``ed_frame=None`` a first pass segments every frame to
pick ED (largest LV blood pool; ES = smallest) and a second pass estimates the motion. Progress goes to
a callback after every slice; cancellation is checked before every slice.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .cine import Cine, validate_cine_array
from .conventions import LV_BLOOD_POOL, ed_es_from_lv_volumes
from .devices import resolve_device
from .errors import InputError
from .geometry import (DEFAULT_REGION_MIN, REGION_MIN_MM, Region, labels_on_input, model_step,
                       region_for_heart, to_model, whole_field_region)
from .model.network import JointMotionSegNet
from .model_description import ModelDescription
from .motion_refine import RefineSettings
from .postprocess import clean_echo_labels, keep_largest_components
from .preprocessing import apply_window, intensity_window
from .qc import QCResult, assess
from .cine_runner import (CancelCheck, CineRunner, ProgressCallback, autocast_for, lv_voxels,  # noqa: F401
                          slice_chunks)


#: default weight of the ED labels carried by the motion in each frame's MR labels (``predict_cine(fuse=…)``).
#: Chosen on the 20 ACDC validation ED/ES pairs (``evaluate --fuse W``): ES Dice LV/Myo/RV 0.930/0.882/0.844
#: without, 0.936/0.883/0.844 at 0.15, 0.937/0.884/0.845 at 0.25, 0.937/0.884/0.846 at 0.35, 0.934/0.883/0.827
#: at 0.5; the lowest ES LV Dice 0.791 → 0.883 (a basal ES slice the valve rule emptied); ED is unchanged.
DEFAULT_FUSE = 0.25

#: flip test-time augmentation is on by default for MR models (``predict_cine(tta=None)``). Measured with
#: cardiac-joint-v2 2.4.0 on the 20 ACDC validation ED/ES pairs (``evaluate``, ``evaluate --no-tta``): Dice mean
#: LV / Myo / RV 0.947 / 0.879 / 0.896 without, 0.949 / 0.883 / 0.898 with; 4.2 → 6.6 s for 256×256×11×20 on the
#: 2-core CPU (``benchmarks/inference_speed.py --threads 2 [--no-tta]``).
DEFAULT_TTA_MR = True

#: why flip test-time augmentation is refused for echo (measured with echo-joint-v1 1.2.0 on CAMUS's 69
#: validation patients, `evaluate --model echo --tta`: ED/ES mean Dice LV / Myo / LA 0.910 / 0.809 / 0.849, without
#: it 0.921 / 0.839 / 0.861): an apical view is not mirror-symmetric, the septum and the lateral wall swap sides
ECHO_TTA_REFUSED = ("Flip test-time augmentation is for short-axis MR only: an apical echo view is not "
                    "mirror-symmetric, and on CAMUS it lowers the myocardium's Dice (0.84 → 0.81). Run without "
                    "--tta.")


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
            ``tta``, ``largest_component``, ``fuse`` (the temporal fusion weight), ``qc`` (summary of :attr:`qc`).
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
    with torch.inference_mode(), autocast_for(device, use_amp):
        x = to_model(frames.to(device).unsqueeze(1), region)
        labels_m = model.segment(x).float().softmax(1)
        labels = labels_on_input(labels_m, region).cpu().numpy()
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


#: ``metadata["qc_note"]`` of an echo prediction
ECHO_QC_NOTE = "quality control skipped: its scores are calibrated on short-axis MR only"
#: ``metadata["clean_up"]`` of an echo prediction
ECHO_CLEAN_NOTE = ("echo: per frame one connected region of the LV cavity is kept (of those at least a quarter of "
                   "the largest, the one most ringed by myocardium)")


def is_echo(description: ModelDescription | None) -> bool:
    """True for a model of ultrasound (the description's modality ``"US"``)."""
    return description is not None and description.is_echo


#: model pixels across the larger side of an echo frame whose pixel size is unknown: CAMUS's 224² training
#: views are whole frames resized to 224 × 224, so a video of any size is read at the scale they were
ECHO_FIELD_PX = 224


def known_spacing_yx(cine: Cine | np.ndarray, spacing_yx: tuple[float, float] | None) -> tuple[float, float] | None:
    """The in-plane pixel size the cine really has: ``spacing_yx``, or None when it has none (``Cine.spacing_known``
    False: a video, a file with 1.0 placeholders). Echo models then read the frame at their training views' scale
    (:func:`echo_region`), and ``result.json`` gives no model pixel size in mm."""
    return None if isinstance(cine, Cine) and not cine.spacing_known else spacing_yx


def echo_region(shape_yx: tuple[int, int], spacing_yx: tuple[float, float] | None, pixel_mm: float | None
                ) -> Region:
    """The region an echo model runs on: the whole frame at the model's pixel size from pixel (0, 0), up to and
    including the last row and column, padded on the far side to a multiple of 16 (module docstring). With
    ``spacing_yx`` None (unknown pixel size) the frame is resized, keeping its aspect, so that its larger side
    spans :data:`ECHO_FIELD_PX` model pixels: a 224² CAMUS file stays as it is, a 388-pixel video frame is
    shrunk and a 112-pixel one enlarged to the scale of the training views (read pixel for pixel, a large
    video showed the heart three times too big: wrong labels, 30 s instead of 1.5 s)."""
    if spacing_yx is None:
        s = max(int(shape_yx[0]), int(shape_yx[1]), 1) / ECHO_FIELD_PX
        step = (s, s)
    else:
        step = model_step(spacing_yx, pixel_mm)
    size = tuple(int(math.ceil((int(math.ceil((n - 1) / s - 1e-6)) + 1) / 16) * 16) for n, s in zip(shape_yx, step))
    return Region((0.0, 0.0), (float(step[0]), float(step[1])), (size[0], size[1]),
                  (int(shape_yx[0]), int(shape_yx[1])))


def _metadata(region: dict, how: str, tta: bool, refine: dict | None, motion_mode: str, largest_component: bool,
              emptied: list[tuple[int, int]], qc_result: QCResult | None, echo: bool = False,
              fuse: float = 0.0) -> dict[str, Any]:
    """``InferenceResult.metadata`` (see there); an echo prediction adds ``modality``, ``qc_note`` and ``clean_up``."""
    extra = {"modality": "US", "qc_note": ECHO_QC_NOTE,
             "clean_up": ECHO_CLEAN_NOTE if largest_component else None} if echo else {}
    return {**extra, "region": dict(region, found=how), "tta": bool(tta),
            "motion": {"mode": motion_mode, "refine": refine}, "fuse": float(fuse),
            "largest_component": bool(largest_component),
            # (frame, slice) pairs whose blood pool the clean-up's valve rule emptied (less than half a
            # ring of myocardium: the atrium, not the ventricle)
            "valve_slices_emptied": sorted({(int(t), int(z)) for t, z in emptied}),
            "qc": qc_result.summary() if qc_result is not None else None}


def _check_arguments(motion_mode: str, ed_frame: int | None, n_t: int, echo_tta: bool = False) -> None:
    """:func:`predict_cine`'s checks of its motion mode, ED frame and flip TTA on an echo model (refused:
    :data:`ECHO_TTA_REFUSED`), each an :class:`InputError` naming the fix."""
    if echo_tta:
        raise InputError(ECHO_TTA_REFUSED)
    if motion_mode not in ("pairwise", "recurrent"):
        raise InputError(f"Unknown motion mode '{motion_mode}': use 'pairwise' or 'recurrent'.")
    if ed_frame is not None and not (0 <= int(ed_frame) < n_t):
        raise InputError(f"ED frame {ed_frame} is out of range: the cine has frames 0–{n_t - 1}.")


def fusion_weight(fuse: float | None, description: ModelDescription | None) -> float:
    """The temporal fusion weight of :func:`predict_cine`: ``fuse``, or the default for the modality."""
    w = (0.0 if is_echo(description) else DEFAULT_FUSE) if fuse is None else float(fuse)
    if not 0.0 <= w < 1.0:
        raise InputError(f"The fusion weight must be in [0, 1), got {fuse}.")
    return w


def tta_default(tta: bool | None, description: ModelDescription | None) -> bool:
    """Flip TTA of :func:`predict_cine`: ``tta``, or the default for the modality (on for MR, off for echo)."""
    return (not is_echo(description) and DEFAULT_TTA_MR) if tta is None else bool(tta)


def _region(data: np.ndarray, model: JointMotionSegNet, spacing_yx: tuple[float, float] | None,
            device: torch.device, window: tuple[float, float], echo: bool,
            cine: Cine | np.ndarray | None = None) -> tuple[Region, str]:
    """The processed region and how it was found: the whole frame for echo (at the training views' scale when
    ``cine`` has no pixel size: :func:`known_spacing_yx`), else :func:`plan_region`."""
    if echo:
        pixel = getattr(model.config, "pixel_mm", None)
        return echo_region(data.shape[-2:], known_spacing_yx(cine, spacing_yx), pixel), "whole frame (echo)"
    return plan_region(data, model, spacing_yx, device, device.type == "cuda", window)


def _clean_up(echo: bool, largest_component: bool, emptied: list[tuple[int, int]],
              description: ModelDescription | None):
    """The in-place label clean-up of :func:`predict_cine` (None when off): echo or MR anatomy."""
    if not largest_component:
        return None
    if echo:
        lv, myo, la = (description.value_of(k) if description is not None else None for k in ("LV", "Myo", "LA"))
        others = tuple(v for v in (myo or 2, la) if v is not None)
        return lambda lab: clean_echo_labels(lab, lv or 1, myo or 2, inplace=True, others=others)

    def clean(lab: np.ndarray) -> None:  # may run twice (after the fusion): report the last run only
        emptied.clear()
        keep_largest_components(lab, inplace=True, dropped=emptied)
    return clean


def predict_cine(
    cine: Cine | np.ndarray,
    model: JointMotionSegNet,
    device: str | torch.device = "auto",
    ed_frame: int | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    batch_size: int | None = None,
    spacing: tuple[float, float, float] | None = None,
    tta: bool | None = None,
    largest_component: bool = True,
    region: Region | None = None,
    max_sub_frames: int | None = None,
    motion_mode: str = "pairwise",
    refine: RefineSettings | None = None,
    qc: bool = True,
    description: ModelDescription | None = None,
    fuse: float | None = None,
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
        tta: also segment left-right flipped frames and average (~1.4× the time); None: on for MR, off for echo.
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
        description: what the model segments (``describe(metadata)``); ``"US"``: the echo path (module doc).
        fuse: temporal consistency: weight 0–1 of the ED labels carried by the motion in each frame's labels
            (:mod:`.cine_runner`); 0 = off; ``None`` = :data:`DEFAULT_FUSE` for MR, off for echo.
    """
    fuse, tta_on = fusion_weight(fuse, description), tta_default(tta, description)
    t0 = time.perf_counter()
    data, spacing = ((cine.data, cine.spacing if spacing is None else spacing) if isinstance(cine, Cine)
                     else (validate_cine_array(cine), spacing))
    n_t, n_z, h, w = data.shape
    _check_arguments(motion_mode, ed_frame, n_t, tta_on and is_echo(description))
    dev = resolve_device(device)
    model = model.to(dev).eval()
    # frames per chunk: at most 240 (CPU) / 2048 (GPU), and at most ~64 MB of input pixels
    max_frames = int(batch_size or min(2048 if dev.type != "cpu" else 240, max(1, (16 << 20) // (h * w))))
    window = intensity_window(data)  # per-cine [1, 99] percentile window, applied chunk by chunk
    spacing_yx = (float(spacing[1]), float(spacing[2])) if spacing is not None else None
    echo = is_echo(description)
    region, how = _region(data, model, spacing_yx, dev, window, echo, cine) if region is None else (region, "given")
    refine = RefineSettings(closed_cycle=not echo) if refine is None else refine
    # QC's pixel size (mm): the cine's, else the model's (an array without spacing is taken to be at it)
    qc_pixel = spacing_yx or (float(getattr(model.config, "pixel_mm", None) or 1.0),) * 2
    runner = CineRunner(data, model, dev, region, window, n_passes=1 if ed_frame is not None else 2,
                        sub=max(1, min(n_t, max_sub_frames or (512 if dev.type != "cpu" else 16))), tta=tta_on,
                        motion_mode=motion_mode, refine=refine, qc=qc and not echo, qc_pixel=qc_pixel,
                        progress=progress, cancel=cancel, fuse=fuse)
    emptied: list[tuple[int, int]] = []  # (frame, slice) pairs the clean-up's valve rule emptied
    with torch.inference_mode(), autocast_for(dev):  # float16 on CUDA
        ed = runner.run_passes(slice_chunks(n_z, n_t, max_frames), ed_frame,
                               clean=_clean_up(echo, largest_component, emptied, description))
    lv = lv_voxels(runner.labels)
    es = ed_es_from_lv_volumes(lv)[1] if n_t > 1 else ed
    qc_result = None if runner.evidence is None else assess(
        runner.labels, runner.motion, runner.evidence, ed, pixel_mm=float(np.mean(qc_pixel)), n_classes=model.config.num_classes)
    meta = _metadata(region.to_dict(known_spacing_yx(cine, spacing_yx)), how, tta_on,
                     refine.to_dict() if runner.do_refine else None, motion_mode, largest_component, emptied,
                     qc_result, echo, runner.fuse)
    return InferenceResult(runner.labels, runner.motion, ed, es, lv, str(dev), time.perf_counter() - t0,
                           metadata=meta, qc=qc_result)
