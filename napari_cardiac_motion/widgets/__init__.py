"""napari dock widgets, one small panel per file (thin: core logic lives outside ``widgets``).

* :mod:`.run_widget` — "Joint motion and segmentation" (Run / Cancel).
* :mod:`.corrections_widget` — "Corrections and fine-tuning": :mod:`.corrections_panel`,
  :mod:`.finetune_panel`, :mod:`.models_panel` (and :mod:`.loss_plot`).
* :mod:`._session` — the per-viewer binding of :class:`~..state.ViewerState` to layers
  (:func:`get_session`, :func:`get_state`); :mod:`._runner` — the one background-job runner;
  :mod:`._jobs` — the job bodies (no Qt).
"""

from ..state import ImageState, ViewerState
from ._session import Session, get_session, get_state

__all__ = ["ImageState", "Session", "ViewerState", "get_session", "get_state"]
