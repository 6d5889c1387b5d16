"""napari dock widgets. Thin: they wire core functions (inference, layers) to layers and worker threads.

* :mod:`.run_widget` — :class:`RunWidget`, "Joint motion and segmentation".
* :mod:`._state` — :class:`ViewerState` / :func:`get_state`, the per-viewer state panels share.
"""

from ._state import ViewerState, get_state

__all__ = ["ViewerState", "get_state"]
