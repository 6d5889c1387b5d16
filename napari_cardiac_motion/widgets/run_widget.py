"""Dock widget "Joint motion and segmentation": choose image, model, device; Run / Cancel.

Thin: :meth:`RunWidget.run` captures the chosen layer on the GUI thread and hands
:func:`._jobs.predict_job` to the viewer's one :class:`~._runner.JobRunner` (busy images are refused);
the result lands through :meth:`~._session.Session.land`, which keeps the user's corrections and asks
before anything would be lost. Results go to the layer captured at Run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..devices import available_devices
from ..layers import ARROW_MODES, cine_arrow_step
from ..state import StateEvent
from ._jobs import JobProgress, arrows_job, predict_job, warm_imports
from ._session import Session, get_session, layer_snapshot, unwrap
from ._combo import refill_combo
from ._run_choices import BROWSE_LABEL, DEFAULT_MODEL_LABEL, ECHO_MODEL_LABEL  # noqa: F401 (the combo's labels)
from ._run_choices import (echo_model_available, image_layers, is_echo_layer, mirror_checkbox, model_entries,
                           show_mirror_choice, user_model_dir, why_not_offered)

JOB = "run"


class RunWidget(QWidget):
    """Run the joint model on an image layer and show its ``segmentation`` + ``motion`` layers."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer = unwrap(napari_viewer)  # the viewer, not the Plugins menu's proxy
        self.session: Session = get_session(napari_viewer)
        self.state = self.session.state
        self._run_key = None
        #: "done" | "cancelled" | "error" | "kept" | None — outcome of the last run started here
        self.last_outcome: str | None = None
        self._layers: list = []
        #: the user chose a model (combobox, Browse, :meth:`set_model_path`): no automatic echo/MR choice after
        self._model_chosen = False

        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The cine to segment: axes t, z, y, x (a 3D image is one frame).")
        self.model_combo = QComboBox()
        self.model_combo.setToolTip(f"Shipped model, your fine-tuned models ({user_model_dir()}), or any .pt file. "
                                    "Until you choose one, an echo clip gets the shipped echo model.")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *available_devices()])
        self.ed_spin = QSpinBox()
        self.ed_spin.setMinimum(-1)
        self.ed_spin.setSpecialValueText("auto")
        self.ed_spin.setValue(-1)
        self.ed_spin.setToolTip("End-diastolic frame (as on the t slider); auto = largest LV blood pool.")
        self.arrow_combo = QComboBox()
        for key, text in ARROW_MODES.items():
            self.arrow_combo.addItem(text, key)
        self.arrow_combo.setToolTip("from ED: arrow from where the tissue was at ED to where it is now.\n"
                                    "frame to frame: from where it was in the previous frame.")
        self.tta_check = mirror_checkbox()
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status_label = QLabel("Choose an image layer and press Run.")
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.layer_combo)
        form.addRow("model", self.model_combo)
        form.addRow("device", self.device_combo)
        form.addRow("ED frame", self.ed_spin)
        form.addRow("arrows", self.arrow_combo)
        form.addRow("accuracy", self.tta_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        # no taller than its content: the space below goes to the panels docked under it
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

        self._populate_models()
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.model_combo.activated.connect(self._on_model_activated)
        self.arrow_combo.currentIndexChanged.connect(self._on_arrow_mode_changed)
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        self.session.changed.connect(self._on_state_changed)
        self.session.runner.progress.connect(self._on_progress)
        self.session.runner.finished.connect(self._on_finished)
        self._layer_events: list[tuple[Any, Any]] = []  # (emitter, callback), disconnected on close
        ev = self.viewer.layers.events
        follow = [(getattr(ev, n), self._refresh_layers) for n in ("inserted", "removed", "moved", "reordered")
                  if getattr(ev, n, None) is not None]
        for emitter, cb in [*follow, (ev.inserted, self._watch_layer_name),
                            (self.viewer.layers.selection.events.active, self._explain_layer)]:
            emitter.connect(cb)
            self._layer_events.append((emitter, cb))
        for layer in self.viewer.layers:
            self._watch_layer_name(layer=layer)
        self._refresh_layers()
        self._warm_up()

    def _warm_up(self) -> None:
        """Import, in a background thread now, the modules napari loads when the first result's layers are
        made: an import holds the GIL for long stretches, so it should not run during a Run (nor land with
        it). A plain daemon thread, not a Qt worker: closing napari while it imports must not abort on the
        worker's deleted signals."""
        import threading

        #: the warm-up imports are done
        self.warmed_up = False

        def work() -> None:
            try:
                warm_imports()
            finally:
                self.warmed_up = True

        threading.Thread(target=work, name="cardiac-motion warm-up", daemon=True).start()

    # ------------------------------------------------------------------ choices

    def _watch_layer_name(self, event=None, layer=None) -> None:
        layer = layer if layer is not None else getattr(event, "value", None)
        if layer is not None:
            layer.events.name.connect(self._refresh_layers)
            self._layer_events.append((layer.events.name, self._refresh_layers))

    def _refresh_layers(self, event=None) -> None:
        current = self.selected_layer()
        layers = image_layers(self.viewer)
        if current not in layers:
            active = self.viewer.layers.selection.active
            current = active if active in layers else (layers[0] if layers else None)
        self._layers = layers
        refill_combo(self.layer_combo, layers, current)
        self._on_layer_changed()

    def selected_layer(self):
        """The image layer chosen in the combobox (or ``None``)."""
        i = self.layer_combo.currentIndex()
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def set_layer(self, layer) -> None:
        """Choose ``layer`` (an eligible Image layer of the viewer; else a ValueError saying why not)."""
        self._refresh_layers()
        if layer not in self._layers:
            raise ValueError(why_not_offered(layer) or f"'{getattr(layer, 'name', layer)}' is not an image layer "
                             "of this viewer.")
        self.layer_combo.setCurrentIndex(self._layers.index(layer))

    def _explain_layer(self, event=None) -> None:
        """The user selected a layer the panel does not offer: say why, and the fix, in the status line."""
        reason = why_not_offered(self.viewer.layers.selection.active)
        if reason:
            self._set_status(reason)

    def _on_layer_changed(self, *_) -> None:
        layer = self.selected_layer()
        n_t = layer.data.shape[0] if layer is not None and layer.ndim == 4 else 1
        self.ed_spin.setMaximum(max(n_t - 1, 0))
        self._auto_model(layer)
        self._update_buttons()

    def _auto_model(self, layer) -> None:
        """Unless the user chose a model: the shipped echo model for an echo clip (when installed), the shipped
        MR model for anything else. Only switches between the two shipped models (a fine-tuned one stays)."""
        current = self.model_path() or ""
        if self._model_chosen or current not in ("", "echo"):
            return
        wanted = "echo" if is_echo_layer(layer) and echo_model_available() else ""
        if wanted != current:
            self._populate_models(wanted)

    def _populate_models(self, select: str | None = None) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for label, data in model_entries(getattr(self, "_extra_models", [])):
            self.model_combo.addItem(label, data)
            if data not in ("", "echo", None):
                self.model_combo.setItemData(self.model_combo.count() - 1, data, 3)  # Qt.ToolTipRole: the path
        idx = self.model_combo.findData(select) if select is not None else 0
        self.model_combo.setCurrentIndex(max(idx, 0))
        self._last_model_index = self.model_combo.currentIndex()
        self.model_combo.blockSignals(False)
        show_mirror_choice(self.tta_check, self.model_path() == "echo")  # the echo model reads one pass

    def refresh_models(self) -> None:
        """Re-scan the model folder, keeping the current choice when it still exists."""
        self._populate_models(self.model_path() or "")

    def set_model_path(self, path: str | Path | None, explicit: bool = True) -> None:
        """Choose a checkpoint file (``None`` or ``""`` = the shipped default, ``"echo"`` the shipped echo model);
        ``explicit``: the choice stays when another image is selected (no automatic echo/MR choice)."""
        self._model_chosen = self._model_chosen or explicit
        if not path or str(path) == "echo":
            self._populate_models(str(path or ""))
            return
        p = str(Path(path))
        self._extra_models = [*getattr(self, "_extra_models", []), p]
        self._populate_models(p)

    def model_path(self) -> str | None:
        data = self.model_combo.currentData()
        return data or None

    def _on_model_activated(self, index: int) -> None:
        if self.model_combo.itemData(index) is not None:
            self._last_model_index = index
            self._model_chosen = True
            show_mirror_choice(self.tta_check, self.model_path() == "echo")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model checkpoint", str(Path.home()),
                                              "Checkpoints (*.pt);;All files (*)")
        if path:
            self.set_model_path(path)
        else:
            self.model_combo.setCurrentIndex(self._last_model_index)

    def tta(self) -> bool | None:
        """The mirror-image pass: None = the model's default (on for MR, off for echo), False = one pass."""
        return None if self.tta_check.isChecked() else False

    def arrow_mode(self) -> str:
        return self.arrow_combo.currentData()

    def set_arrow_mode(self, mode: str) -> None:
        self.arrow_combo.setCurrentIndex(self.arrow_combo.findData(mode))

    # ------------------------------------------------------------------ run / cancel

    @property
    def is_running(self) -> bool:
        """Whether the run started here is still in flight."""
        return self._run_key is not None and self.session.runner.is_running(self._run_key, JOB)

    def run(self) -> None:
        """Start a prediction on the chosen layer (refused while that image is busy)."""
        from napari.utils.notifications import show_error

        layer = self.selected_layer()
        if layer is None:
            show_error("Cardiac motion: open a cine image first (File › Open, or File › Open Sample).")
            return
        key = self.session.key_of(layer)
        snap = layer_snapshot(layer)
        ed = self.ed_spin.value()
        model_path = self.model_path()
        tta = self.tta()
        arrow_mode = self.arrow_mode()

        def land(out):
            shown = yield from self.session.land_steps(key, layer, out, arrow_mode, parent=self, snapshot=snap)
            if shown:
                self.last_outcome = "done"
                r = out.result
                tta = ", with its mirror image" if r.metadata.get("tta") else ""
                self._set_status(f"Done in {r.seconds:.1f} s ({r.frames_per_second:.0f} frames/s, {r.device}{tta}). "
                                 f"ED frame {r.ed_frame}, ES frame {r.es_frame} (as on the t slider).")
            else:
                self.last_outcome = "kept"
                self._set_status("Not shown: your edits were kept as they were.")

        started = self.session.runner.start(
            key, JOB, predict_job, snap, model_path, self.device_combo.currentText(), None if ed < 0 else ed,
            arrow_mode, name=layer.name, on_result=land, on_error=self._on_error,
            prepare=self.session.prepare_steps(key, snap), tta=tta)
        if not started:
            return
        self._run_key = key
        self.last_outcome = None
        self.progress_bar.setRange(0, 0)  # busy until the first slice is done
        self._set_status(f"Running on '{layer.name}'…")
        self._update_buttons()

    def cancel(self) -> None:
        """Ask the running job to stop at the next slice; no layer is created or changed."""
        if not self.is_running:
            return
        self.session.runner.cancel(self._run_key)
        self.cancel_button.setEnabled(False)
        self._set_status("Cancelling…")

    def _on_error(self, outcome: str, error: BaseException) -> None:
        from napari.utils.notifications import show_error, show_info

        from ._runner import user_message

        self.last_outcome = outcome
        if outcome == "cancelled":
            self._set_status("Cancelled; no layers were changed.")
            show_info("Cardiac motion: cancelled; no layers were changed.")
        else:
            msg = user_message(error)
            self._set_status(f"Error: {msg}")
            show_error(f"Cardiac motion: {msg}")

    def _on_progress(self, key, done: int, total: int, info: JobProgress) -> None:
        if key != self._run_key or not self.is_running:
            return
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        if info.message and not self.session.runner.cancelling(key):
            self._set_status(info.message)

    def _on_finished(self, key, job: str, outcome: str) -> None:
        if key == self._run_key and job == JOB:
            if outcome != "done" or self.last_outcome not in (None, "done"):
                self.session.drop_placeholders(key)  # no result fills the layers made while it ran
            if self.last_outcome is None:
                self.last_outcome = outcome
                if outcome == "cancelled":
                    self._set_status("Cancelled; no layers were changed.")
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1 if self.last_outcome == "done" else 0)
        self._update_buttons()

    def _on_state_changed(self, key, what: StateEvent) -> None:
        if what in (StateEvent.BUSY, StateEvent.RESULT, StateEvent.MODEL):
            self._update_buttons()
            if what == StateEvent.MODEL and key == self.state.active:
                img = self.state.image(key)
                if img is not None:
                    self.set_model_path(str(img.model_path) if img.model_path else None, explicit=False)

    def _update_buttons(self) -> None:
        layer = self.selected_layer()
        busy = self.state.busy(self.session.key_of(layer)) if layer is not None else None
        self.run_button.setEnabled(layer is not None and busy is None)
        self.run_button.setToolTip(f"'{layer.name}' is busy: {busy}." if busy else "Segment the cine and "
                                   "estimate its motion; your corrected slices are kept.")
        self.cancel_button.setEnabled(self.is_running and not self.session.runner.cancelling(self._run_key))

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    # ------------------------------------------------------------------ arrows

    def _on_arrow_mode_changed(self, *_) -> None:
        """Redraw the arrows of the shown result in the chosen mode (in the background; no re-run)."""
        key = self.state.active
        img = self.state.current
        if img is None or img.result is None:
            return
        mode = self.arrow_mode()
        if mode == img.arrow_mode:
            return
        self.session.runner.start(key, "arrows", arrows_job, img.result.motion, img.result.labels, mode,
                                  cine_arrow_step(img.cine), name=img.name,
                                  on_result=lambda vm: self.session.show_arrows(key, *vm, mode))

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt)
        self.cancel()
        for emitter, cb in self._layer_events:
            try:
                emitter.disconnect(cb)
            except (TypeError, RuntimeError, ValueError):
                pass
        self._layer_events = []
        super().closeEvent(event)
