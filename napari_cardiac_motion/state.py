"""The one owner of what the plugin knows about a viewer's images (no Qt, no napari).

:class:`ViewerState` holds one :class:`ImageState` per image (keyed by an opaque, hashable key — the
GUI uses its image layer's id). An image state owns:

* the last prediction (:class:`~napari_cardiac_motion.inference.InferenceResult`) and the model that
  made it;
* ``labels`` — the labels shown to the user ``(T, Z, Y, X)`` uint8, the very array the Labels layer
  paints in place;
* a :class:`~napari_cardiac_motion.corrections.CorrectionTracker`: the per-slice provenance *hand*
  (painted), *propagated* (a proposal, not yet accepted) and *accepted*;
* ``busy``: the name of the job running on it (one job at a time per image).

Every route that writes a prediction into the labels goes through :meth:`ViewerState.apply_prediction`,
which keeps the hand and accepted slices (proposals are replaced). It never discards corrections on its
own: when it would have to (the new prediction has another shape) it raises :class:`EditsWouldBeLost`
unless called with ``discard=True`` — callers ask the user first (:meth:`ViewerState.loss_if_applied`
says what would be lost).

Listeners (``subscribe``) are called with ``(state, key, what)`` after every change; ``what`` is a
:class:`StateEvent` (a ``str`` enum: ``"result"``, ``"edits"``, ``"busy"``, ``"model"``, ``"active"``,
``"removed"``, so comparing with the plain string works too). Only one thread (the GUI's) may mutate a
state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable

import numpy as np

from .cine import Cine
from .corrections import ACCEPTED, HAND, PROPAGATED, CorrectionTracker, Pair
from .errors import CardiacMotionError

_log = logging.getLogger(__name__)


class StateEvent(str, Enum):
    """What changed in a :class:`ViewerState` (the ``what`` its listeners get)."""

    RESULT = "result"  #: a prediction was applied (labels, ED/ES, model)
    EDITS = "edits"  #: the corrections' provenance changed
    BUSY = "busy"  #: a job started or ended on the image
    MODEL = "model"  #: the image's model changed (fine-tuned, undone, chosen)
    ACTIVE = "active"  #: another image became the active one
    REMOVED = "removed"  #: the image was forgotten

    def __str__(self) -> str:
        return self.value


Listener = Callable[["ViewerState", Hashable, StateEvent], None]


class EditsWouldBeLost(CardiacMotionError):
    """Applying a result would discard the user's corrections; ask, then call again with ``discard=True``."""


class Busy(CardiacMotionError):
    """Another job is already running on this image."""


@dataclass
class ImageState:
    """Everything known about one image (see module docstring).

    Attributes:
        key: the opaque key of the image (the GUI's image layer id).
        name: the image's name (for messages).
        cine: the image as a :class:`Cine` ``(T, Z, Y, X)`` with spacing ``(dz, dy, dx)`` mm.
        scale, translate: the image layer's ``(T, Z, Y, X)`` scale and translate (for the outputs).
        result: the last prediction (``labels`` there are the model's, never painted).
        labels: what the user sees and paints ``(T, Z, Y, X)`` uint8 (prediction + corrections).
        tracker: provenance of every slice that differs from the prediction.
        model_path, model_metadata: the model that made ``result`` (``None`` = the shipped default).
        model_history: previous ``(model_path, metadata)`` before each fine-tuning (undo).
        arrow_mode: ``"from_ed"`` or ``"frame_to_frame"``.
        busy: the running job's name (``"run"``, ``"fine-tune"``, ...) or ``None``.
    """

    key: Hashable
    name: str = ""
    cine: Cine | None = None
    scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    translate: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    result: Any = None
    labels: np.ndarray | None = None
    tracker: CorrectionTracker | None = None
    model_path: Path | None = None
    model_metadata: dict[str, Any] = field(default_factory=dict)
    model_history: list[tuple[Path | None, dict[str, Any]]] = field(default_factory=list)
    arrow_mode: str = "from_ed"
    busy: str | None = None

    # -- read-only views --------------------------------------------------------------------------
    @property
    def predicted_labels(self) -> np.ndarray | None:
        """The model's own prediction (a private copy, never painted)."""
        return None if self.tracker is None else self.tracker.prediction

    @property
    def ed_frame(self) -> int | None:
        return None if self.result is None else int(self.result.ed_frame)

    @property
    def es_frame(self) -> int | None:
        return None if self.result is None else int(self.result.es_frame)

    @property
    def corrected(self) -> list[Pair]:
        """Corrections (hand + accepted), sorted (frame, slice)."""
        return [] if self.tracker is None else self.tracker.sorted_pairs()

    @property
    def propagated(self) -> list[Pair]:
        """Proposals not yet accepted, sorted."""
        return [] if self.tracker is None else sorted(self.tracker.propagated)

    def provenance(self) -> list[tuple[Pair, str]]:
        """Every tracked ``((t, z), kind)`` sorted by (frame, slice); kind is hand/propagated/accepted."""
        return [] if self.tracker is None else sorted(self.tracker.kinds.items())

    def has_edits(self) -> bool:
        return bool(self.tracker is not None and self.tracker.kinds)

    def corrections_array(self) -> np.ndarray:
        """``(T, Z, Y, X)`` uint8: corrections (hand + accepted) with 255 elsewhere (fine-tuning input)."""
        if self.tracker is None or self.labels is None:
            raise CardiacMotionError("Run the model on this image first.")
        return self.tracker.corrections_array(self.labels)


class ViewerState:
    """Per-viewer owner of every :class:`ImageState` (see module docstring)."""

    def __init__(self) -> None:
        self.images: dict[Hashable, ImageState] = {}
        #: the image the user worked on last (the panels show it)
        self.active: Hashable | None = None
        self._listeners: list[Listener] = []

    # -- images ---------------------------------------------------------------------------------
    def image(self, key: Hashable, name: str | None = None, create: bool = False) -> ImageState | None:
        """The state of image ``key`` (created when ``create``; ``name`` updated when given)."""
        img = self.images.get(key)
        if img is None and create:
            img = self.images[key] = ImageState(key=key, name=name or str(key))
        if img is not None and name:
            img.name = name
        return img

    @property
    def current(self) -> ImageState | None:
        """The active image's state (or ``None``)."""
        return self.images.get(self.active) if self.active is not None else None

    def set_active(self, key: Hashable | None) -> None:
        if key != self.active:
            self.active = key
            self.notify(key, StateEvent.ACTIVE)

    def remove(self, key: Hashable) -> ImageState | None:
        img = self.images.pop(key, None)
        if self.active == key:
            self.active = None
        if img is not None:
            self.notify(key, StateEvent.REMOVED)
        return img

    # -- jobs -----------------------------------------------------------------------------------
    def busy(self, key: Hashable | None = None) -> str | None:
        """The job running on ``key`` (default: on any image), or ``None``."""
        if key is None:
            return next((img.busy for img in self.images.values() if img.busy), None)
        img = self.images.get(key)
        return None if img is None else img.busy

    def begin_job(self, key: Hashable, job: str, name: str | None = None) -> None:
        """Mark image ``key`` busy with ``job``; raises :class:`Busy` when a job already runs on it."""
        img = self.image(key, name, create=True)
        if img.busy:
            raise Busy(f"'{img.name}' is busy ({img.busy}); wait for it to finish or cancel it first.")
        img.busy = job
        self.notify(key, StateEvent.BUSY)

    def end_job(self, key: Hashable) -> None:
        img = self.images.get(key)
        if img is not None and img.busy:
            img.busy = None
            self.notify(key, StateEvent.BUSY)

    # -- predictions ------------------------------------------------------------------------------
    def loss_if_applied(self, key: Hashable, shape: tuple[int, ...]) -> str | None:
        """What applying a prediction of ``shape`` to ``key`` would discard (a sentence), or ``None``."""
        img = self.images.get(key)
        if img is None or img.tracker is None or not img.tracker.kinds:
            return None
        if tuple(shape) != img.tracker.shape:
            n = len(img.tracker.kinds)
            return (f"The image '{img.name}' now has shape {tuple(shape)} (T, Z, Y, X) instead of "
                    f"{img.tracker.shape}: its {n} edited slice(s) cannot be kept.")
        return None

    def apply_prediction(self, key: Hashable, result: Any, *, cine: Cine | None = None, name: str | None = None,
                         scale: Iterable[float] | None = None, translate: Iterable[float] | None = None,
                         model_path: str | Path | None | type(Ellipsis) = ...,
                         model_metadata: dict[str, Any] | None = None, arrow_mode: str | None = None,
                         discard: bool = False, shown: np.ndarray | None = None) -> ImageState:
        """Show ``result`` for image ``key``: the one route by which predictions reach the labels.

        The new prediction replaces every slice except the corrections (hand and accepted), which keep
        what the user sees now; proposals are replaced. Without ``shown``, ``labels`` is updated *in
        place* when its shape is unchanged (the Labels layer keeps its array); ``shown`` — a private uint8
        copy of the new prediction prepared off the GUI thread — becomes the new ``labels`` instead (no
        whole-cine copy on the GUI thread). The tracker shares ``result.labels`` (never modified) rather
        than copying it. Raises :class:`EditsWouldBeLost` instead of dropping edits unless ``discard``.
        """
        img = self.image(key, name, create=True)
        new = np.asarray(result.labels)
        loss = self.loss_if_applied(key, new.shape)
        if loss is not None and not discard:
            raise EditsWouldBeLost(loss)
        if shown is not None and (shown.shape != new.shape or shown.dtype != np.uint8):
            raise ValueError("shown must be a uint8 copy of result.labels")
        if img.tracker is None or img.labels is None or img.labels.shape != new.shape:
            img.tracker = CorrectionTracker(new, copy=False)
            img.labels = shown if shown is not None else np.array(new, dtype=np.uint8, copy=True)
        else:
            current = img.labels
            keep = {p: np.array(current[p], copy=True) for p in img.tracker.corrected}
            if shown is None:
                current[...] = new  # in place: the Labels layer holds this array
                target = current
            else:
                target = shown
            img.tracker.merge_into(target, new_prediction=new, copy=False)
            for p, values in keep.items():  # what the user sees now, not the tracker's snapshot
                target[p] = values
                img.tracker.snapshots[p] = values
            img.labels = target
        img.result = result
        if cine is not None:
            img.cine = cine
        if scale is not None:
            img.scale = tuple(float(s) for s in scale)
        if translate is not None:
            img.translate = tuple(float(s) for s in translate)
        if model_path is not ...:
            img.model_path = Path(model_path) if model_path else None
        if model_metadata is not None:
            img.model_metadata = dict(model_metadata)
        if arrow_mode is not None:
            img.arrow_mode = arrow_mode
        self.active = key
        self.notify(key, StateEvent.RESULT)
        return img

    # -- edits ----------------------------------------------------------------------------------
    def note_edits(self, key: Hashable, pairs: Iterable[Pair] | None = None) -> bool:
        """The labels of ``pairs`` (default: all) may have changed: update the provenance.

        Returns whether the tracked set changed (listeners are told then).
        """
        img = self.images.get(key)
        if img is None or img.tracker is None or img.labels is None:
            return False
        before = dict(img.tracker.kinds)
        img.tracker.update_from_labels(img.labels, None if pairs is None else list(pairs))
        changed = img.tracker.kinds != before
        if changed:
            self.notify(key, StateEvent.EDITS)
        return changed

    def set_propagated(self, key: Hashable, proposals: dict[Pair, np.ndarray]) -> None:
        """Record proposals already written into ``labels`` (see :meth:`CorrectionTracker.set_propagated`)."""
        img = self._edited(key)
        img.tracker.set_propagated(proposals)
        self.notify(key, StateEvent.EDITS)

    def accept(self, key: Hashable, pairs: Iterable[Pair] | None = None) -> list[Pair]:
        """Accept proposals (default: all of the image's); they become corrections."""
        img = self._edited(key)
        done = img.tracker.accept(pairs)
        if done:
            self.notify(key, StateEvent.EDITS)
        return done

    def _edited(self, key: Hashable) -> ImageState:
        img = self.images.get(key)
        if img is None or img.tracker is None or img.labels is None:
            raise CardiacMotionError("Run the model on this image first.")
        return img

    # -- models ---------------------------------------------------------------------------------
    def push_model(self, key: Hashable, model_path: str | Path | None, metadata: dict[str, Any]) -> None:
        """A fine-tuned model replaces the image's model (the previous one is kept for undo)."""
        img = self._edited(key)
        img.model_history.append((img.model_path, dict(img.model_metadata)))
        img.model_path = Path(model_path) if model_path else None
        img.model_metadata = dict(metadata)
        self.notify(key, StateEvent.MODEL)

    def pop_model(self, key: Hashable) -> tuple[Path | None, dict[str, Any]] | None:
        """Undo the last fine-tuning's model switch; returns the restored ``(path, metadata)``."""
        img = self._edited(key)
        if not img.model_history:
            return None
        img.model_path, meta = img.model_history.pop()
        img.model_metadata = dict(meta)
        self.notify(key, StateEvent.MODEL)
        return img.model_path, img.model_metadata

    # -- listeners ------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def notify(self, key: Hashable | None, what: StateEvent | str) -> None:
        """Tell the listeners (a listener's error does not stop the others); ``what`` is a
        :class:`StateEvent` or its value (an unknown value raises ``ValueError``)."""
        what = StateEvent(what)
        for listener in list(self._listeners):
            try:
                listener(self, key, what)
            except Exception:  # a broken panel must not break the others
                _log.exception("state listener %r failed", listener)


__all__ = ["ACCEPTED", "HAND", "PROPAGATED", "Busy", "EditsWouldBeLost", "ImageState", "StateEvent", "ViewerState"]
