"""Watching napari's edits of the segmentation layers (GUI thread only): which (frame, slice) pairs the
user painted, undid or redid, reported to the :class:`~..state.ViewerState` as edits.

A ``paint`` event updates the provenance of the painted slices only (from the event's history atoms —
cheap); a ``set_data`` event (undo/redo) re-checks the slices of the history items at the top of the
undo and redo stacks; a ``data`` event (``layer.data = ...`` from outside) adopts the array when it
fits. The plugin's own writes (:meth:`HistoryWatcher.write_slices`, landing a result inside
:meth:`HistoryWatcher.writing`) are not edits, and go through the layer's own history
(``block_history`` + ``data_setitem``) so napari's Undo (Ctrl+Z) undoes them in one step.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Hashable, Iterable, Iterator

import numpy as np
from qtpy.QtCore import QTimer

from ..corrections import Pair
from ..state import ViewerState
from . import _napari_compat


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


def history_stacks(layer) -> tuple[Any, Any]:
    """napari's ``(undo, redo)`` stacks of a Labels layer, ``(None, None)`` when napari hides them."""
    return (_napari_compat.napari_private(layer, "_undo_history"),
            _napari_compat.napari_private(layer, "_redo_history"))


def history_signature(layer) -> tuple:
    """A cheap fingerprint of a layer's undo/redo stacks (``()`` when unknown)."""
    if layer is None:
        return ()
    undo, redo = history_stacks(layer)
    if undo is None or redo is None:
        return ()
    return (len(undo), len(redo), id(undo[-1]) if undo else 0, id(redo[-1]) if redo else 0)


class HistoryWatcher:
    """Turns napari's edit events on each image's segmentation layer into ``state.note_edits`` calls.

    ``segmentation_layer(key)`` returns the image's Labels layer (or ``None``).
    """

    def __init__(self, state: ViewerState, segmentation_layer: Callable[[Hashable], Any]):
        self.state = state
        self._segmentation_layer = segmentation_layer
        self._connections: dict[Hashable, list[tuple[Any, Callable]]] = {}
        self._seen: dict[Hashable, tuple] = {}
        self._writing = False
        self._pending: dict[Hashable, set[Pair]] = {}
        self._painted: dict[Hashable, set[Pair]] = {}  # slices painted since the last result, per image

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """The plugin writes the layers: events in this block are not the user's edits."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False

    def watch(self, key: Hashable, layer) -> None:
        """Listen to ``layer``'s edits as image ``key``'s."""
        self.unwatch(key)
        conns = []
        for name, cb in (("paint", lambda e, k=key: self.on_paint(k, e)),
                         ("set_data", lambda e, k=key: self.on_set_data(k)),
                         ("data", lambda e, k=key: self.on_data(k))):
            emitter = getattr(layer.events, name)
            emitter.connect(cb)
            conns.append((emitter, cb))
        self._connections[key] = conns
        self._seen[key] = history_signature(layer)

    def forget_painted(self, key: Hashable) -> None:
        """A new result for ``key``: nothing has been painted since."""
        self._painted[key] = set()

    def unwatch(self, key: Hashable) -> None:
        """Stop listening to image ``key``'s layer."""
        for emitter, cb in self._connections.pop(key, []):
            try:
                emitter.disconnect(cb)
            except (TypeError, RuntimeError, ValueError):
                pass

    def close(self) -> None:
        """Drop every layer connection."""
        for key in list(self._connections):
            self.unwatch(key)

    def on_paint(self, key: Hashable, event) -> None:
        """A ``paint`` event: note its slices once napari has written the voxels."""
        if self._writing:
            return
        layer = self._segmentation_layer(key)
        self._seen[key] = history_signature(layer)
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

    def on_set_data(self, key: Hashable) -> None:
        """Undo/redo (or a refresh): re-check the slices of the history items that may just have moved."""
        if self._writing:
            return
        self.sync(key)

    def sync(self, key: Hashable | None = None) -> None:
        """Bring the provenance up to date with napari's undo/redo (cheap: touched slices only)."""
        key = self.state.active if key is None else key
        self.flush(key)
        layer = self._segmentation_layer(key)
        if layer is None:
            return
        sig = history_signature(layer)
        if sig and sig == self._seen.get(key):
            return
        self._seen[key] = sig
        undo, redo = history_stacks(layer)
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

    def on_data(self, key: Hashable) -> None:
        """``layer.data = ...`` from outside the plugin: adopt the array if it fits, then compare all."""
        if self._writing:
            return
        layer = self._segmentation_layer(key)
        img = self.state.image(key)
        if layer is None or img is None or img.labels is None:
            return
        data = layer.data
        if isinstance(data, np.ndarray) and data.shape == img.labels.shape and data.dtype == np.uint8:
            img.labels = data
            self.state.note_edits(key)

    def write_slices(self, key: Hashable, updates: dict[Pair, np.ndarray]) -> None:
        """Write ``{(t, z): labels (Y, X)}`` into the image's labels as ONE napari undo step."""
        img = self.state.image(key)
        layer = self._segmentation_layer(key)
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
            self._seen[key] = history_signature(layer)

    def undo(self, key: Hashable | None = None) -> None:
        """napari's Undo on the image's segmentation layer (what Ctrl+Z does), then re-check."""
        key = self.state.active if key is None else key
        layer = self._segmentation_layer(key)
        if layer is not None:
            layer.undo()
            self.sync(key)
