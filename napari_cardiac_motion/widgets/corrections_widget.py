"""Dock widget "Corrections and fine-tuning": track edits, revert, propagate, fine-tune, re-predict.

Thin wiring of core modules to the viewer:

* :class:`~..corrections.CorrectionTracker` diffs the ``segmentation`` layer against the model's
  prediction per (frame, slice) after every paint / fill / erase / undo / redo / data change (events
  are coalesced by a short timer). New predictions (a re-run from the Run panel, or after fine-tuning)
  never overwrite a corrected slice.
* :func:`~..propagation.propagate_labels` proposes labels for the other frames of a slice; the previous
  labels are kept so **Undo propagation** restores them in one step.
* :func:`~..finetune.finetune` runs in a napari worker thread (progress and losses are delivered through
  a Qt signal; Cancel stops at the next step and keeps the previous model); the new model is saved in
  the user's model folder (:mod:`..model_store`), the cine is re-predicted and the layers are updated
  on the GUI thread. **Revert model** goes back to the previous model and re-predicts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QPointF, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..corrections import CorrectionTracker
from ..errors import CancelledError, CardiacMotionError
from ..finetune import FinetuneSettings
from ._state import ViewerState, get_state


# ----------------------------------------------------------------------------- worker side (no Qt)

@dataclass
class _JobOutput:
    result: Any  # InferenceResult
    model_path: str | None
    model_meta: dict
    vectors: np.ndarray
    magnitudes: np.ndarray
    history: dict | None = None


@dataclass
class _Failure:
    error: BaseException


def _job(cine, corrections, model_path, device, ed_frame, steps, lr, guard, arrow_mode, progress, cancel,
         finetune_model: bool = True):
    """Worker body: (fine-tune → save →) predict → arrows. Errors are returned, never raised."""
    try:
        from ..finetune import finetune
        from ..inference import predict_cine
        from ..layers import motion_vectors
        from ..model_store import save_finetuned
        from .run_widget import ARROW_MIN_LENGTH, ARROW_STEP, _load_model

        model, meta = _load_model(model_path)
        history = None
        if finetune_model:
            model, history = finetune(model, cine, corrections, steps=steps, lr=lr, device=device,
                                      progress=progress, cancel=cancel, guard=guard, ed_frame=ed_frame)
            metadata = {
                "parent": meta.get("path") or meta.get("name"), "parent_name": meta.get("name"),
                "source_image": cine.name, "corrected_slices": history["corrected"],
                "ed_frame": history["ed_frame"], "steps": history["steps"], "lr": history["lr"],
                "guard": history["guard"], "losses": history["losses"],
                "seconds": round(history["seconds"], 2), "version": meta.get("version"),
            }
            path = save_finetuned(model, metadata)
            model_path = str(path)
            meta = dict(metadata, name=path.stem, path=str(path))
        if cancel():
            raise CancelledError("Cancelled; the previous model is kept.")
        result = predict_cine(cine, model, device=device, ed_frame=ed_frame, cancel=cancel)
        vectors, mags = motion_vectors(result.motion, result.labels, step=ARROW_STEP, mode=arrow_mode,
                                       min_magnitude=ARROW_MIN_LENGTH)
        return _JobOutput(result, model_path, meta, vectors, mags, history)
    except Exception as exc:
        return _Failure(exc)


# ----------------------------------------------------------------------------- GUI side

class _Relay(QObject):
    progress = Signal(int, int, object)


class LossPlot(QWidget):
    """A tiny live plot of the total loss per step (no matplotlib)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.values: list[float] = []
        self.setMinimumHeight(70)

    def set_values(self, values: list[float]) -> None:
        self.values = list(values)
        self.update()

    def add(self, value: float) -> None:
        self.values.append(float(value))
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(30, 30, 30))
        v = [x for x in self.values if np.isfinite(x)]
        if len(v) >= 2:
            lo, hi = min(v), max(v)
            span = (hi - lo) or 1.0
            w, h = self.width() - 8, self.height() - 8
            pts = [QPointF(4 + w * i / (len(v) - 1), 4 + h * (1 - (x - lo) / span)) for i, x in enumerate(v)]
            p.setPen(QPen(QColor(240, 180, 60), 1.5))
            for a, b in zip(pts[:-1], pts[1:]):
                p.drawLine(a, b)
            p.setPen(QColor(200, 200, 200))
            p.drawText(6, 14, f"loss {v[-1]:.3f}")
        p.end()


class CorrectionsWidget(QWidget):
    """Corrections list, revert, propagate, fine-tune with a live loss plot, model revert, save/load."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state: ViewerState = get_state(napari_viewer)
        self.tracker: CorrectionTracker | None = None
        self._layer = None
        self._image_layer = None
        self._applying = False
        self._pre_propagation: tuple[int, np.ndarray] | None = None
        self._model_history: list[tuple[str | None, dict]] = []
        self.worker = None
        self._cancel = threading.Event()
        self.last_outcome: str | None = None
        self.last_history: dict | None = None
        self._relay = _Relay(self)
        self._relay.progress.connect(self._on_progress)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(80)
        self._timer.timeout.connect(self.refresh_corrections)

        d = FinetuneSettings()
        self.list = QListWidget()
        self.list.setToolTip("Corrected (frame, slice) pairs; click one to go there.")
        self.list.itemClicked.connect(self._on_item_clicked)
        self.revert_button = QPushButton("Revert slice")
        self.propagate_button = QPushButton("Propagate")
        self.propagate_button.setToolTip("Carry the selected slice's labels to the other frames of that slice "
                                         "through the estimated motion (corrected frames are kept).")
        self.undo_propagation_button = QPushButton("Undo propagation")
        self.undo_propagation_button.setEnabled(False)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 5000)
        self.steps_spin.setValue(d.steps)
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(5)
        self.lr_spin.setRange(1e-5, 1e-1)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(d.lr)
        self.guard_combo = QComboBox()
        for text, key in (("mean teacher", "teacher"), ("L2-SP", "l2sp"), ("none", None)):
            self.guard_combo.addItem(text, key)
        self.guard_combo.setCurrentIndex(self.guard_combo.findData(d.guard))
        self.finetune_button = QPushButton("Fine-tune")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("step %v/%m")
        self.loss_plot = LossPlot()
        self.revert_model_button = QPushButton("Revert model")
        self.revert_model_button.setEnabled(False)
        self.save_button = QPushButton("Save corrections…")
        self.load_button = QPushButton("Load corrections…")
        self.status_label = QLabel("Run the model first; then paint on the 'segmentation' layer.")
        self.status_label.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Corrected (frame, slice):"))
        layout.addWidget(self.list)
        row = QHBoxLayout()
        row.addWidget(self.revert_button)
        row.addWidget(self.propagate_button)
        row.addWidget(self.undo_propagation_button)
        layout.addLayout(row)
        form = QFormLayout()
        form.addRow("steps", self.steps_spin)
        form.addRow("learning rate", self.lr_spin)
        form.addRow("guard", self.guard_combo)
        layout.addLayout(form)
        row = QHBoxLayout()
        row.addWidget(self.finetune_button)
        row.addWidget(self.cancel_button)
        row.addWidget(self.revert_model_button)
        layout.addLayout(row)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.loss_plot)
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.load_button)
        layout.addLayout(row)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.revert_button.clicked.connect(self.revert_selected)
        self.propagate_button.clicked.connect(self.propagate_selected)
        self.undo_propagation_button.clicked.connect(self.undo_propagation)
        self.finetune_button.clicked.connect(self.start_finetune)
        self.cancel_button.clicked.connect(self.cancel)
        self.revert_model_button.clicked.connect(self.revert_model)
        self.save_button.clicked.connect(self._save_dialog)
        self.load_button.clicked.connect(self._load_dialog)
        self.state.subscribe(self._on_new_result)
        if self.state.has_result:
            self._on_new_result(self.state)

    # ------------------------------------------------------------------ tracking

    def _on_new_result(self, state: ViewerState) -> None:
        """A new prediction landed (Run panel): keep corrected slices, (re)attach to the layer."""
        if self._applying or state.predicted_labels is None:
            return
        layer = state.segmentation_layer
        pred = state.predicted_labels
        same = (self.tracker is not None and self.tracker.shape == pred.shape
                and self._image_layer is state.image_layer)
        if same and self.tracker.corrected:
            merged = self.tracker.merge_new_prediction(pred)  # the layer was overwritten: use snapshots
            self._set_layer_data(layer, merged)
            self._set_status(f"New prediction; {len(self.tracker.corrected)} corrected slice(s) kept.")
        elif same:
            self.tracker.merge_new_prediction(pred)
        else:
            self.tracker = CorrectionTracker(pred)
            self._pre_propagation = None
            self.undo_propagation_button.setEnabled(False)
            self._set_status("Paint on the 'segmentation' layer to correct it.")
        self._image_layer = state.image_layer
        self._attach(layer)
        self._update_list()

    def _attach(self, layer) -> None:
        if layer is self._layer:
            return
        if self._layer is not None:
            for name in ("paint", "set_data", "data"):
                try:
                    getattr(self._layer.events, name).disconnect(self._schedule)
                except (TypeError, RuntimeError, ValueError):
                    pass
        self._layer = layer
        if layer is not None:
            for name in ("paint", "set_data", "data"):  # set_data: undo/redo and refreshes
                getattr(layer.events, name).connect(self._schedule)

    def _schedule(self, event=None) -> None:
        if not self._applying:
            self._timer.start()

    def _layer_ok(self) -> bool:
        return (self.tracker is not None and self._layer is not None and self._layer in self.viewer.layers
                and np.shape(self._layer.data) == self.tracker.shape)

    def refresh_corrections(self) -> set:
        """Diff the layer against the prediction now (the event handler calls this after a short delay)."""
        self._timer.stop()
        if not self._layer_ok():
            return set()
        before = set(self.tracker.corrected)
        now = self.tracker.update_from_labels(np.asarray(self._layer.data))
        if now != before:
            self._update_list()
        return now

    @property
    def corrected(self) -> list[tuple[int, int]]:
        return self.tracker.sorted_pairs() if self.tracker is not None else []

    def _update_list(self) -> None:
        selected = self.selected_pair()
        self.list.clear()
        for t, z in self.corrected:
            item = QListWidgetItem(f"frame {t}, slice {z}")
            item.setData(Qt.ItemDataRole.UserRole, (t, z))
            self.list.addItem(item)
            if (t, z) == selected:
                self.list.setCurrentItem(item)

    def _set_layer_data(self, layer, data: np.ndarray) -> None:
        self._applying = True
        try:
            layer.data = data
            layer.refresh()
        finally:
            self._applying = False

    def _write_slices(self, index, values) -> None:
        self._applying = True
        try:
            self._layer.data[index] = values
            self._layer.refresh()
        finally:
            self._applying = False
        self.refresh_corrections()

    # ------------------------------------------------------------------ list actions

    def selected_pair(self) -> tuple[int, int] | None:
        item = self.list.currentItem()
        return tuple(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def select_pair(self, t: int, z: int) -> None:
        """Select (t, z) in the list and move the viewer there (as clicking it does)."""
        for i in range(self.list.count()):
            item = self.list.item(i)
            if tuple(item.data(Qt.ItemDataRole.UserRole)) == (t, z):
                self.list.setCurrentItem(item)
                self._on_item_clicked(item)
                return

    def _on_item_clicked(self, item) -> None:
        t, z = item.data(Qt.ItemDataRole.UserRole)
        self.go_to(t, z)

    def go_to(self, t: int, z: int) -> None:
        """Set the viewer's time and slice sliders to frame ``t``, slice ``z`` of the segmentation."""
        layer = self._layer
        if layer is None:
            return
        world = layer.data_to_world((t, z, 0, 0))
        n = self.viewer.dims.ndim
        axes = list(range(n - 4, n - 2))  # the (T, Z) axes of a 4D layer in the viewer's world
        for axis, value in zip(axes, world[:2]):
            self.viewer.dims.set_point(axis, float(value))

    def revert_selected(self) -> None:
        pair = self.selected_pair()
        if pair is None or not self._layer_ok():
            self._error("select a corrected (frame, slice) in the list first.")
            return
        t, z = pair
        self._write_slices((t, z), self.tracker.revert(t, z))
        self._update_list()
        self._set_status(f"Frame {t}, slice {z} reverted to the prediction.")

    def propagate_selected(self) -> None:
        """Propagate the selected corrected slice (or the slice in view) to the other frames of its slice."""
        from ..propagation import propagate_labels

        if not self._layer_ok() or self.state.result is None:
            self._error("run the model first: propagation needs its motion.")
            return
        pair = self.selected_pair()
        if pair is None:
            step = self.viewer.dims.current_step
            pair = (int(step[-4]), int(step[-3])) if len(step) >= 4 else None
        if pair is None:
            self._error("select a corrected (frame, slice) to propagate.")
            return
        t, z = pair
        data = np.asarray(self._layer.data)
        motion = self.state.result.motion
        if motion.shape[:4] != data.shape:
            self._error("the motion does not match the segmentation; run the model again.")
            return
        proposal = propagate_labels(data[t, z], motion[:, z], t)
        before = data[:, z].copy()
        keep = [f for f in range(data.shape[0]) if (f, z) in self.tracker.corrected or f == t]
        proposal[keep] = before[keep]
        self._pre_propagation = (z, before)
        self._write_slices((slice(None), z), proposal)
        self.undo_propagation_button.setEnabled(True)
        self._set_status(f"Propagated frame {t} to every frame of slice {z}; 'Undo propagation' restores them.")

    def undo_propagation(self) -> None:
        if self._pre_propagation is None or not self._layer_ok():
            return
        z, before = self._pre_propagation
        self._pre_propagation = None
        self._write_slices((slice(None), z), before)
        self.undo_propagation_button.setEnabled(False)
        self._set_status(f"Propagation on slice {z} undone.")

    # ------------------------------------------------------------------ fine-tuning

    @property
    def is_running(self) -> bool:
        return self.worker is not None

    def start_finetune(self) -> None:
        self.refresh_corrections()
        if not self._layer_ok() or self.state.cine is None:
            self._error("run the model first, then correct some slices.")
            return
        if not self.tracker.corrected:
            self._error("no corrected slice yet: paint on the 'segmentation' layer first.")
            return
        corr = self.tracker.corrections_array(np.asarray(self._layer.data))
        self.loss_plot.set_values([])
        self._start(corr, finetune_model=True)

    def revert_model(self) -> None:
        """Go back to the model used before the last fine-tuning and re-predict."""
        if not self._model_history or self.worker is not None:
            return
        path, meta = self._model_history[-1]
        self._start(None, finetune_model=False, model_path=path)

    def _start(self, corrections, finetune_model: bool, model_path: Any = ...) -> None:
        from napari.qt.threading import create_worker

        if self.worker is not None:
            return
        st = self.state
        self._cancel = threading.Event()
        self.last_outcome = None
        cancel_event = self._cancel
        holder: dict[str, Any] = {}

        def cancel() -> bool:
            w = holder.get("worker")
            return cancel_event.is_set() or bool(w is not None and w.abort_requested)

        path = (str(st.model_path) if st.model_path else None) if model_path is ... else model_path
        self._job_model_path = None if model_path is ... else model_path
        self._job_is_finetune = finetune_model
        device = st.result.device if st.result is not None else "cpu"
        worker = create_worker(
            _job, st.cine, corrections, path, device, st.ed_frame, self.steps_spin.value(),
            self.lr_spin.value(), self.guard_combo.currentData(), st.arrow_mode, self._relay.progress.emit,
            cancel, finetune_model, _start_thread=False,
        )
        holder["worker"] = worker
        self.worker = worker
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.progress_bar.setRange(0, self.steps_spin.value() if finetune_model else 0)
        self.progress_bar.setValue(0)
        for b in (self.finetune_button, self.revert_model_button, self.propagate_button, self.revert_button):
            b.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._set_status("Fine-tuning…" if finetune_model else "Re-predicting with the previous model…")
        worker.start()

    def cancel(self) -> None:
        if self.worker is None:
            return
        self._cancel.set()
        self.cancel_button.setEnabled(False)
        self._set_status("Cancelling at the next step…")

    def _on_progress(self, step: int, total: int, losses) -> None:
        if self.worker is None:
            return
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(step)
        loss = float(losses.get("total", float("nan")))
        self.loss_plot.add(loss)
        if step == total:
            self._set_status("Re-predicting the cine with the fine-tuned model…")
        elif not self._cancel.is_set():
            self._set_status(f"step {step}/{total}, loss {loss:.4f}")

    def _on_returned(self, out) -> None:
        from napari.utils.notifications import show_info

        if isinstance(out, _Failure):
            out = out.error
        if isinstance(out, CancelledError) or (self._cancel.is_set() and isinstance(out, BaseException)):
            self.last_outcome = "cancelled"
            self._set_status("Cancelled; the previous model is kept.")
            show_info("Cardiac motion: fine-tuning cancelled; the previous model is kept.")
            return
        if isinstance(out, BaseException):
            self.last_outcome = "error"
            msg = str(out) if isinstance(out, CardiacMotionError) else f"unexpected {type(out).__name__}: {out}"
            self._error(msg)
            return
        try:
            self._apply(out)
        except Exception as exc:
            self.last_outcome = "error"
            self._error(f"could not show the results ({type(exc).__name__}: {exc})")
            return
        self.last_outcome = "done"

    def _on_finished(self) -> None:
        if self.last_outcome is None:
            self.last_outcome = "cancelled"
        self.worker = None
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1 if self.last_outcome == "done" else 0)
        for b in (self.finetune_button, self.propagate_button, self.revert_button):
            b.setEnabled(True)
        self.revert_model_button.setEnabled(bool(self._model_history))
        self.cancel_button.setEnabled(False)

    def _apply(self, out: _JobOutput) -> None:
        """Results → state and layers, corrected slices untouched (GUI thread)."""
        st = self.state
        if self._job_is_finetune:
            self._model_history.append((str(st.model_path) if st.model_path else None, dict(st.model_metadata)))
            self.last_history = out.history
        else:
            self._model_history.pop()
        st.model_path = Path(out.model_path) if out.model_path else None
        st.model_metadata = dict(out.model_meta)
        st.result = out.result
        st.predicted_labels = out.result.labels.copy()
        layer = self._layer
        if self._layer_ok():
            merged = self.tracker.merge_new_prediction(out.result.labels, np.asarray(layer.data))
            self._set_layer_data(layer, merged)
        motion = st.motion_layer
        if motion is not None and motion in self.viewer.layers:
            self._applying = True
            try:
                motion.data = out.vectors
                motion.features = {"magnitude": out.magnitudes}
                motion.refresh()
            finally:
                self._applying = False
        self._applying = True
        try:
            st.notify()
        finally:
            self._applying = False
        self._tell_run_widget(out.model_path)
        self._update_list()
        name = out.model_meta.get("name", "default")
        if self._job_is_finetune:
            h = out.history or {}
            self._set_status(f"Fine-tuned in {h.get('seconds', 0):.0f} s; model '{name}' saved and used; "
                             f"{len(self.tracker.corrected) if self.tracker else 0} corrected slice(s) kept.")
        else:
            self._set_status(f"Back to model '{name}'.")

    def _tell_run_widget(self, model_path: str | None) -> None:
        """Best effort: make the Run panel use the new model for its next run."""
        try:
            from .run_widget import RunWidget

            docks = getattr(self.viewer.window, "dock_widgets", None) or {}
            for w in list(docks.values()):
                for cand in (w, getattr(w, "widget", lambda: None)()):
                    if isinstance(cand, RunWidget):
                        cand.set_model_path(model_path)
        except Exception:
            pass

    # ------------------------------------------------------------------ save / load

    def save_corrections(self, path: str | Path) -> tuple[Path, Path] | None:
        self.refresh_corrections()
        if not self._layer_ok() or self.state.cine is None:
            self._error("nothing to save: run the model first.")
            return None
        c = self.state.cine
        try:
            out = self.tracker.save(path, np.asarray(self._layer.data), affine=c.affine, spacing=c.spacing,
                                    frame_interval_ms=c.frame_interval_ms, source=c.name)
        except (CardiacMotionError, OSError) as exc:
            self._error(str(exc))
            return None
        self._set_status(f"Saved {out[0].name} and {out[1].name}.")
        return out

    def load_corrections(self, path: str | Path) -> bool:
        if not self._layer_ok():
            self._error("run the model on the image first, then load its corrections.")
            return False
        try:
            labels = self.tracker.load(path)
        except CardiacMotionError as exc:
            self._error(str(exc))
            return False
        self._set_layer_data(self._layer, labels)
        self._update_list()
        self._set_status(f"Loaded {len(self.tracker.corrected)} corrected slice(s) from {Path(path).name}.")
        return True

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save corrections", str(Path.home() / "corrections.nii.gz"),
                                              "NIfTI (*.nii.gz *.nii)")
        if path:
            self.save_corrections(path)

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load corrections", str(Path.home()), "NIfTI (*.nii.gz *.nii)")
        if path:
            self.load_corrections(path)

    # ------------------------------------------------------------------ misc

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _error(self, msg: str) -> None:
        from napari.utils.notifications import show_error

        self._set_status(f"Error: {msg}")
        show_error(f"Cardiac motion: {msg}")

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt)
        self.cancel()
        self.state.unsubscribe(self._on_new_result)
        super().closeEvent(event)
