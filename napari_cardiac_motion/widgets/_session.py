"""The per-viewer session: one :class:`~..state.ViewerState`, its layers and its edits (GUI thread only).

One :class:`Session` per viewer (:func:`get_session`), shared by every panel, so painting is tracked,
and re-runs keep corrections, whichever panels are open. It is a thin layer over

* :class:`~._layer_binding.LayerBinding` (``session.binding``): which layers belong to which image
  (keyed by the image layer's ``unique_id``; a second image gets ``segmentation (name)``), and writing
  results into them;
* :class:`~._history.HistoryWatcher` (``session.history``): napari's paint, undo and redo on each
  segmentation layer turned into edits of the state; the plugin's own writes go through the layer's
  history, so napari's Undo (Ctrl+Z) undoes them in one step;
* the one :class:`~._runner.JobRunner` (``session.runner``).

It routes every prediction through :meth:`~..state.ViewerState.apply_prediction` (:meth:`Session.land`),
asking the user first (:func:`ask`) when edits would be lost. :func:`ask` (a Qt question box) is the
only place the plugin asks the user; tests replace it.
"""

from __future__ import annotations

import weakref
from typing import Any, Hashable

import numpy as np
from qtpy.QtCore import QObject, Signal

from ..corrections import Pair
from ..state import EditsWouldBeLost, ImageState, StateEvent, ViewerState
from ._history import HistoryWatcher, pairs_in_history_item
from ._jobs import LayerSnapshot, PredictionOutput
from ._layer_binding import LayerBinding, layer_snapshot, vector_style
from ._napari_compat import unwrap
from ._runner import JobRunner

__all__ = ["EditsWouldBeLost", "Session", "ask", "get_session", "get_state", "layer_snapshot",
           "pairs_in_history_item", "unwrap", "vector_style"]


def ask(parent: Any, title: str, text: str) -> bool:
    """Ask a yes/no question (default No); True when the user says yes."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox.question(parent, title, text,
                               QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                               QMessageBox.StandardButton.No)
    return box == QMessageBox.StandardButton.Yes


class Session(QObject):
    """See module docstring. ``changed(key, what)`` is emitted on the GUI thread after each state change
    (``what``: a :class:`~..state.StateEvent`)."""

    changed = Signal(object, object)

    def __init__(self, viewer: Any):
        super().__init__()
        self.state = ViewerState()
        self.runner = JobRunner(self.state, self)
        self.binding = LayerBinding(viewer, self.state)
        self.history = HistoryWatcher(self.state, self.segmentation_layer)
        self.state.subscribe(self._on_state)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.layers.selection.events.active.connect(self._on_active_layer)

    @property
    def viewer(self):
        return self.binding.viewer

    @property
    def layers(self) -> dict[Hashable, dict[str, Any]]:
        """key -> {"image": layer, "segmentation": layer, "motion": layer}."""
        return self.binding.layers

    # -- keys and layers (see LayerBinding) -------------------------------------------------------
    key_of = staticmethod(LayerBinding.key_of)

    def image_layer(self, key: Hashable):
        return self.binding.layer(key, "image")

    def segmentation_layer(self, key: Hashable | None = None):
        return self.binding.layer(self.state.active if key is None else key, "segmentation")

    def motion_layer(self, key: Hashable | None = None):
        return self.binding.layer(self.state.active if key is None else key, "motion")

    def key_for_layer(self, layer) -> Hashable | None:
        """The image key of an image, segmentation or motion layer (``None`` if not the plugin's)."""
        return self.binding.key_for_layer(layer)

    def image(self, key: Hashable | None = None) -> ImageState | None:
        return self.state.image(self.state.active if key is None else key)

    def show_arrows(self, key: Hashable, vectors: np.ndarray, magnitudes: np.ndarray, mode: str) -> None:
        """Replace the arrows of ``key`` (another arrow mode)."""
        self.binding.show_arrows(key, vectors, magnitudes, mode)

    def go_to(self, key: Hashable, t: int, z: int) -> None:
        """Move the viewer's time and slice sliders to frame ``t``, slice ``z`` of image ``key``."""
        self.binding.go_to(key, t, z)

    def current_pair(self, key: Hashable | None = None) -> Pair | None:
        """The (frame, slice) the viewer shows, in the image's index space."""
        return self.binding.current_pair(self.state.active if key is None else key)

    # -- edits (see HistoryWatcher) -----------------------------------------------------------------
    def flush(self, key: Hashable | None = None) -> None:
        """Check the slices painted since the last check (runs right after each paint)."""
        self.history.flush(key)

    def sync(self, key: Hashable | None = None) -> None:
        """Bring the provenance up to date with napari's undo/redo (cheap: touched slices only)."""
        self.history.sync(key)

    def write_slices(self, key: Hashable, updates: dict[Pair, np.ndarray]) -> None:
        """Write ``{(t, z): labels (Y, X)}`` into the image's labels as ONE napari undo step."""
        self.history.write_slices(key, updates)

    def undo(self, key: Hashable | None = None) -> None:
        """napari's Undo on the image's segmentation layer (what Ctrl+Z does), then re-check."""
        self.history.undo(key)

    # -- events ---------------------------------------------------------------------------------
    def _on_state(self, state, key, what) -> None:
        self.changed.emit(key, what)

    def _on_active_layer(self, event=None) -> None:
        viewer = self.viewer
        layer = viewer.layers.selection.active if viewer is not None else None
        key = self.key_for_layer(layer) if layer is not None else None
        if key is not None and self.state.image(key) is not None:
            self.state.set_active(key)

    def _on_layer_removed(self, event) -> None:
        layer = getattr(event, "value", None)
        key = self.key_for_layer(layer)
        if key is None:
            return
        group = self.layers[key]
        if group.get("segmentation") is layer:
            self.history.unwatch(key)
        if group.get("image") is layer and self.segmentation_layer(key) is None and not self.runner.is_running(key):
            # the image and its labels are gone: nothing left to protect
            self.layers.pop(key, None)
            self.state.remove(key)

    def close(self) -> None:
        """Drop every layer connection (the viewer is closing)."""
        self.history.close()
        self.runner.cancel()

    # -- landing predictions ----------------------------------------------------------------------
    def prepare_steps(self, key: Hashable, snapshot: LayerSnapshot):
        """While a Run works (GUI thread, one step per event-loop turn): create the empty segmentation and
        motion layers a first result of ``key`` will fill (see :meth:`LayerBinding.add_placeholder`)."""
        for kind in ("segmentation", "motion"):
            if self.binding.add_placeholder(key, kind, snapshot):
                yield

    def drop_placeholders(self, key: Hashable) -> None:
        """Remove the empty layers :meth:`prepare_steps` made for ``key`` (no result will fill them)."""
        self.binding.drop_placeholders(key)

    def land(self, key: Hashable, image_layer, out: PredictionOutput, arrow_mode: str,
             parent: Any = None, snapshot: LayerSnapshot | None = None) -> bool:
        """Show a prediction for ``key`` now (all of :meth:`land_steps` at once); returns its value."""
        steps = self.land_steps(key, image_layer, out, arrow_mode, parent, snapshot)
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return bool(stop.value)

    def land_steps(self, key: Hashable, image_layer, out: PredictionOutput, arrow_mode: str,
                   parent: Any = None, snapshot: LayerSnapshot | None = None):
        """Show a prediction for ``key`` (GUI thread), as a generator of three steps — labels, arrows, then
        telling the panels — so the runner lets the GUI breathe (and draw) in between: napari's creation of
        a layer is the largest single piece, and each gets an event-loop turn of its own. Corrections are
        kept; its value (``StopIteration``) is False when the user declined to discard edits (nothing
        changed then)."""
        self.sync(key)
        r = out.result
        loss = self.state.loss_if_applied(key, r.labels.shape)
        if loss is not None and not ask(parent, "Discard edits?", f"{loss}\n\nShow the new result anyway?"):
            self.drop_placeholders(key)
            return False
        scale = snapshot.scale if snapshot is not None else self.state.image(key).scale
        translate = snapshot.translate if snapshot is not None else self.state.image(key).translate
        name = snapshot.name if snapshot is not None else None
        img = self.state.image(key, name, create=True)
        old_labels = img.labels
        with self.history.writing():
            img = self.state.apply_prediction(
                key, r, cine=out.cine, name=name, scale=scale, translate=translate,
                model_path=out.model_path, model_metadata=out.model_meta, arrow_mode=arrow_mode,
                discard=loss is not None, shown=out.extra.pop("shown", None))
            group = self.layers.setdefault(key, {})
            if image_layer is not None:
                group["image"] = image_layer
            meta = result_metadata(out, img.name)
            group["segmentation"] = self.binding.put_segmentation(key, img, meta,
                                                                  replaced=old_labels is not img.labels)
        self.history.forget_painted(key)
        self.history.watch(key, group["segmentation"])
        yield
        with self.history.writing():
            group["motion"] = self.binding.put_motion(key, out.vectors, out.magnitudes,
                                                      dict(meta, arrow_mode=arrow_mode))
        yield
        self.state.notify(key, StateEvent.RESULT)
        return True


def result_metadata(out: PredictionOutput, source_layer: str) -> dict[str, Any]:
    """The metadata of a result's segmentation and motion layers (ED/ES, model, geometry)."""
    r = out.result
    return {
        "ed_frame": r.ed_frame, "es_frame": r.es_frame,
        "model": out.model_meta.get("name", ""), "model_version": out.model_meta.get("version", ""),
        "source_layer": source_layer, "affine": out.cine.affine.copy(), "spacing": tuple(out.cine.spacing),
        "frame_interval_ms": out.cine.frame_interval_ms,
    }


_SESSIONS: "weakref.WeakKeyDictionary[Any, Session]" = weakref.WeakKeyDictionary()


def get_session(viewer: Any) -> Session:
    """The :class:`Session` of ``viewer`` (created on first use; freed with the viewer).

    A panel's proxy of the viewer (see :func:`unwrap`) gets the session of the viewer behind it.
    """
    viewer = unwrap(viewer)
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = Session(viewer)
    return session


def get_state(viewer: Any) -> ViewerState:
    """The :class:`~..state.ViewerState` of ``viewer``."""
    return get_session(viewer).state
