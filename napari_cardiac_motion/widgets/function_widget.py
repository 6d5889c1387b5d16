"""Dock widget "Cardiac function": the clinical read-out of a segmentation (and its motion).

Thin: the numbers come from :mod:`..analysis` (no Qt there). The panel

* reads the chosen Labels layer (the plugin's ``segmentation`` by default), its spacing, frame interval
  and affine from the layer's metadata (as the Run panel sets it; else from its scale), and the dense
  motion of the prediction that made it from the plugin's per-viewer session, when there is one;
* computes :func:`..analysis.compute_measurements` in a napari worker thread (labels are copied on the
  GUI thread first), debounced after label edits (paint, undo, set data);
* shows the measures in a table (tooltips: one line of help each; :data:`STRAIN_HELP` says which strain
  is shown), volume and strain curves with a
  marker at the viewer's current frame that follows the time slider (click a curve to jump there),
  and a colour bar in mm for the ``motion`` arrows; the curves are rendered in the worker too
  (:mod:`._curves_canvas`), so the GUI thread only paints a picture and a line;
* exports JSON, CSV, PNG figures and the one-page HTML report (:func:`..analysis.report.export_all`),
  and, when the image was opened from a DICOM folder, the labels as a DICOM SEG series
  (:mod:`..io.dicom_seg`, ``dicom_seg/`` in the export folder); for other images the panel says why not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..analysis import SCALAR_MEASURES, Measurements, compute_measurements
from ..analysis import report as rep
from ..conventions import MOTION_LAYER, SEGMENTATION_LAYER
from ..errors import CardiacMotionError
from ..model_description import MR_DEFAULT, describe
from ._curves_canvas import CurvesCanvas, RenderedCurves, render_curves, warm_up
from ._combo import refill_combo
from ._session import unwrap

DEBOUNCE_MS = 400
#: table labels of the scalar measures
DISPLAY_NAMES = {
    "lv_edv_ml": "LV EDV", "lv_esv_ml": "LV ESV", "lv_sv_ml": "LV SV", "lv_ef_percent": "LV EF",
    "rv_edv_ml": "RV EDV", "rv_esv_ml": "RV ESV", "rv_sv_ml": "RV SV", "rv_ef_percent": "RV EF",
    "lv_mass_g": "LV mass", "bsa_m2": "BSA", "lv_edv_index_ml_m2": "LV EDV index",
    "lv_esv_index_ml_m2": "LV ESV index", "lv_sv_index_ml_m2": "LV SV index", "rv_edv_index_ml_m2": "RV EDV index",
    "rv_esv_index_ml_m2": "RV ESV index", "lv_mass_index_g_m2": "LV mass index",
    "peak_radial_strain_percent": "peak radial strain", "peak_circumferential_strain_percent": "peak circ. strain",
    "ed_frame": "ED frame", "es_frame": "ES frame", "ed_time_ms": "ED time", "es_time_ms": "ES time",
}

#: which strain the panel shows (the curves' tooltip and the peak strain rows' help)
STRAIN_HELP = (
    "Strain: in-plane Lagrangian (engineering) strain relative to end-diastole (ED), λ − 1 in %, where λ is "
    "the stretch of a fibre along the radial direction (away from the centroid of the slice's LV blood pool "
    "at ED) or the circumferential direction, computed from the motion field (F = (I + ∇u)⁻¹ for the "
    "pull-convention field u). Global values are area-weighted means over the ED myocardium. The motion of "
    "each frame is estimated from its own (ED, frame) pair, so the curves return towards 0 at the end of "
    "the cycle."
)
#: the table rows whose help gains :data:`STRAIN_HELP`
STRAIN_MEASURES = ("peak_radial_strain_percent", "peak_circumferential_strain_percent")


# ----------------------------------------------------------------------------- context (GUI thread)

def _prediction_for(viewer, seg_layer) -> dict[str, Any]:
    """Dense motion, its reference frame, model and image info of the prediction behind ``seg_layer``.

    Asks the plugin's per-viewer session; empty when the layer is not the plugin's or nothing is known
    (volumes still work without it).
    """
    try:
        from ._session import get_session

        session = get_session(viewer)
        key = session.key_for_layer(seg_layer)
        img = session.state.image(key) if key is not None else None
        if img is not None and img.result is not None:
            return {"motion": img.result.motion, "motion_ed": int(img.result.ed_frame), "cine": img.cine,
                    "model": dict(img.model_metadata or {})}
    except Exception:  # noqa: BLE001 - an absent or different session: read the layer alone
        pass
    return {}


def _first(*values):
    """The first value that is not ``None``."""
    return next((v for v in values if v is not None), None)


def _inputs_from_layers(viewer, seg_layer) -> dict[str, Any]:
    """Everything the computation needs, read on the GUI thread (labels copied)."""
    meta = dict(seg_layer.metadata or {})
    pred = _prediction_for(viewer, seg_layer)
    cine = pred.get("cine")
    image = next((ly for ly in viewer.layers if ly.name == meta.get("source_layer")), None)
    img_meta = dict(getattr(image, "metadata", None) or {})
    scale = tuple(float(s) for s in seg_layer.scale)
    spacing = _first(meta.get("spacing"), None if cine is None else cine.spacing, img_meta.get("spacing"),
                     scale[-3:])
    interval = _first(meta.get("frame_interval_ms") or None, None if cine is None else cine.frame_interval_ms or None,
                      img_meta.get("frame_interval_ms"), 0.0)
    affine = _first(meta.get("affine"), None if cine is None else cine.affine, img_meta.get("affine"))
    labels = np.array(seg_layer.data, copy=True)
    if labels.ndim == 3:
        labels = labels[None]
    motion = pred.get("motion")
    if motion is not None and tuple(motion.shape[:4]) != labels.shape:
        motion = None
    model = pred.get("model") or {"name": meta.get("model"), "version": meta.get("model_version")}
    try:
        description = describe(model)
    except ValueError:  # a malformed description: today's MR classes
        description = MR_DEFAULT
    source = img_meta.get("source_path") or img_meta.get("path") or meta.get("source_layer") or seg_layer.name
    return {"labels": labels, "spacing": tuple(float(s) for s in spacing), "interval": float(interval or 0.0),
            "affine": None if affine is None else np.asarray(affine, float), "motion": motion,
            "motion_ed": pred.get("motion_ed", meta.get("ed_frame")),
            "model": {"name": model.get("name"), "version": model.get("version")}, "input": str(source),
            "description": description}


def _dicom_seg_source(viewer, seg_layer) -> tuple[str | None, str]:
    """``(DICOM folder, "")`` when the image behind ``seg_layer`` was read from a DICOM folder, else
    ``(None, one line saying why a DICOM SEG cannot be written)``."""
    from ..io.dicom_seg import is_dicom_input, not_dicom_reason, require_highdicom

    meta = dict(seg_layer.metadata or {})
    image = next((ly for ly in viewer.layers if ly.name == meta.get("source_layer")), None)
    path = dict(getattr(image, "metadata", None) or {}).get("source_path")
    if not path:
        return None, ("DICOM SEG needs the source DICOM images, and the file this image came from is unknown "
                      "(open the DICOM series folder with this plugin's reader, then run the model).")
    if str(path).lower().endswith((".nii", ".nii.gz")) or (Path(path).exists() and not is_dicom_input(path)):
        return None, not_dicom_reason(path)
    if not Path(path).exists():
        return None, f"DICOM SEG needs the source DICOM images, and {path} is no longer there."
    try:
        require_highdicom()
    except CardiacMotionError as exc:
        return None, str(exc)
    return str(Path(path) if Path(path).is_dir() else Path(path).parent), ""


def _motion_legend(viewer, spacing) -> tuple[float, float, str] | None:
    """(low, high) mm and colormap name of the ``motion`` arrows' colours (their magnitudes are pixels)."""
    layer = next((ly for ly in viewer.layers if ly.name.startswith(MOTION_LAYER)
                  and hasattr(ly, "edge_contrast_limits")), None)
    if layer is None:
        return None
    px = float(np.mean(spacing[1:]))
    lo, hi = (float(v) for v in layer.edge_contrast_limits)
    return lo * px, hi * px, str(getattr(layer.edge_colormap, "name", "plasma"))


def _compute(inputs: dict[str, Any], ed: int | None, es: int | None, height: float | None,
             weight: float | None, render: dict[str, Any]) -> tuple[Measurements, RenderedCurves] | CardiacMotionError:
    """Worker body (no layer access): the read-out and its curves. User-facing errors are returned, not raised."""
    try:
        motion_ed = inputs["motion_ed"] if inputs["motion"] is not None else None
        m = compute_measurements(
            inputs["labels"], inputs["spacing"], inputs["interval"], motion=inputs["motion"],
            motion_reference_frame=motion_ed, ed_frame=ed if ed is not None else motion_ed, es_frame=es,
            height_cm=height, weight_kg=weight, affine=inputs["affine"], model=inputs["model"],
            input=inputs["input"], description=inputs.get("description"))
    except CardiacMotionError as exc:
        return exc
    return m, render_curves(m, **render)


# ----------------------------------------------------------------------------- widget

class FunctionWidget(QWidget):
    """The "Cardiac function" panel (see module docstring)."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer = unwrap(napari_viewer)  # the viewer, not the Plugins menu's proxy
        self.measurements: Measurements | None = None
        #: number of finished computations (tests wait on it)
        self.n_computed = 0
        self.last_export: dict[str, Path] | None = None
        self._layer = None
        self._worker = None
        self._dirty = False
        self._connected: list[tuple[Any, Any]] = []
        self._busy_export = False

        self.layer_combo = QComboBox()
        classes = ", ".join(f"{c.value} {c.name}" for c in MR_DEFAULT.classes)
        self.layer_combo.setToolTip(f"Labels layer (T, Z, Y, X): {classes}.")
        self.ed_spin, self.es_spin = QSpinBox(), QSpinBox()
        for spin, what in ((self.ed_spin, "ED: largest LV volume (or the model's ED)"), (self.es_spin,
                                                                                          "ES: smallest LV volume")):
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
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["measure", "value", "unit"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(180)
        self.canvas = CurvesCanvas()
        self.canvas.setToolTip("Volume and strain curves; click to go to that frame.\n\n" + STRAIN_HELP)
        self.canvas.clicked.connect(self._on_click)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write measurements.json/.csv, curves.csv, PNG figures and report.html")
        self.dicom_seg_check = QCheckBox("DICOM SEG")
        self._dicom_seg_help = ("Also write the labels as a DICOM SEG series (dicom_seg/ in the export folder) "
                                "referencing the source DICOM images, for PACS, OHIF, 3D Slicer")
        self.dicom_seg_check.setToolTip(self._dicom_seg_help)
        self.dicom_seg_note = QLabel("")
        #: the DICOM folder of the read-out layer's image (``None``: no DICOM SEG, ``dicom_seg_note`` says why)
        self.dicom_seg_folder: str | None = None
        self.refresh_button = QPushButton("Recompute")
        self.status = QLabel("Run the model (or open a segmentation) to see the read-out.")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("labels", self.layer_combo)
        frames = QHBoxLayout()
        frames.addWidget(QLabel("ED"))
        frames.addWidget(self.ed_spin)
        frames.addWidget(QLabel("ES"))
        frames.addWidget(self.es_spin)
        form.addRow("frames", frames)
        body = QHBoxLayout()
        body.addWidget(self.height_spin)
        body.addWidget(self.weight_spin)
        form.addRow("height, weight", body)
        buttons = QHBoxLayout()
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.export_button)
        seg_row = QHBoxLayout()  # its own row: the dock is narrow
        seg_row.addWidget(self.dicom_seg_check)
        seg_row.addWidget(self.dicom_seg_note, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table)
        layout.addWidget(self.canvas)
        layout.addLayout(buttons)
        layout.addLayout(seg_row)
        layout.addWidget(self.dicom_seg_note)
        layout.addWidget(self.status)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.compute)
        self.canvas.resized.connect(self.schedule)  # re-render at the new size
        for spin in (self.ed_spin, self.es_spin, self.height_spin, self.weight_spin):
            spin.valueChanged.connect(self.schedule)
        self.layer_combo.currentIndexChanged.connect(self._on_layer_chosen)
        self.refresh_button.clicked.connect(self.compute)
        self.export_button.clicked.connect(self._ask_export)
        ev = self.viewer.layers.events
        ev.inserted.connect(self._refresh_layers)
        ev.removed.connect(self._refresh_layers)
        self.viewer.dims.events.current_step.connect(self._update_markers)
        self._session_signal = None
        try:  # a new prediction (or a fine-tuned model's) lands: the motion and model change
            from ._session import get_session

            self._session_signal = get_session(self.viewer).changed
            self._session_signal.connect(self._on_session_changed)
        except Exception:  # noqa: BLE001 - no session: the layer's own events still drive updates
            self._session_signal = None
        self._update_dicom_seg_option()
        #: matplotlib's first-use work is done (in a worker, started now)
        self.warmed_up = False
        self._warm_up()
        self._refresh_layers()

    def _warm_up(self) -> None:
        from napari.qt.threading import create_worker

        worker = create_worker(warm_up, _start_thread=False)
        worker.finished.connect(lambda: setattr(self, "warmed_up", True))
        self._warm_worker = worker
        worker.start()

    # ------------------------------------------------------------------ layers

    def _labels_layers(self) -> list:
        from napari.layers import Labels

        return [ly for ly in self.viewer.layers if isinstance(ly, Labels) and ly.ndim in (3, 4)]

    def _refresh_layers(self, event=None) -> None:
        layers = self._labels_layers()
        current = self._layer if self._layer in layers else None
        if current is None and layers:
            named = [ly for ly in layers if ly.name.startswith(SEGMENTATION_LAYER)]
            current = (named or layers)[0]
        self._layers = layers
        refill_combo(self.layer_combo, layers, current)
        self._set_layer(current)

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
        self._update_dicom_seg_option()
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
        return self._worker is not None or self._timer.isActive()

    def schedule(self, event=None) -> None:
        """Recompute after a quiet moment (label edits come in bursts)."""
        self._timer.start()

    def _overrides(self) -> tuple[int | None, int | None, float | None, float | None]:
        ed, es = self.ed_spin.value(), self.es_spin.value()
        h, w = self.height_spin.value(), self.weight_spin.value()
        return (None if ed < 0 else ed, None if es < 0 else es, h if h > 0 else None, w if w > 0 else None)

    def compute(self) -> None:
        """Start a computation in a worker thread (queued when one is running)."""
        from napari.qt.threading import create_worker

        layer = self._layer
        if layer is None or layer not in self.viewer.layers:
            return
        if self._worker is not None:
            self._dirty = True
            return
        try:
            inputs = _inputs_from_layers(self.viewer, layer)
        except Exception as exc:  # noqa: BLE001 - never a traceback in the user's face
            self.status.setText(f"Cannot read '{layer.name}': {exc}")
            return
        self._dirty = False
        self.status.setText("Computing…")
        w, h, dpr = self.canvas.render_size()
        render = {"width_px": w, "height_px": h, "device_pixel_ratio": dpr,
                  "motion_legend": _motion_legend(self.viewer, inputs["spacing"])}
        worker = create_worker(_compute, inputs, *self._overrides(), render, _start_thread=False)
        worker.returned.connect(self._on_result)
        worker.errored.connect(lambda exc: self.status.setText(f"Error: {type(exc).__name__}: {exc}"))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()

    def _on_finished(self) -> None:
        self._worker = None
        if self._dirty:
            self.compute()

    def _on_result(self, out) -> None:
        self.n_computed += 1
        if isinstance(out, CardiacMotionError):
            self.status.setText(f"Error: {out}")
            return
        m, rendered = out
        self.measurements = m
        self._fill_table(m)
        self.canvas.set_rendered(rendered)
        self._update_markers()
        note = ("; " + "; ".join(m.notes)) if m.notes else ""
        self.status.setText(f"ED frame {m.ed_frame}, ES frame {m.es_frame}"
                            f"{'' if m.strain is not None else '; no motion: strain not available'}{note}")

    def _fill_table(self, m: Measurements) -> None:
        rows = [(k, v, u, h) for k, v, u, h in rep.measures_table(m) if not (v == "—" and "index" in k)]
        self.table.setRowCount(len(rows))
        for i, (key, value, unit, help_) in enumerate(rows):
            if key in STRAIN_MEASURES:
                help_ = f"{help_}\n\n{STRAIN_HELP}"
            for j, text in enumerate((DISPLAY_NAMES.get(key, key), value, unit)):
                item = QTableWidgetItem(text)
                item.setToolTip(help_)
                self.table.setItem(i, j, item)

    def value_text(self, key: str) -> str | None:
        """The table's displayed value of a measure (``None`` when not shown)."""
        name = DISPLAY_NAMES.get(key, key)
        for i in range(self.table.rowCount()):
            if self.table.item(i, 0).text() == name:
                return self.table.item(i, 1).text()
        return None

    # ------------------------------------------------------------------ plots

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

    def _update_dicom_seg_option(self) -> None:
        """Offer DICOM SEG when the layer's image came from DICOM; otherwise say plainly why not."""
        folder, why = (None, "") if self._layer is None else _dicom_seg_source(self.viewer, self._layer)
        self.dicom_seg_folder = folder
        self.dicom_seg_check.setEnabled(folder is not None)
        self.dicom_seg_check.setChecked(folder is not None)
        # one short line in the narrow dock; the whole reason on hover
        self.dicom_seg_note.setText("not available for this image (hover for why)" if why else "")
        self.dicom_seg_note.setToolTip(f"DICOM SEG not available: {why}" if why else "")
        self.dicom_seg_check.setToolTip(f"DICOM SEG not available: {why}" if why else self._dicom_seg_help)
        self.dicom_seg_note.setVisible(bool(why))

    def _ask_export(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export the cardiac function read-out to a folder")
        if folder:
            self.export(folder)

    def export(self, folder: str | Path) -> None:
        """Write every export to ``folder`` in a worker thread; ``last_export`` holds the paths after."""
        from napari.qt.threading import create_worker

        m = self.measurements
        if m is None or self._busy_export:
            return
        seg = None
        if self.dicom_seg_check.isEnabled() and self.dicom_seg_check.isChecked() and self._layer is not None:
            labels = np.array(self._layer.data, copy=True)  # copied here: edits may continue meanwhile
            model = _prediction_for(self.viewer, self._layer).get("model") or {
                "name": self._layer.metadata.get("model"), "version": self._layer.metadata.get("model_version")}
            seg = (labels if labels.ndim == 4 else labels[None], self.dicom_seg_folder, dict(model))
        self._busy_export = True
        self.status.setText(f"Exporting to {folder}…")

        def job():
            from ..io.dicom_seg import DICOM_SEG_DIR, write_dicom_seg

            try:
                written = {}
                if seg is not None:  # first: it checks everything before writing, so a refusal leaves no files
                    res = write_dicom_seg(Path(folder) / DICOM_SEG_DIR, *seg)
                    written = {f"dicom_seg_t{t:03d}": p for t, p in res.files.items()}
                return {**rep.export_all(m, folder), **written}
            except (OSError, CardiacMotionError) as exc:
                return exc

        worker = create_worker(job, _start_thread=False)
        worker.returned.connect(self._on_exported)
        worker.finished.connect(lambda: setattr(self, "_busy_export", False))
        worker.start()

    def _on_exported(self, out) -> None:
        from napari.utils.notifications import show_error, show_info

        if isinstance(out, Exception):
            self.status.setText(f"Export failed: {out}")
            show_error(f"Cardiac function: export failed ({out})")
            return
        self.last_export = out
        folder = Path(next(iter(out.values()))).parent
        self.status.setText(f"Exported {len(out)} files to {folder}")
        show_info(f"Cardiac function: {len(out)} files written to {folder}")

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt)
        self._set_layer(None)
        ev = self.viewer.layers.events
        for emitter, cb in ((self.viewer.dims.events.current_step, self._update_markers),
                            (ev.inserted, self._refresh_layers), (ev.removed, self._refresh_layers),
                            (self._session_signal, self._on_session_changed)):
            try:
                if emitter is not None:
                    emitter.disconnect(cb)
            except (TypeError, ValueError, RuntimeError):
                pass
        super().closeEvent(event)
