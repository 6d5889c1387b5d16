"""Dock widget "Corrections and fine-tuning": three small panels stacked.

* :class:`~.corrections_panel.CorrectionsPanel` — edited slices, revert, propagate, accept, undo, save/load;
* :class:`~.finetune_panel.FinetunePanel` — teach the model from the corrections (Advanced: ML settings);
* :class:`~.models_panel.ModelsPanel` — saved models: use, delete.

All three share the viewer's :class:`~._session.Session`; painting is tracked whether or not this
widget is open.
"""

from __future__ import annotations

from qtpy.QtWidgets import QFrame, QWidget

from .corrections_panel import CorrectionsPanel
from .finetune_panel import FinetunePanel
from ._scroll import scrolling_layout
from ._session import unwrap
from .models_panel import ModelsPanel


def _line() -> QFrame:
    line = QFrame()
    line.setFrameShape(QFrame.Shape.HLine)
    return line


class CorrectionsWidget(QWidget):
    """Corrections, teaching (fine-tuning) and saved models for the image shown."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer = unwrap(napari_viewer)  # the viewer, not the Plugins menu's proxy
        self.corrections = CorrectionsPanel(napari_viewer)
        self.finetune = FinetunePanel(napari_viewer)
        self.models = ModelsPanel(napari_viewer)
        self.session = self.corrections.session
        self.state = self.session.state
        layout = scrolling_layout(self)  # the three panels scroll when the dock area is short
        for i, panel in enumerate((self.corrections, self.finetune, self.models)):
            if i:
                layout.addWidget(_line())
            layout.addWidget(panel)
        layout.addStretch(1)
        self.session.runner.finished.connect(self._on_finished)

    def _on_finished(self, key, job: str, outcome: str) -> None:
        if job == "fine-tune" and outcome == "done":
            self.models.refresh()

    # conveniences (used by tests and scripts)
    @property
    def corrected(self):
        return self.corrections.corrected

    @property
    def propagated(self):
        return self.corrections.propagated

    def select_pair(self, t: int, z: int) -> None:
        self.corrections.select_pair(t, z)

    @property
    def propagate_button(self):
        return self.corrections.propagate_button

    @property
    def revert_button(self):
        return self.corrections.revert_button

    @property
    def steps_spin(self):
        return self.finetune.steps_spin

    @property
    def finetune_button(self):
        return self.finetune.finetune_button

    @property
    def is_running(self) -> bool:
        return self.session.runner.is_running(self.state.active)
