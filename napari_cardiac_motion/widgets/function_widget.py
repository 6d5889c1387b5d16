"""Dock widget "Cardiac function": the clinical read-out of a segmentation (and its motion).

Thin: the numbers come from :mod:`..analysis` (no Qt there). The panel

* reads the chosen Labels layer (the plugin's ``segmentation`` by default; not the empty one of a Run
  still working), its spacing, frame interval and affine from its metadata (else its scale), and the
  dense motion of the prediction that made it from the plugin's per-viewer session, when there is one;
* computes :func:`..analysis.compute_measurements` as a read-only job of the viewer's one job runner
  (labels copied on the GUI thread first; it never waits for a Run), debounced after label edits (paint,
  undo, set data), one at a time; a failure says so in one line;
* shows the measures in a table (tooltips: one line of help each; :data:`STRAIN_HELP` says which strain is
  shown), volume and strain curves with a marker at the current frame (click a curve to jump there), and a
  colour bar in mm for the arrows; the curves are rendered in the worker (:mod:`._curves_canvas`);
* shows which slices count in the ED/ES volumes (:mod:`._slices_table`: a row per slice, LV and RV at
  ED and ES, the rule's reason on hover) and lets the user include or exclude a slice; the read-out,
  curves and exports follow (the choices are kept per Labels layer while the panel is open);
* exports JSON, CSV, PNG figures and the one-page HTML report, and a DICOM SEG series for DICOM images
  (:mod:`._function_export`). What it reads from the viewer is in :mod:`._function_context`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QSpinBox, QWidget

from ..analysis import Measurements
from ..conventions import SEGMENTATION_LAYER
from ..errors import CardiacMotionError
from ..model_description import MR_DEFAULT
from ._combo import refill_combo
from ._curves_canvas import CurvesCanvas
from ._function_context import (READOUT_JOB, STRAIN_HELP, WARM_UP_JOB, inputs_from_layers, labels_layers, motion_legend,
                                readout_job, warm_up_job, why_labels_not_offered)
from ._function_export import ExportControls
from ._jobs import JobProgress
from ._measures_table import MeasuresTable
from ._runner import NEXT_TURN_MS, ReadOnlyKey, user_message
from ._scroll import scrolling_layout
from ._session import get_session, unwrap
from ._slices_table import SlicesSection

DEBOUNCE_MS = 400


# ----------------------------------------------------------------------------- widget

class FunctionWidget(QWidget):
    """The "Cardiac function" panel (see module docstring)."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = unwrap(napari_viewer)  # the viewer, not the Plugins menu's proxy
        self.session = get_session(self.viewer)
        self.runner = self.session.runner
        self.readout_key = ReadOnlyKey(id(self), READOUT_JOB)
        self.measurements: Measurements | None = None
        #: number of finished computations, failed ones included (tests wait on it)
        self.n_computed = 0
        self._layer = None
        self._dirty = False
        self._connected: list[tuple[Any, Any]] = []
        self._build_inputs()
        self._build_outputs()
        self._lay_out()
        self._connect()
        self.exporter.update_option(self.viewer, self._layer)
        #: matplotlib's first-use work is done (in a worker, started now)
        self.warmed_up = False
        self.runner.start_read_only(id(self), WARM_UP_JOB, warm_up_job)
        self._refresh_layers()

    def _build_inputs(self) -> None:
        self.layer_combo = QComboBox()
        classes = ", ".join(f"{c.value} {c.name}" for c in MR_DEFAULT.classes)
        self.layer_combo.setToolTip(f"Labels layer (T, Z, Y, X): {classes}.")
        self.ed_spin, self.es_spin = QSpinBox(), QSpinBox()
        for spin, what in ((self.ed_spin, "ED: largest LV volume (or the model's ED)"),
                           (self.es_spin, "ES: smallest LV volume")):
            spin.setRange(-1, 0)
            spin.setSpecialValueText("auto")
            spin.setValue(-1)
            spin.setToolTip(f"Override the frame; auto = {what}.")
        self.height_spin, self.weight_spin = QDoubleSpinBox(), QDoubleSpinBox()
        for spin, unit, hi in ((self.height_spin, " cm", 250.0), (self.weight_spin, " kg", 400.0)):
            spin.setRange(0.0, hi)
            spin.setDecimals(1)
            spin.setSuffix(unit)
            spin.setSpecialValueText("unknown")
            spin.setToolTip("For the body surface area (Mosteller) and indexed values.")

    def _build_outputs(self) -> None:
        self.table = MeasuresTable()
        self.slices_section = SlicesSection()
        self.slices, self.reset_slices_button = self.slices_section.table, self.slices_section.reset_button
        self.canvas = CurvesCanvas()
        self.canvas.setToolTip("Volume and strain curves; click to go to that frame. Curves: every labelled "
                               "slice; open squares: the ED/ES volumes of the counted slices.\n\n" + STRAIN_HELP)
        self.status = QLabel("Run the model (or open a segmentation) to see the read-out.")
        self.status.setWordWrap(True)
        self.exporter = ExportControls(self.status.setText, self.runner)
        self.export_button = self.exporter.export_button
        self.dicom_seg_check = self.exporter.dicom_seg_check
        self.dicom_seg_note = self.exporter.dicom_seg_note
        self.refresh_button = QPushButton("Recompute")

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("labels", self.layer_combo)
        frames = QHBoxLayout()
        for w in (QLabel("ED"), self.ed_spin, QLabel("ES"), self.es_spin):
            frames.addWidget(w)
        form.addRow("frames", frames)
        body = QHBoxLayout()
        body.addWidget(self.height_spin)
        body.addWidget(self.weight_spin)
        form.addRow("height, weight", body)
        buttons = QHBoxLayout()
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.export_button)
        layout = scrolling_layout(self)  # the panel scrolls when the dock area is short
        layout.addLayout(form)
        layout.addWidget(self.table)
        layout.addWidget(self.slices_section)
        layout.addWidget(self.canvas)
        layout.addLayout(buttons)
        layout.addWidget(self.exporter)
        layout.addWidget(self.status)

    def _connect(self) -> None:
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.compute)
        self.canvas.clicked.connect(self._on_click)
        self.canvas.resized.connect(self.schedule)  # re-render at the new size
        for spin in (self.ed_spin, self.es_spin, self.height_spin, self.weight_spin):
            spin.valueChanged.connect(self.schedule)
        self.slices.overrides_changed.connect(self.schedule)
        self.layer_combo.currentIndexChanged.connect(self._on_layer_chosen)
        self.refresh_button.clicked.connect(self.compute)
        self.export_button.clicked.connect(self._ask_export)
        self._layers_timer = QTimer(self, singleShot=True, interval=NEXT_TURN_MS, timeout=self._refresh_layers)
        ev = self.viewer.layers.events
        ev.inserted.connect(self._refresh_layers_soon)
        ev.removed.connect(self._refresh_layers_soon)
        self.viewer.layers.selection.events.active.connect(self._explain_layer)
        self.viewer.dims.events.current_step.connect(self._update_markers)
        # a new prediction (or a fine-tuned model's) lands: the motion and model change
        self.session.changed.connect(self._on_session_changed)
        self.runner.progress.connect(self._on_job_progress)
        self.runner.finished.connect(self._on_job_finished)

    # ------------------------------------------------------------------ layers

    def _labels_layers(self) -> list:
        return labels_layers(self.viewer)

    def _explain_layer(self, event=None) -> None:
        """The user selected a labels layer the panel does not offer: say why in the status line."""
        if reason := why_labels_not_offered(self.viewer.layers.selection.active):
            self.status.setText(reason)

    def _refresh_layers(self, event=None) -> None:
        layers = self._labels_layers()
        current = self._layer if self._layer in layers else None
        if current is None and layers:
            named = [ly for ly in layers if ly.name.startswith(SEGMENTATION_LAYER)]
            current = (named or layers)[0]
        self._layers = layers
        refill_combo(self.layer_combo, layers, current)
        self._set_layer(current)

    def _refresh_layers_soon(self, event=None) -> None:
        self._layers_timer.start()  # next turn: not inside napari's making of a layer (a landing's largest step)

    def _on_layer_chosen(self, index: int) -> None:
        layers = getattr(self, "_layers", [])
        self._set_layer(layers[index] if 0 <= index < len(layers) else None)

    def _set_layer(self, layer) -> None:
        if layer is self._layer:
            return
        for emitter, cb in self._connected:
            try:
                emitter.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._connected = []
        self._layer = layer
        self.runner.cancel(self.readout_key)  # a read-out of the previous layer is stale
        self.exporter.update_option(self.viewer, layer)
        self.slices.set_layer(layer)
        if layer is None:
            return
        n_t = layer.data.shape[0] if layer.ndim == 4 else 1
        for spin in (self.ed_spin, self.es_spin):
            spin.setMaximum(max(n_t - 1, 0))
        for name in ("paint", "data", "labels_update", "metadata"):
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                emitter.connect(self.schedule)
                self._connected.append((emitter, self.schedule))
        # after a quiet moment, not now: a new segmentation layer appears while a result lands (its
        # motion is known to the session only once the landing is over, and the GUI is busy then)
        self.schedule()

    @property
    def layer(self):
        """The Labels layer read out (or ``None``)."""
        return self._layer

    def set_layer(self, layer) -> None:
        """Choose a Labels layer of the viewer."""
        self._refresh_layers()
        self.layer_combo.setCurrentIndex(self._layers.index(layer))

    def _on_session_changed(self, key=None, what: str = "") -> None:
        if what in ("result", "model", "removed"):
            self._refresh_layers()
            self.schedule()

    # ------------------------------------------------------------------ compute

    @property
    def is_busy(self) -> bool:
        """Whether a read-out is being computed or is about to be (debounce pending)."""
        return self.runner.is_running(self.readout_key) or self._timer.isActive()

    def schedule(self, event=None) -> None:
        """Recompute after a quiet moment (label edits come in bursts)."""
        self._timer.start()

    def _frames_and_body(self) -> tuple[int | None, int | None, float | None, float | None]:
        ed, es = self.ed_spin.value(), self.es_spin.value()
        h, w = self.height_spin.value(), self.weight_spin.value()
        return (None if ed < 0 else ed, None if es < 0 else es, h if h > 0 else None, w if w > 0 else None)

    def compute(self) -> None:
        """Start the read-out as a read-only job of the runner (queued when one is running)."""
        layer = self._layer
        if layer is None or layer not in self.viewer.layers:
            return
        if self.runner.is_running(self.readout_key):
            self._dirty = True
            return
        try:
            inputs = inputs_from_layers(self.viewer, layer)
        except Exception as exc:  # noqa: BLE001 - never a traceback in the user's face
            self.status.setText(f"Cannot read '{layer.name}': {exc}")
            return
        self._dirty = False  # the job's progress says "Computing the read-out…"
        w, h, dpr = self.canvas.render_size()
        render = {"width_px": w, "height_px": h, "device_pixel_ratio": dpr,
                  "motion_legend": motion_legend(self.viewer, inputs["spacing"], inputs.get("spacing_known", True))}
        self.runner.start_read_only(self.readout_key.owner, READOUT_JOB, readout_job, inputs,
                                    *self._frames_and_body(), render, self.slices.overrides,
                                    on_result=self._on_result, on_error=self._on_error)

    def _on_job_progress(self, key, done: int, total: int, info: JobProgress) -> None:
        if key == self.readout_key and info.message and done < total:
            self.status.setText(f"{info.message}…")

    def _on_job_finished(self, key, job: str, outcome: str) -> None:
        if key == ReadOnlyKey(id(self), WARM_UP_JOB):
            self.warmed_up = True
        elif key == self.readout_key and self._dirty:
            self.compute()

    def _on_error(self, outcome: str, error: BaseException) -> None:
        """One line in the panel (and one notification for an unexpected error); a cancelled one is stale."""
        if outcome == "cancelled":
            return
        self.n_computed += 1
        msg = user_message(error)
        self.status.setText(f"Error: {msg}")
        if not isinstance(error, CardiacMotionError):
            from napari.utils.notifications import show_error

            show_error(f"Cardiac function: the read-out failed ({msg})")

    def _on_result(self, out) -> None:
        self.n_computed += 1
        m, rendered = out
        self.measurements = m
        self.table.fill(m)
        self.slices_section.set_decisions(m.slices)  # hidden when there are none (an echo view)
        self.canvas.set_rendered(rendered)
        self._update_markers()
        note = ("; " + "; ".join(m.notes)) if m.notes else ""
        strain = m.strain is not None or m.longitudinal_strain_percent is not None  # MR or echo (GLS)
        self.status.setText(f"ED frame {m.ed_frame}, ES frame {m.es_frame}"
                            f"{'' if strain else '; no motion: strain not available'}{note}")

    def value_text(self, key: str) -> str | None:
        """The table's displayed value of a measure (``None`` when not shown)."""
        return self.table.value_text(key)

    # ------------------------------------------------------------------ curves

    def _time_axis(self):
        if self.measurements is None:
            return np.zeros(0), "frame"
        return self.measurements.time_axis()

    def current_frame(self) -> int | None:
        """The frame of the read-out layer shown at the viewer's time slider."""
        layer = self._layer
        if layer is None or layer.ndim != 4:
            return None
        try:
            data_pos = layer.world_to_data(self.viewer.dims.point[-layer.ndim:])
        except Exception:  # noqa: BLE001
            return None
        n_t = layer.data.shape[0]
        return int(np.clip(round(float(data_pos[0])), 0, n_t - 1))

    def _update_markers(self, event=None) -> None:
        frame = self.current_frame()
        t, _ = self._time_axis()
        if frame is None or frame >= len(t):
            return
        self.canvas.set_marker(float(t[frame]))

    def marker_x(self) -> float | None:
        """Where the current-frame marker is drawn (x in the curves' time unit)."""
        return self.canvas.marker_x

    def go_to_frame(self, frame: int) -> None:
        """Move the viewer's time slider to ``frame`` of the read-out layer."""
        layer = self._layer
        if layer is None or layer.ndim != 4:
            return
        axis = self.viewer.dims.ndim - layer.ndim  # layers are aligned on their last axes
        world = layer.data_to_world([frame, 0, 0, 0])
        self.viewer.dims.set_point(axis, float(world[0]))

    def _on_click(self, x: float) -> None:
        t, _ = self._time_axis()
        if len(t):
            self.go_to_frame(int(np.argmin(np.abs(t - x))))

    # ------------------------------------------------------------------ export

    @property
    def last_export(self) -> dict[str, Path] | None:
        """The files of the last export (``None`` before one finished)."""
        return self.exporter.last_export

    def _ask_export(self) -> None:
        folder = self.exporter.ask_folder()
        if folder:
            self.export(folder)

    def export(self, folder: str | Path) -> None:
        """Write every export to ``folder`` in a worker thread; ``last_export`` holds the paths after."""
        self.exporter.export(self.measurements, folder, self.viewer, self._layer)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt)
        self._set_layer(None)
        self._timer.stop()
        self.runner.cancel(self.readout_key)
        ev = self.viewer.layers.events
        for emitter, cb in ((self.viewer.dims.events.current_step, self._update_markers),
                            (ev.inserted, self._refresh_layers_soon), (ev.removed, self._refresh_layers_soon),
                            (self.viewer.layers.selection.events.active, self._explain_layer),
                            (self.session.changed, self._on_session_changed),
                            (self.runner.progress, self._on_job_progress),
                            (self.runner.finished, self._on_job_finished)):
            try:
                if emitter is not None:
                    emitter.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass
        super().closeEvent(event)
