"""The per-viewer binding of the :class:`~..state.ViewerState` to napari layers (GUI thread only).

One :class:`Session` per viewer (:func:`get_session`), shared by every panel, so painting is tracked,
and re-runs keep corrections, whichever panels are open. It

* keys each image by its image layer's ``unique_id`` and gives it its own ``segmentation`` and
  ``motion`` layers (a second image gets ``segmentation (name)``): running on another image never
  touches the first one's labels;
* routes every prediction through :meth:`~..state.ViewerState.apply_prediction` (:meth:`land`), asking
  the user first (:func:`ask`) when edits would be lost;
* watches each segmentation layer: a ``paint`` event updates the provenance of the painted slices only
  (from the event's history atoms — cheap); a ``set_data`` event (undo/redo) re-checks the slices of
  the history items at the top of the undo and redo stacks; connections are dropped when the layer
  is removed or replaced;
* writes propagations and reverts through the layer's own history (``block_history`` +
  ``data_setitem``), so napari's Undo (Ctrl+Z) undoes them in one step;
* owns the one :class:`~._runner.JobRunner`.

:func:`ask` (a Qt question box) is the only place the plugin asks the user; tests replace it.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from typing import Any, Callable, Hashable, Iterable

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from ..conventions import AXIS_LABELS, MOTION_LAYER, SEGMENTATION_LAYER
from ..corrections import Pair
from ..state import EditsWouldBeLost, ImageState, ViewerState
from ._jobs import LayerSnapshot, PredictionOutput
from ._runner import JobRunner


def ask(parent: Any, title: str, text: str) -> bool:
    """Ask a yes/no question (default No); True when the user says yes."""
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox.question(parent, title, text,
                               QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                               QMessageBox.StandardButton.No)
    return box == QMessageBox.StandardButton.Yes


def unwrap(obj: Any) -> Any:
    """The napari object behind the public-only proxy napari hands to plugin widgets (else ``obj``).

    napari's Plugins menu gives each dock widget its own ``PublicOnlyProxy`` of the viewer, and every
    layer read through it is a fresh proxy: two panels (or two reads) never see the same object, so the
    session's identity checks (``key_for_layer``) would miss. The panels and the session therefore work
    on the objects behind the proxies, exactly as they do when made directly (tests, the benchmarks).
    """
    try:
        from wrapt import ObjectProxy
    except ImportError:  # pragma: no cover - napari depends on wrapt
        return obj
    while isinstance(obj, ObjectProxy):
        obj = obj.__wrapped__
    return obj


def _private(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.<name>`` for one of napari's private attributes, or ``default`` once napari drops it.

    Used for the Labels undo/redo stacks (to know which slices an undo touched), resetting them after a
    new prediction, and batching a Vectors update into one refresh; each use has a fallback.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return getattr(obj, name, default)


def pairs_in_history_item(item: Iterable[Any]) -> set[Pair]:
    """(frame, slice) pairs touched by a napari Labels history item (a list of atoms).

    Handles both atom forms: ``_MaskedPaintAtom`` (``slice_key`` of slices) and the legacy
    ``(indices, old, new)`` fancy-index tuple. Only 4D ``(T, Z, Y, X)`` items are meaningful.
    """
    pairs: set[Pair] = set()
    for atom in item or ():
        key = getattr(atom, "slice_key", None)
        if key is not None:
            if len(key) < 4:
                continue
            ts, zs = key[0], key[1]
            t_range = range(ts.start or 0, ts.stop) if isinstance(ts, slice) else [int(ts)]
            z_range = range(zs.start or 0, zs.stop) if isinstance(zs, slice) else [int(zs)]
            pairs.update((int(t), int(z)) for t in t_range for z in z_range)
            continue
        try:
            indices = atom[0]
            if len(indices) < 4:
                continue
            tz = np.unique(np.stack([np.asarray(indices[0]).ravel(), np.asarray(indices[1]).ravel()], 1), axis=0)
            pairs.update((int(t), int(z)) for t, z in tz)
        except (TypeError, IndexError, ValueError):
            continue
    return pairs


def layer_snapshot(layer) -> LayerSnapshot:
    """What a job needs from an image layer (read on the GUI thread)."""
    meta = dict(layer.metadata or {})
    scale = tuple(float(s) for s in layer.scale)
    translate = tuple(float(s) for s in layer.translate)
    if layer.ndim == 3:
        scale, translate = (1.0, *scale), (0.0, *translate)
    spacing = tuple(float(s) for s in meta.get("spacing", scale[-3:]))
    affine = meta.get("affine")
    if affine is None:
        dz, dy, dx = spacing
        affine = np.diag([dx, dy, dz, 1.0])
    return LayerSnapshot(
        data=layer.data, name=layer.name, scale=scale, translate=translate, spacing=spacing,  # type: ignore[arg-type]
        frame_interval_ms=float(meta.get("frame_interval_ms", 0.0) or 0.0), affine=np.asarray(affine, float),
    )


class Session(QObject):
    """See module docstring. ``changed(key, what)`` is emitted on the GUI thread after each state change."""

    changed = Signal(object, str)

    def __init__(self, viewer: Any):
        super().__init__()
        self._viewer_ref = weakref.ref(viewer)
        self.state = ViewerState()
        self.runner = JobRunner(self.state, self)
        #: key -> {"image": layer, "segmentation": layer, "motion": layer}
        self.layers: dict[Hashable, dict[str, Any]] = {}
        self._connections: dict[Hashable, list[tuple[Any, Callable]]] = {}
        self._history_seen: dict[Hashable, tuple] = {}
        self._writing = False
        self._pending: dict[Hashable, set[Pair]] = {}
        self._painted: dict[Hashable, set[Pair]] = {}  # slices painted since the last result, per image
        self.state.subscribe(self._on_state)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.layers.selection.events.active.connect(self._on_active_layer)

    @property
    def viewer(self):
        return self._viewer_ref()

    # -- keys and layers ------------------------------------------------------------------------
    @staticmethod
    def key_of(image_layer) -> Hashable:
        return unwrap(image_layer).unique_id

    def image_layer(self, key: Hashable):
        return self._layer(key, "image")

    def segmentation_layer(self, key: Hashable | None = None):
        return self._layer(self.state.active if key is None else key, "segmentation")

    def motion_layer(self, key: Hashable | None = None):
        return self._layer(self.state.active if key is None else key, "motion")

    def _layer(self, key, kind):
        layer = self.layers.get(key, {}).get(kind)
        viewer = self.viewer
        return layer if layer is not None and viewer is not None and layer in viewer.layers else None

    def key_for_layer(self, layer) -> Hashable | None:
        """The image key of an image, segmentation or motion layer (``None`` if not the plugin's)."""
        layer = unwrap(layer)
        for key, group in self.layers.items():
            if any(v is layer for v in group.values()):
                return key
        return None

    def image(self, key: Hashable | None = None) -> ImageState | None:
        return self.state.image(self.state.active if key is None else key)

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
            self._disconnect(key)
        if group.get("image") is layer and self.segmentation_layer(key) is None and not self.runner.is_running(key):
            # the image and its labels are gone: nothing left to protect
            self.layers.pop(key, None)
            self.state.remove(key)

    def _connect(self, key: Hashable, layer) -> None:
        self._disconnect(key)
        conns = []
        for name, cb in (("paint", lambda e, k=key: self._on_paint(k, e)),
                         ("set_data", lambda e, k=key: self._on_set_data(k)),
                         ("data", lambda e, k=key: self._on_data(k))):
            emitter = getattr(layer.events, name)
            emitter.connect(cb)
            conns.append((emitter, cb))
        self._connections[key] = conns
        self._history_seen[key] = self._history_signature(layer)

    def _disconnect(self, key: Hashable) -> None:
        for emitter, cb in self._connections.pop(key, []):
            try:
                emitter.disconnect(cb)
            except (TypeError, RuntimeError, ValueError):
                pass

    def close(self) -> None:
        """Drop every layer connection (the viewer is closing)."""
        for key in list(self._connections):
            self._disconnect(key)
        self.runner.cancel()

    def _on_paint(self, key: Hashable, event) -> None:
        if self._writing:
            return
        layer = self.segmentation_layer(key)
        self._history_seen[key] = self._history_signature(layer)
        pairs = pairs_in_history_item(getattr(event, "value", None))
        self._painted.setdefault(key, set()).update(pairs)
        if pairs:  # napari emits `paint` before it writes the voxels: check once it has returned
            pending = self._pending.setdefault(key, set())
            if not pending:
                QTimer.singleShot(0, lambda k=key: self.flush(k))
            pending |= pairs

    def flush(self, key: Hashable | None = None) -> None:
        """Check the slices painted since the last check (runs right after each paint)."""
        keys = list(self._pending) if key is None else [key]
        for k in keys:
            pairs = self._pending.pop(k, set())
            if pairs:
                self.state.note_edits(k, pairs)

    @staticmethod
    def _history_signature(layer) -> tuple:
        if layer is None:
            return ()
        undo, redo = _private(layer, "_undo_history"), _private(layer, "_redo_history")
        if undo is None or redo is None:
            return ()
        return (len(undo), len(redo), id(undo[-1]) if undo else 0, id(redo[-1]) if redo else 0)

    def _on_set_data(self, key: Hashable) -> None:
        """Undo/redo (or a refresh): re-check the slices of the history items that may just have moved."""
        if self._writing:
            return
        self.sync(key)

    def sync(self, key: Hashable | None = None) -> None:
        """Bring the provenance up to date with napari's undo/redo (cheap: touched slices only)."""
        key = self.state.active if key is None else key
        self.flush(key)
        layer = self.segmentation_layer(key)
        if layer is None:
            return
        sig = self._history_signature(layer)
        if sig and sig == self._history_seen.get(key):
            return
        self._history_seen[key] = sig
        undo, redo = _private(layer, "_undo_history"), _private(layer, "_redo_history")
        pairs: set[Pair] = set(self._painted.get(key, ()))  # napari without public history: every
        if undo is not None and redo is not None:            # slice painted since the last result
            pairs = set()
            for stack in (undo, redo):
                if stack:
                    pairs |= pairs_in_history_item(stack[-1])
        img = self.state.image(key)
        if img is not None and img.tracker is not None:
            pairs |= set(img.tracker.kinds)
        if pairs:
            self.state.note_edits(key, pairs)

    def _on_data(self, key: Hashable) -> None:
        """``layer.data = ...`` from outside the plugin: adopt the array if it fits, then compare all."""
        if self._writing:
            return
        layer = self.segmentation_layer(key)
        img = self.state.image(key)
        if layer is None or img is None or img.labels is None:
            return
        data = layer.data
        if isinstance(data, np.ndarray) and data.shape == img.labels.shape and data.dtype == np.uint8:
            img.labels = data
            self.state.note_edits(key)

    # -- landing predictions ----------------------------------------------------------------------
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
            return False
        scale = snapshot.scale if snapshot is not None else self.state.image(key).scale
        translate = snapshot.translate if snapshot is not None else self.state.image(key).translate
        name = snapshot.name if snapshot is not None else None
        img = self.state.image(key, name, create=True)
        old_labels = img.labels
        self._writing = True
        try:
            img = self.state.apply_prediction(
                key, r, cine=out.cine, name=name, scale=scale, translate=translate,
                model_path=out.model_path, model_metadata=out.model_meta, arrow_mode=arrow_mode,
                discard=loss is not None, shown=out.extra.pop("shown", None))
            group = self.layers.setdefault(key, {})
            if image_layer is not None:
                group["image"] = image_layer
            meta = {
                "ed_frame": r.ed_frame, "es_frame": r.es_frame,
                "model": out.model_meta.get("name", ""), "model_version": out.model_meta.get("version", ""),
                "source_layer": img.name, "affine": out.cine.affine.copy(), "spacing": tuple(out.cine.spacing),
                "frame_interval_ms": out.cine.frame_interval_ms,
            }
            group["segmentation"] = self._put_segmentation(key, img, meta, replaced=old_labels is not img.labels)
        finally:
            self._writing = False
        self._painted[key] = set()
        self._connect(key, group["segmentation"])
        yield
        self._writing = True
        try:
            group["motion"] = self._put_motion(key, out.vectors, out.magnitudes, dict(meta, arrow_mode=arrow_mode))
        finally:
            self._writing = False
        yield
        self.state.notify(key, "result")
        return True

    def _unique_name(self, base: str, image_name: str, current) -> str:
        viewer = self.viewer
        names = {ly.name for ly in viewer.layers if ly is not current}
        return base if base not in names else f"{base} ({image_name})"

    def _put_segmentation(self, key, img: ImageState, meta: dict, replaced: bool):
        """Create or update the image's Labels layer; class names and colours come from the model's
        description (:func:`~..model_description.describe` of the image's model metadata)."""
        from ..layers import segmentation_layer_data
        from ..model_description import describe

        data, kwargs, _ = segmentation_layer_data(img.labels, img.scale, img.translate, meta,
                                                  description=describe(img.model_metadata))
        layer = self.layers.get(key, {}).get("segmentation")
        viewer = self.viewer
        if layer is not None and layer in viewer.layers and layer.ndim == data.ndim:
            if replaced or layer.data is not img.labels:
                layer.data = data
            layer.scale = kwargs["scale"]
            layer.translate = kwargs["translate"]
            layer.metadata = kwargs["metadata"]
            old = getattr(layer, "features", None)
            if old is None or list(old.get("name", [])) != kwargs["features"]["name"]:
                layer.features = kwargs["features"]  # another model: its class names and colours
                layer.colormap = kwargs["colormap"]
            reset = _private(layer, "_reset_history")
            if reset is not None:  # napari's undo must not replay pre-run values
                reset()
            layer.refresh()
            return layer
        if layer is not None and layer in viewer.layers:
            viewer.layers.remove(layer)
        kwargs["name"] = self._unique_name(SEGMENTATION_LAYER, img.name, None)
        return viewer.add_labels(data, axis_labels=AXIS_LABELS, **kwargs)

    @staticmethod
    def vector_style(magnitudes: np.ndarray, step: int) -> dict:
        """Colour limits from the 98th percentile; ``length`` > 1 only when motion is too small to see.

        Arrows are drawn at their true length (``length = 1``) unless the 95th-percentile arrow is
        shorter than ~3/4 of the grid step; then they are lengthened up to ×4 (the layer's ``length``).
        """
        hi = float(np.percentile(magnitudes, 98)) if magnitudes.size else 1.0
        p95 = float(np.percentile(magnitudes, 95)) if magnitudes.size else 0.0
        length = float(np.clip(0.75 * step / max(p95, 1e-6), 1.0, 4.0))
        return {"edge_colormap": "plasma", "edge_contrast_limits": (0.0, max(hi, 0.5)), "length": round(length, 2)}

    def _put_motion(self, key, vectors: np.ndarray, magnitudes: np.ndarray, metadata: dict):
        from ._jobs import ARROW_STEP

        img = self.state.image(key)
        scale, translate = img.scale, img.translate
        style = self.vector_style(magnitudes, ARROW_STEP)
        layer = self._layer(key, "motion")
        viewer = self.viewer
        if layer is not None and layer.ndim == 4:
            # one refresh for the whole update: each setter would otherwise redo the thumbnail and
            # extent over every arrow (~0.2 s each for 200k arrows)
            block_refresh = _private(layer, "_block_refresh")
            block = block_refresh() if block_refresh is not None else contextlib.nullcontext()
            with block:
                layer.data = vectors
                layer.features = {"magnitude": magnitudes}
                if not np.allclose(layer.scale, scale):
                    layer.scale = scale
                if not np.allclose(layer.translate, translate):
                    layer.translate = translate
                layer.metadata = metadata
                layer.edge_color = "magnitude"
                if tuple(layer.edge_contrast_limits) != tuple(style["edge_contrast_limits"]):
                    layer.edge_contrast_limits = style["edge_contrast_limits"]
                if layer.length != style["length"]:
                    layer.length = style["length"]
            layer.refresh()
            return layer
        if layer is not None:
            viewer.layers.remove(layer)
        return viewer.add_vectors(
            vectors, ndim=4, name=self._unique_name(MOTION_LAYER, img.name, None), features={"magnitude": magnitudes},
            edge_color="magnitude", edge_width=0.35 * min(scale[-2:]), vector_style="arrow", projection_mode="none",
            scale=scale, translate=translate, metadata=metadata, opacity=1.0, axis_labels=AXIS_LABELS, **style,
        )

    def show_arrows(self, key: Hashable, vectors: np.ndarray, magnitudes: np.ndarray, mode: str) -> None:
        """Replace the arrows of ``key`` (another arrow mode)."""
        img = self.state.image(key)
        layer = self._layer(key, "motion")
        meta = dict(layer.metadata) if layer is not None else {}
        img.arrow_mode = mode
        self.layers.setdefault(key, {})["motion"] = self._put_motion(key, vectors, magnitudes,
                                                                     dict(meta, arrow_mode=mode))

    # -- writing labels through napari's history ------------------------------------------------
    def write_slices(self, key: Hashable, updates: dict[Pair, np.ndarray]) -> None:
        """Write ``{(t, z): labels (Y, X)}`` into the image's labels as ONE napari undo step."""
        img = self.state.image(key)
        layer = self.segmentation_layer(key)
        self._painted.setdefault(key, set()).update(updates)
        self._writing = True
        try:
            if layer is None or layer.data is not img.labels:
                for p, values in updates.items():
                    img.labels[p] = values
                return
            with layer.block_history():
                for (t, z), values in updates.items():
                    diff = img.labels[t, z] != values
                    if not diff.any():
                        continue
                    yy, xx = np.nonzero(diff)
                    idx = (np.full(yy.size, t), np.full(yy.size, z), yy, xx)
                    layer.data_setitem(idx, np.asarray(values)[yy, xx].astype(np.uint8), refresh=False)
            layer.refresh()
        finally:
            self._writing = False
            self._history_seen[key] = self._history_signature(layer)

    def undo(self, key: Hashable | None = None) -> None:
        """napari's Undo on the image's segmentation layer (what Ctrl+Z does), then re-check."""
        key = self.state.active if key is None else key
        layer = self.segmentation_layer(key)
        if layer is not None:
            layer.undo()
            self.sync(key)

    def go_to(self, key: Hashable, t: int, z: int) -> None:
        """Move the viewer's time and slice sliders to frame ``t``, slice ``z`` of image ``key``."""
        layer = self.segmentation_layer(key) or self.image_layer(key)
        viewer = self.viewer
        if layer is None or viewer is None:
            return
        world = layer.data_to_world((t, z, 0, 0))
        n = viewer.dims.ndim
        for axis, value in zip(range(n - 4, n - 2), world[:2]):
            viewer.dims.set_point(axis, float(value))

    def current_pair(self, key: Hashable | None = None) -> Pair | None:
        """The (frame, slice) the viewer shows, in the image's index space."""
        key = self.state.active if key is None else key
        layer = self.segmentation_layer(key) or self.image_layer(key)
        viewer = self.viewer
        if layer is None or viewer is None or viewer.dims.ndim < 4:
            return None
        point = viewer.dims.point
        data = layer.world_to_data(point[-4:] if len(point) >= 4 else point)
        return int(round(float(data[0]))), int(round(float(data[1])))


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
