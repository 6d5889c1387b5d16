"""Bodies of the background jobs the panels start (no Qt, no napari; run in a worker thread).

Each job gets plain data captured on the GUI thread (never a layer or widget) and returns plain data;
the GUI thread applies it. Models are handed to jobs as **private copies**
(:func:`~..model_store.private_model`, which loads and caches them): a job may move its model to a
device, switch it to eval or train it without touching the cached one or another job's. Progress is ``progress(done, total, info)`` with ``info`` a
:class:`JobProgress` (prediction's step message, fine-tuning's losses); ``cancel()`` returning True
stops a job at its next check (raising :class:`~..errors.CancelledError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..cine import Cine
from ..errors import CancelledError

Cancel = Callable[[], bool]


@dataclass(frozen=True)
class JobProgress:
    """One progress report of a job: ``done`` of ``total`` steps, with prediction's ``message``
    (what it is doing, ``""`` when none) or fine-tuning's ``losses`` (the step's losses by name)."""

    done: int
    total: int
    message: str = ""
    losses: dict[str, float] | None = None

    @classmethod
    def of(cls, done: int, total: int, info: Any = None) -> "JobProgress":
        """From a core callback's ``(done, total, info)``: info a message (str), losses (dict) or None."""
        if isinstance(info, JobProgress):
            return info
        if isinstance(info, dict):
            return cls(int(done), int(total), losses={k: float(v) for k, v in info.items()})
        return cls(int(done), int(total), message="" if info is None else str(info))


Progress = Callable[[int, int, JobProgress], None]

#: grid step (pixels) of the motion arrows, and the shortest arrow drawn (voxels)
ARROW_MIN_LENGTH = 0.1

def private_model(path: str | None):
    """``(a private deep copy of the model at path, its metadata)`` — see
    :func:`~..model_store.private_model` (imported on first use: torch stays out of the panels' import)."""
    from .. import model_store

    return model_store.private_model(path)


def finetune_function():
    """The core fine-tuning function, :func:`napari_cardiac_motion.training.finetune.finetune`."""
    from ..training.finetune import finetune

    return finetune


def finetune_defaults():
    """The core's default fine-tuning settings (steps, lr, guard)."""
    from ..training.finetune import FinetuneSettings

    return FinetuneSettings()


# ----------------------------------------------------------------------------- inputs / outputs

@dataclass
class LayerSnapshot:
    """What a job needs from an image layer, read on the GUI thread."""

    data: Any
    name: str
    scale: tuple[float, ...]  # (T, Z, Y, X) scale of the outputs
    translate: tuple[float, ...]
    spacing: tuple[float, float, float]
    frame_interval_ms: float
    affine: np.ndarray
    #: False when the file had no physical pixel size (the reader's ``metadata["spacing_known"]``): a video
    spacing_known: bool = True


def snapshot_to_cine(snap: LayerSnapshot) -> Cine:
    data = np.asarray(snap.data)
    if data.ndim == 3:
        data = data[None]  # one frame
    return Cine(data=data, spacing=snap.spacing, frame_interval_ms=snap.frame_interval_ms,
                affine=snap.affine, name=snap.name, spacing_known=snap.spacing_known)


@dataclass
class PredictionOutput:
    """A prediction and its arrows, ready to be shown."""

    cine: Cine
    result: Any  # InferenceResult
    model_path: str | None
    model_meta: dict
    vectors: np.ndarray
    magnitudes: np.ndarray
    history: dict | None = None  # fine-tuning history when the model was just fine-tuned
    extra: dict = field(default_factory=dict)


def _arrows(result, arrow_mode: str, step: int):
    from ..layers import motion_vectors

    return motion_vectors(result.motion, result.labels, step=step, mode=arrow_mode, min_magnitude=ARROW_MIN_LENGTH)


def _predict(cine: Cine, model, meta: dict, model_path: str | None, device: str, ed_frame: int | None,
             arrow_mode: str, progress: Progress | None, cancel: Cancel, history=None,
             tta: bool | None = None) -> PredictionOutput:
    from .. import inference

    if cancel():
        raise CancelledError("Cancelled by the user; no results were produced.")
    from ..model_description import describe

    # an echo model (modality US) takes the echo path
    result = inference.predict_cine(cine, model, device=device, ed_frame=ed_frame, progress=progress, cancel=cancel,
                                    description=describe(meta), tta=tta)
    from ..layers import cine_arrow_step

    vectors, mags = _arrows(result, arrow_mode, cine_arrow_step(cine))
    shown = np.array(result.labels, dtype=np.uint8, copy=True)  # the labels to show and paint (made here,
    return PredictionOutput(cine, result, model_path, meta, vectors, mags, history,  # not on the GUI thread)
                            extra={"shown": shown})


# ----------------------------------------------------------------------------- jobs

#: modules napari imports lazily when the first Labels/Vectors layer is made (~0.5 s): imported in a
#: worker when the Run panel is docked (and by the job, in case), so that cost is not paid on the GUI
#: thread when the result lands
#: (scikit-image loads its submodules lazily: the ones napari's Labels layer uses are named, not only the package)
_LAZY_GUI_IMPORTS = ("pandas", "skimage.color", "skimage.color.colorconv", "skimage.exposure", "skimage.util",
                     "scipy.linalg", "OpenGL.arrays.lists")
#: modules torch imports lazily on the first optimizer (the motion refinement's Adam at the end of every
#: prediction): torch._dynamo, 2–3 s of imports holding the GIL, which stalled the GUI thread for
#: 0.3–0.5 s at a time just before the result landed
_LAZY_JOB_IMPORTS = ("torch._dynamo",)


def warm_imports() -> None:
    """Import what napari and torch would otherwise import lazily at the end of the first Run."""
    import importlib

    for name in (*_LAZY_GUI_IMPORTS, *_LAZY_JOB_IMPORTS):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 (best effort: e.g. an import cut short while Python shuts down)
            pass


def predict_job(snap: LayerSnapshot, model_path: str | None, device: str, ed_frame: int | None,
                arrow_mode: str, *, progress: Progress, cancel: Cancel, tta: bool | None = None) -> PredictionOutput:
    """Image → cine → private model → prediction → arrows. ``tta``: None = the model's default (the mirror-image
    pass for MR), False = one pass."""
    warm_imports()
    cine = snapshot_to_cine(snap)
    if cancel():
        raise CancelledError("Cancelled by the user; no results were produced.")
    model, meta = private_model(model_path)
    return _predict(cine, model, meta, model_path, device, ed_frame, arrow_mode,
                    lambda d, t, msg: progress(d, t, JobProgress.of(d, t, msg)), cancel, tta=tta)


def finetune_job(cine: Cine, corrections: np.ndarray, model_path: str | None, device: str, ed_frame: int | None,
                 steps: int, lr: float, guard: str | None, arrow_mode: str, *, progress: Progress,
                 cancel: Cancel, folder: str | None = None, tta: bool | None = None) -> PredictionOutput:
    """Fine-tune a private copy of the model on the corrections, save it in the model folder, re-predict.

    The one call site of the core fine-tuning function in the GUI.
    """
    from ..model_description import describe
    from ..model_store import finetuned_metadata, save_finetuned

    model, meta = private_model(model_path)
    description = describe(meta)  # an echo model fine-tunes with its own classes and geometry
    finetune = finetune_function()
    new_model, history = finetune(model, cine, corrections, steps=steps, lr=lr, device=device,
                                  progress=lambda s, n, losses: progress(s, n, JobProgress.of(s, n, losses)),
                                  cancel=cancel,
                                  guard=guard, ed_frame=ed_frame, description=description)
    if cancel():
        raise CancelledError("Cancelled; the previous model is kept.")
    metadata = finetuned_metadata(meta, cine.name, history)
    path = save_finetuned(new_model, metadata, folder=folder, description=description)
    meta = dict(metadata, **description.to_metadata(), name=path.stem, path=str(path))
    return _predict(cine, new_model, meta, str(path), device, ed_frame, arrow_mode, None, cancel, history, tta=tta)


def repredict_job(cine: Cine, model_path: str | None, device: str, ed_frame: int | None, arrow_mode: str, *,
                  progress: Progress, cancel: Cancel, tta: bool | None = None) -> PredictionOutput:
    """Predict ``cine`` again with another model (e.g. undoing a fine-tuning)."""
    model, meta = private_model(model_path)
    return _predict(cine, model, meta, model_path, device, ed_frame, arrow_mode,
                    lambda d, t, msg: progress(d, t, JobProgress.of(d, t, msg)), cancel, tta=tta)


def propagate_job(labels_slice: np.ndarray, motion_slice: np.ndarray, source_frame: int, *,
                  progress: Progress, cancel: Cancel) -> np.ndarray:
    """Labels ``(Y, X)`` of one frame carried to every frame ``(T, Y, X)`` of the slice."""
    from ..propagation import propagate_labels

    return propagate_labels(labels_slice, motion_slice, source_frame)


def arrows_job(motion: np.ndarray, labels: np.ndarray, mode: str, step: int = 4, *, progress: Progress,
               cancel: Cancel):
    """Arrows ``(vectors, magnitudes)`` for another arrow mode, every ``step`` pixels (``layers.cine_arrow_step``)."""
    from ..layers import motion_vectors

    return motion_vectors(motion, labels, step=step, mode=mode, min_magnitude=ARROW_MIN_LENGTH)
