"""Per-viewer state shared by the plugin's panels (Run, Corrections, ...).

One :class:`ViewerState` per napari viewer, obtained with :func:`get_state`. The Run panel fills it
when a prediction lands (on the GUI thread); other panels read it and may subscribe to be told when a
new result arrives::

    state = get_state(viewer)
    state.subscribe(lambda s: ...)        # called on the GUI thread after every successful run
    if state.has_result:
        edited = state.segmentation_layer.data        # what the user painted (edited in place)
        diff = edited != state.predicted_labels        # the model's own prediction, never painted
        cine = state.cine                              # image (T, Z, Y, X) + spacing, affine, interval

Nothing here touches Qt; only GUI-thread code should mutate a state.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..cine import Cine
from ..inference import InferenceResult

Listener = Callable[["ViewerState"], None]


@dataclass
class ViewerState:
    """What the plugin knows about one viewer.

    Attributes:
        image_layer: the napari Image layer the last run used (captured when Run was pressed).
        cine: that image as a :class:`Cine` — data ``(T, Z, Y, X)`` (a 3D image is ``T = 1``), spacing
            ``(dz, dy, dx)`` mm, frame interval, affine (from the layer's metadata when the plugin's
            reader made it, else from its scale).
        scale, translate: the image layer's ``(T, Z, Y, X)`` scale and translate, used by the outputs.
        model_path: the checkpoint used (``None`` = the shipped default).
        model_metadata: the checkpoint's metadata (``name``, ``version``, ``path``, ...).
        result: the last :class:`InferenceResult` (labels, motion, ED/ES frames, device, seconds).
        predicted_labels: a private copy of ``result.labels`` — the Labels layer's array is painted in
            place, so diff the layer against this copy to find the user's corrections.
        segmentation_layer, motion_layer: the output layers of the last run (may have been deleted
            by the user since: check ``layer in viewer.layers``).
        arrow_mode: ``"from_ed"`` or ``"frame_to_frame"`` (see :func:`..layers.motion_vectors`).
    """

    image_layer: Any = None
    cine: Cine | None = None
    scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    translate: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    model_path: Path | None = None
    model_metadata: dict[str, Any] = field(default_factory=dict)
    result: InferenceResult | None = None
    predicted_labels: np.ndarray | None = None
    segmentation_layer: Any = None
    motion_layer: Any = None
    arrow_mode: str = "from_ed"
    _listeners: list[Listener] = field(default_factory=list, repr=False)

    @property
    def has_result(self) -> bool:
        return self.result is not None

    @property
    def ed_frame(self) -> int | None:
        return None if self.result is None else self.result.ed_frame

    @property
    def es_frame(self) -> int | None:
        return None if self.result is None else self.result.es_frame

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(state)`` after each new result (GUI thread)."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def notify(self) -> None:
        """Tell the subscribers that the state changed (a listener's error does not stop the others)."""
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception as exc:  # a broken panel must not break the Run panel
                import logging

                logging.getLogger(__name__).exception("state listener %r failed: %s", listener, exc)


_STATES: "weakref.WeakKeyDictionary[Any, ViewerState]" = weakref.WeakKeyDictionary()


def get_state(viewer: Any) -> ViewerState:
    """The :class:`ViewerState` of ``viewer`` (created on first use; freed with the viewer)."""
    state = _STATES.get(viewer)
    if state is None:
        state = ViewerState()
        _STATES[viewer] = state
    return state
