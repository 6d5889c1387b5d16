"""Fine-tune the joint model on one cine from the user's corrected slices, safely (no Qt, no napari).

Inputs: the cine ``(T, Z, Y, X)`` and a corrections array of the same shape where a voxel equal to
:data:`~napari_cardiac_motion.conventions.UNLABELLED` (255) is unlabelled; a (frame, slice) that is
not all 255 is a correction (labels 0–3).

A COPY of the model is trained (the caller's model is never modified, so cancelling — which raises
:class:`~napari_cardiac_motion.errors.CancelledError` at the next step — keeps the previous model).

**Held-out check (the guard that makes fine-tuning never hurt on the user's own labels).** Before
training, part of the corrections is set aside: every third corrected slice (whole slices, so the check
is on anatomy the training never saw); with a single corrected slice, every third corrected frame of
it; with a single corrected (frame, slice), its labels carried by the *starting* model's motion to up to
four other frames of that slice (a weaker check: those labels are only as good as that motion).
After training, the starting model and weight-space blends ``θ₀ + α(θ − θ₀)`` of the fine-tuned
weights ``θ`` (``α`` in :attr:`FinetuneSettings.blends`; the raw fine-tuned model is ``α = 1``) are scored
on the held-out labels (Dice per structure, only on labelled voxels) and on those labels carried by the
starting model's motion to the frames nobody corrected (ES, …). A candidate is kept only if its mean Dice
on the held-out labels is HIGHER than the starting model's with no structure there lower by more than
``check_tolerance`` (0.005), and no structure of the propagated labels is lower at all; otherwise the starting
model is returned unchanged (``history["check"]["kept"] == 0.0``). So the result is never worse than the
starting model on the held-out check's score. The held-out labels are not used for training.

Training (each step: ``batch`` slices, each a short sequence that starts at ED and follows the cycle,
``ED, ED+a, ED+b, …``, the order the motion branch runs in at inference, on a crop around the heart):

* **segmentation loss** (cross-entropy + Dice) on corrected (frame, slice) pairs only;
* **motion loss** (warped-ED MSE + smoothness) on every frame of the sequence;
* **joint loss**: corrected labels carried through the motion. With a corrected ED slice: (a) the
  warped ED labels are scored against any other corrected frame (trains the motion) and (b) with
  ``prop_weight`` > 0 they are pseudo-labels for the uncorrected frames (off by default: on the ACDC
  validation patients they taught wrong ES labels wherever the motion was off, and the check — which
  also uses propagated labels — could not see it); with only a non-ED frame corrected, the ED
  prediction warped to that frame is scored against it;
* a **regulariser against forgetting** (``guard``): ``"teacher"`` = mean-teacher consistency (KL of the
  class probabilities) on uncorrected frames to an EMA copy of the model (Wu et al. 2022);
  ``"l2sp"`` = L2 penalty toward the starting weights; ``None``.

**Sparse corrections** (every corrected frame has fewer than half of its slices corrected: an annotator
fixing a few bad slices) train with cross-entropy only, a ten times stronger teacher and 32 steps
(``FinetuneSettings.sparse_*``): on the ten hardest ACDC validation patients, with the two worst ES slices
corrected, the defaults let two cases lose more than 0.01 Dice on slices nobody touched (one −0.12 on
the ED RV), these settings none (``benchmarks/finetune_benchmark.py --protocol worst-es``).

BatchNorm layers are kept in eval mode (running statistics frozen, affine parameters trained): with
1–2 slices per step batch statistics are noise, and inference uses the running statistics.

Geometry: the cine is seen exactly as inference sees it (:mod:`napari_cardiac_motion.geometry`):
resampled to the model's pixel size on the region around the heart (here: around the corrected
structures), at least the model's ``input_size``; training crops of that size are jittered by up to
``jitter`` model pixels. Memory: only that region of the cine is kept, as float32
(``T·Z·(H+2·jitter)·(W+2·jitter)·4`` bytes), built frame by frame.

Echo models (``description`` with modality US): one apical 2D+t clip ``(T, 1, Y, X)``; the region is the whole
frame at the model's pixel size (as echo inference runs), the structures scored by the check are the model's
(LV cavity, LV myocardium, left atrium) and a clip is not taken to be a closed cycle (CAMUS clips are ED→ES
half cycles). The fine-tuned model keeps its parent's description (:func:`..model_store.save_finetuned`).

The parts have their own modules: :mod:`.finetune_regions` (inputs and geometry),
:mod:`.finetune_loop` (settings and the optimisation loop) and :mod:`.finetune_guard` (the held-out
check); their public names are re-exported here.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import numpy as np
import torch

from ..cine import Cine, validate_cine_array
from ..devices import resolve_device
from ..errors import CancelledError, InputError
from ..model.network import JointMotionSegNet
from ..model_description import MR_DEFAULT, ModelDescription
from .finetune_guard import (
    CheckSet,
    blend_models,
    build_checks,
    check_scores,
    estimate_ed_frame,
    propagated_check,
    select_model,
    split_holdout,
)
from .finetune_loop import GUARDS, FinetuneProgress, FinetuneSettings, for_corrections, is_sparse, train_loop
from .finetune_regions import finetune_regions, labelled_mask, sample_region, validate_corrections


def resolve_settings(settings: FinetuneSettings | None, steps: int | None, lr: float | None,
                     guard: str | None | type[Ellipsis]) -> FinetuneSettings:
    """A copy of ``settings`` (default: :class:`FinetuneSettings`) with the explicit overrides applied."""
    s = copy.deepcopy(settings) if settings is not None else FinetuneSettings()
    if steps is not None:  # explicit steps win over the sparse-corrections default
        s.steps = int(steps)
        s.sparse_steps = None
    if lr is not None:
        s.lr = float(lr)
    if guard is not ...:
        s.guard = guard  # type: ignore[assignment]
    if s.guard not in GUARDS:
        raise ValueError(f"guard must be one of {GUARDS}, got {s.guard!r}")
    if s.steps < 1:
        raise InputError(f"Fine-tuning needs at least 1 step (got {s.steps}).")
    return s


def corrected_inputs(cine: Cine | np.ndarray, corrections: np.ndarray, description: ModelDescription | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data (T, Z, Y, X), corrections uint8, mask (T, Z))``, checked against the model's classes
    (``description``; MR when None); raises when nothing is corrected."""
    data = cine.data if isinstance(cine, Cine) else validate_cine_array(cine)
    corr_full = validate_corrections(corrections, data.shape,
                                     None if description is None else {c.value: c.name for c in description.classes})
    mask = labelled_mask(corr_full)
    if not mask.any():
        raise InputError(
            "No corrected slice: every (frame, slice) of the corrections is unlabelled (255). Correct at "
            "least one slice of the segmentation before fine-tuning."
        )
    return data, corr_full, mask


def cine_spacing_yx(cine: Cine | np.ndarray, echo: bool = False) -> tuple[float, float] | None:
    """In-plane ``(dy, dx)`` mm of a :class:`Cine` (``None`` for a bare array or unknown spacing; with ``echo``
    also for a clip without a pixel size, which echo models read at their training views' scale:
    :func:`..inference.echo_region`)."""
    if isinstance(cine, Cine) and cine.spacing is not None and (cine.spacing_known or not echo):
        return (float(cine.spacing[1]), float(cine.spacing[2]))
    return None


def finetune(
    model: JointMotionSegNet,
    cine: Cine | np.ndarray,
    corrections: np.ndarray,
    steps: int | None = None,
    lr: float | None = None,
    device: str | torch.device = "cpu",
    progress: FinetuneProgress | None = None,
    cancel: Callable[[], bool] | None = None,
    guard: str | None | type[Ellipsis] = ...,
    ed_frame: int | None = None,
    settings: FinetuneSettings | None = None,
    description: ModelDescription | None = None,
) -> tuple[JointMotionSegNet, dict[str, Any]]:
    """Fine-tune a copy of ``model`` on ``cine`` from ``corrections`` (see the module docstring).

    Args:
        model: the current model (left untouched).
        cine: a :class:`Cine` or ``(T, Z, Y, X)`` image.
        corrections: ``(T, Z, Y, X)`` uint8, 255 = unlabelled.
        steps, lr, guard: override ``settings`` (guard: ``"teacher"``, ``"l2sp"`` or ``None``).
        device: ``auto|cpu|cuda|mps``.
        progress: ``progress(step, total, losses)`` after every step (losses: floats by name).
        cancel: returns True to stop; checked before every step (raises :class:`CancelledError`).
        ed_frame: reference frame; default: largest predicted LV blood pool on the corrected slices.
        description: what the model segments (``describe(metadata)``; MR when None): the allowed labels, the
            structures the check scores, and for an echo model (modality US) its geometry: the whole frame
            at the model's pixel size, as echo inference sees it, and a clip that is not a closed cycle.
    Returns:
        ``(new_model in eval mode on device, history)``; history has ``losses`` (one dict per step),
        ``seconds`` (and ``seconds_parts``: prepare, train, check), ``ed_frame``, ``corrected`` (list of
        [t, z]), ``steps``, ``lr``, ``guard``, ``region`` (:meth:`geometry.Region.to_dict`), ``check``
        (``None`` when off; else ``kept`` = α of the returned model, 0.0 = the starting model,
        ``tolerance``, and per check set — ``held_out`` (true labels) and/or ``propagated`` (labels
        carried by the starting model's motion) — its ``pairs`` [[t, z]], the ``original`` Dice per
        structure and the ``candidates`` {"α": Dice per structure}), ``kept_original`` (bool) and ``sparse``
        (True when the sparse-corrections settings were used).
    """
    s = resolve_settings(settings, steps, lr, guard)
    t_start = time.perf_counter()
    desc = description or MR_DEFAULT
    data, corr_full, mask = corrected_inputs(cine, corrections, desc)
    sparse = is_sparse(mask, s.sparse_fraction)
    s = for_corrections(s, mask)
    n_t = data.shape[0]
    dev = resolve_device(device)
    spacing_yx = cine_spacing_yx(cine, echo=desc.is_echo)
    m = max(0, int(s.jitter))
    check_region, train_region = finetune_regions(corr_full, mask, model, spacing_yx, m, whole_frame=desc.is_echo)
    image, corr = sample_region(data, corr_full, train_region, dev)  # (T, Z, H+2m, W+2m)
    ch, cw = check_region.size
    image_c, corr_c = image[..., m:m + ch, m:m + cw], corr[..., m:m + ch, m:m + cw]  # the check's view

    start = copy.deepcopy(model).to(dev).eval()
    corrected_slices = sorted({int(z) for z in np.nonzero(mask)[1]})
    if ed_frame is None:
        ed_frame = estimate_ed_frame(start, image_c, corrected_slices, dev, desc.value_of("LV") or 1)
    ed = int(ed_frame)
    if not 0 <= ed < n_t:
        raise InputError(f"ED frame {ed} is out of range: the cine has frames 0–{n_t - 1}.")

    train_mask, held = (split_holdout(mask, s.holdout_every) if s.check else (mask, []))
    checks = build_checks(start, image_c, corr_c, mask, held, s.check_propagated, dev) if s.check else []

    student = copy.deepcopy(start)
    t_train = time.perf_counter()
    losses = train_loop(student, image, corr, train_mask, ed, (ch, cw), s, dev, progress or (lambda *_: None), cancel,
                        closed_cycle=not desc.is_echo)

    t_check = time.perf_counter()
    check = None
    result = student
    if checks and any(len(c[1]) for c in checks):
        if cancel is not None and cancel():
            raise CancelledError("Fine-tuning cancelled before the check; the previous model is kept.")
        result, check = select_model(start, student, image_c, checks, s.blends, dev, s.check_tolerance, desc.keys())
    seconds = {"prepare": t_train - t_start, "train": t_check - t_train, "check": time.perf_counter() - t_check}
    hist = finetune_history(losses, seconds, ed, mask, s, check_region.to_dict(spacing_yx), check)
    hist.update(sparse=sparse, modality=desc.modality, classes={str(k): v for k, v in desc.keys().items()})
    return result, hist


def finetune_history(losses: list[dict], seconds: dict[str, float], ed: int, mask: np.ndarray,
                     s: FinetuneSettings, region: dict, check: dict | None) -> dict[str, Any]:
    """The history dict :func:`finetune` returns (see there); ``seconds`` are the parts' durations (s)."""
    return {
        "losses": losses,
        "seconds": sum(seconds.values()),
        "seconds_parts": seconds,
        "ed_frame": ed,
        "corrected": [[int(t), int(z)] for t, z in zip(*np.nonzero(mask))],
        "steps": s.steps,
        "lr": s.lr,
        "guard": s.guard,
        "freeze_bn": s.freeze_bn,
        "region": region,
        "check": check,
        "kept_original": bool(check is not None and check["kept"] == 0.0),
    }


__all__ = [
    "GUARDS",
    "CheckSet",
    "FinetuneProgress",
    "FinetuneSettings",
    "blend_models",
    "check_scores",
    "estimate_ed_frame",
    "finetune",
    "finetune_regions",
    "labelled_mask",
    "sample_region",
    "propagated_check",
    "select_model",
    "split_holdout",
    "validate_corrections",
]
