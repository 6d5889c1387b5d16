"""Panel "Teach the model": fine-tune on the shown image's corrections, in the annotator's words.

The main controls say what they do for the annotator; the machine-learning settings (steps, learning
rate, guard against forgetting) and the loss plot sit under "Advanced". The job
(:func:`._jobs.finetune_job`) trains a private copy of the model on the corrections (painted and
accepted slices only — never unaccepted proposals), saves it in the user's model folder and redraws the
image; the result lands through :meth:`~._session.Session.land`, so corrections are kept.
"Undo teaching" goes back to the previous model and redraws.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..state import StateEvent
from ._jobs import JobProgress, finetune_defaults, finetune_job, repredict_job
from ._session import Session, get_session, unwrap
from .loss_plot import LossPlot

JOB = "fine-tune"
UNDO_JOB = "undo teaching"
GUARD_CHOICES = (("mean teacher (recommended)", "teacher"), ("stay close to the old weights (L2-SP)", "l2sp"),
                 ("none", None))


def _same_tta(img) -> bool | None:
    """Redraw the way the shown result was made: one pass when it was (the Run panel's choice), else the
    model's default."""
    result = getattr(img, "result", None)
    return False if result is not None and result.metadata.get("tta") is False else None


class Collapsible(QWidget):
    """A titled section that opens and closes (closed by default)."""

    def __init__(self, title: str, content: QWidget, parent: QWidget | None = None):
        super().__init__(parent)
        self.toggle = QToolButton()
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setStyleSheet("QToolButton { border: none; }")
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.content = content
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toggle)
        layout.addWidget(content)
        self.toggle.toggled.connect(self.set_open)
        self.set_open(False)

    def set_open(self, open_: bool) -> None:
        self.toggle.setChecked(open_)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)
        self.content.setVisible(open_)


class FinetunePanel(QWidget):
    """Teach the model from the corrections of the shown image; undo; cancel; live loss."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer = unwrap(napari_viewer)  # the viewer, not the Plugins menu's proxy
        self.session: Session = get_session(napari_viewer)
        self.state = self.session.state
        self._key = None
        self.last_outcome: str | None = None
        self.last_history: dict | None = None

        d = finetune_defaults()
        self.explain = QLabel(
            "Teach the model from your corrections: it learns from the slices you painted or accepted, "
            "saves itself as a new model, and redraws the slices you did not correct. Your corrections "
            "stay exactly as they are; Undo teaching returns to the previous model.")
        self.explain.setWordWrap(True)
        self.finetune_button = QPushButton("Teach the model")
        self.finetune_button.setToolTip("Learn from this image's corrections (takes about half a minute on a CPU).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop; the previous model and labels are kept.")
        self.revert_model_button = QPushButton("Undo teaching")
        self.revert_model_button.setToolTip("Go back to the model used before the last teaching and redraw.")
        self.revert_model_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("step %v/%m")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)

        # Advanced: machine-learning settings
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 5000)
        self.steps_spin.setValue(int(d.steps))
        self.steps_spin.setToolTip("Training steps: more learns more from the corrections, takes longer and "
                                   "risks forgetting.")
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1e-1)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(float(d.lr))
        self.lr_spin.setToolTip("Learning rate of the optimiser.")
        self.guard_combo = QComboBox()
        for text, key in GUARD_CHOICES:
            self.guard_combo.addItem(text, key)
        self.guard_combo.setCurrentIndex(max(self.guard_combo.findData(d.guard), 0))
        self.guard_combo.setToolTip("How the model is kept from forgetting what it knew on frames nobody corrected.")
        self.loss_plot = LossPlot()
        adv = QWidget()
        form = QFormLayout(adv)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("steps", self.steps_spin)
        form.addRow("learning rate", self.lr_spin)
        form.addRow("guard", self.guard_combo)
        form.addRow("loss", self.loss_plot)
        self.advanced = Collapsible("Advanced", adv)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.explain)
        row = QHBoxLayout()
        for b in (self.finetune_button, self.cancel_button, self.revert_model_button):
            row.addWidget(b)
        layout.addLayout(row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(self.advanced)

        self.finetune_button.clicked.connect(self.start_finetune)
        self.cancel_button.clicked.connect(self.cancel)
        self.revert_model_button.clicked.connect(self.revert_model)
        self.session.changed.connect(self._on_state_changed)
        self.session.runner.progress.connect(self._on_progress)
        self.session.runner.finished.connect(self._on_finished)
        self._update_buttons()

    # ------------------------------------------------------------------ state

    @property
    def is_running(self) -> bool:
        return self._key is not None and (self.session.runner.is_running(self._key, JOB)
                                          or self.session.runner.is_running(self._key, UNDO_JOB))

    def _on_state_changed(self, key, what: StateEvent) -> None:
        self._update_buttons()

    def _update_buttons(self) -> None:
        img = self.state.current
        ready = img is not None and img.tracker is not None
        idle = ready and img.busy is None
        self.finetune_button.setEnabled(bool(idle and img.corrected))
        self.revert_model_button.setEnabled(bool(idle and img.model_history))
        self.cancel_button.setEnabled(self.is_running and not self.session.runner.cancelling(self._key))
        if ready and not img.corrected and not self.is_running:
            n = len(img.propagated)
            self.finetune_button.setToolTip(
                f"Accept the {n} proposed slice(s) or paint a correction first." if n else
                "Paint a correction on the segmentation first.")
        else:
            self.finetune_button.setToolTip("Learn from this image's corrections.")

    # ------------------------------------------------------------------ actions

    def start_finetune(self) -> None:
        """Fine-tune on the shown image's corrections (painted + accepted) in the background."""
        img = self.state.current
        key = self.state.active
        if img is None or img.tracker is None or img.cine is None:
            self._error("run the model first, then correct some slices.")
            return
        self.session.sync(key)
        if not img.corrected:
            self._error("no correction yet: paint on the segmentation, or accept proposed slices, first.")
            return
        corrections = img.corrections_array()
        device = img.result.device if img.result is not None else "cpu"
        self.loss_plot.set_values([])
        self.last_outcome = None

        def land(out):
            self.state.push_model(key, out.model_path, out.model_meta)
            shown = yield from self.session.land_steps(key, None, out, img.arrow_mode, parent=self)
            if not shown:
                self.state.pop_model(key)
                self.last_outcome = "kept"
                return
            self.last_outcome = "done"
            self.last_history = out.history
            h = out.history or {}
            name = out.model_meta.get("name", "")
            self._status(f"Taught in {h.get('seconds', 0):.0f} s; new model '{name}' saved and used; "
                         f"{len(img.corrected)} corrected slice(s) kept.")

        started = self.session.runner.start(
            key, JOB, finetune_job, img.cine, corrections, str(img.model_path) if img.model_path else None,
            device, img.ed_frame, self.steps_spin.value(), self.lr_spin.value(), self.guard_combo.currentData(),
            img.arrow_mode, name=img.name, on_result=land, on_error=self._on_error,
            progress_label=f"Cardiac motion: teaching on {img.name}", tta=_same_tta(img))
        if started:
            self._key = key
            self.progress_bar.setRange(0, self.steps_spin.value())
            self.progress_bar.setValue(0)
            self._status(f"Learning from {len(img.corrected)} corrected slice(s)…")
            self._update_buttons()

    def revert_model(self) -> None:
        """Back to the model used before the last teaching; redraw (corrections kept)."""
        img = self.state.current
        key = self.state.active
        if img is None or not img.model_history or img.busy:
            return
        prev_path, _ = img.model_history[-1]
        device = img.result.device if img.result is not None else "cpu"
        self.last_outcome = None

        def land(out):
            restored = self.state.pop_model(key)
            shown = yield from self.session.land_steps(key, None, out, img.arrow_mode, parent=self)
            if not shown:
                if restored is not None:
                    self.state.push_model(key, *restored)
                self.last_outcome = "kept"
                return
            self.last_outcome = "done"
            self._status(f"Back to model '{out.model_meta.get('name', 'default')}'.")

        started = self.session.runner.start(
            key, UNDO_JOB, repredict_job, img.cine, str(prev_path) if prev_path else None, device,
            img.ed_frame, img.arrow_mode, name=img.name, on_result=land, on_error=self._on_error, tta=_same_tta(img))
        if started:
            self._key = key
            self.progress_bar.setRange(0, 0)
            self._status("Redrawing with the previous model…")
            self._update_buttons()

    def cancel(self) -> None:
        if self.is_running:
            self.session.runner.cancel(self._key)
            self._status("Cancelling at the next step…")
            self._update_buttons()

    def _on_progress(self, key, step: int, total: int, info: JobProgress) -> None:
        if key != self._key or not self.is_running or info.losses is None:
            return
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(step)
        loss = float(info.losses.get("total", float("nan")))
        self.loss_plot.add(loss)
        if step >= total:
            self._status("Redrawing the image with the new model…")
        elif not self.session.runner.cancelling(key):
            self._status(f"Learning: step {step}/{total}.")

    def _on_error(self, outcome: str, error: BaseException) -> None:
        from napari.utils.notifications import show_info

        from ._runner import user_message

        self.last_outcome = outcome
        if outcome == "cancelled":
            self._status("Cancelled; the previous model is kept.")
            show_info("Cardiac motion: teaching cancelled; the previous model is kept.")
        else:
            self._error(user_message(error))

    def _on_finished(self, key, job: str, outcome: str) -> None:
        if key == self._key:
            if self.last_outcome is None:
                self.last_outcome = outcome
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1 if self.last_outcome == "done" else 0)
        self._update_buttons()

    def _status(self, text: str) -> None:
        self.status_label.setText(text)

    def _error(self, msg: str) -> None:
        from napari.utils.notifications import show_error

        self._status(f"Error: {msg}")
        show_error(f"Cardiac motion: {msg}")
