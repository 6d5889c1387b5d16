"""Dock widget "Joint motion and segmentation": choose image, model, device; Run / Cancel.

Threading: :meth:`RunWidget.run` captures everything it needs from the chosen layer on the GUI thread,
then starts a napari ``FunctionWorker`` running :func:`_predict_job` (no layer or widget access).
Progress travels from the worker through a Qt signal (queued onto the GUI thread) to a napari progress
bar and the widget's own bar; Cancel sets an event that :func:`~..inference.predict_cine` checks
between slices. Results are applied by :meth:`RunWidget._on_returned` on the GUI thread, onto the
layer captured at Run time. Every failure in the job is returned as a value (never raised in the
worker) and shown with ``show_error``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..cine import Cine
from ..conventions import MOTION_LAYER, SEGMENTATION_LAYER
from ..devices import available_devices
from ..errors import CancelledError, CardiacMotionError
from ..inference import InferenceResult, predict_cine
from ..layers import ARROW_MODES, motion_vectors, segmentation_layer_data
from ._state import ViewerState, get_state

DEFAULT_MODEL_LABEL = "default (shipped)"
BROWSE_LABEL = "Browse…"
#: grid step (pixels) of the motion arrows, and the shortest arrow drawn (voxels)
ARROW_STEP = 4
ARROW_MIN_LENGTH = 0.1


def user_model_dir() -> Path:
    """Per-user folder scanned for extra ``*.pt`` checkpoints (fine-tuned models; see :mod:`..model_store`)."""
    from ..model_store import models_dir

    return models_dir(create=False)


# ----------------------------------------------------------------------------- worker side (no Qt)

@dataclass
class _LayerSnapshot:
    """What the worker needs from the image layer, read on the GUI thread at Run time."""

    data: Any
    name: str
    scale: tuple[float, ...]  # (T, Z, Y, X) scale of the outputs
    translate: tuple[float, ...]
    spacing: tuple[float, float, float]
    frame_interval_ms: float
    affine: np.ndarray


@dataclass
class _RunOutput:
    cine: Cine
    result: InferenceResult
    model_meta: dict
    vectors: np.ndarray
    magnitudes: np.ndarray


@dataclass
class _Failure:
    """An exception returned by the job (a returned Exception would be re-raised by the worker)."""

    error: BaseException


_MODEL_CACHE: dict[tuple, tuple[Any, dict]] = {}
_MODEL_LOCK = threading.Lock()


def _load_model(path: str | None):
    """Load (and cache by path + mtime) a checkpoint; ``None`` = the shipped default."""
    from ..model.checkpoint import default_checkpoint_path, load_checkpoint

    p = Path(path) if path else default_checkpoint_path()
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None  # load_checkpoint raises the user-facing error
    with _MODEL_LOCK:
        if key is not None and key in _MODEL_CACHE:
            return _MODEL_CACHE[key]
        model, meta = load_checkpoint(p)
        if key is not None:
            _MODEL_CACHE.clear()  # keep one model in memory
            _MODEL_CACHE[key] = (model, meta)
        return model, meta


def _snapshot_to_cine(snap: _LayerSnapshot) -> Cine:
    data = np.asarray(snap.data)
    if data.ndim == 3:
        data = data[None]  # one frame
    return Cine(data=data, spacing=snap.spacing, frame_interval_ms=snap.frame_interval_ms,
                affine=snap.affine, name=snap.name)


def _predict_job(snap: _LayerSnapshot, model_path: str | None, device: str, ed_frame: int | None,
                 arrow_mode: str, progress, cancel) -> _RunOutput | _Failure:
    """Worker body: image → cine → model → prediction → arrows. Returns errors instead of raising."""
    try:
        cine = _snapshot_to_cine(snap)
        if cancel():
            raise CancelledError("Cancelled by the user; no results were produced.")
        model, meta = _load_model(model_path)
        result = predict_cine(cine, model, device=device, ed_frame=ed_frame, progress=progress, cancel=cancel)
        vectors, mags = motion_vectors(result.motion, result.labels, step=ARROW_STEP, mode=arrow_mode,
                                       min_magnitude=ARROW_MIN_LENGTH)
        return _RunOutput(cine, result, meta, vectors, mags)
    except Exception as exc:  # delivered to the GUI thread and shown there
        return _Failure(exc)


# ----------------------------------------------------------------------------- GUI side


class _ProgressRelay(QObject):
    """Created on the GUI thread; ``progress.emit`` from the worker is queued onto the GUI thread."""

    progress = Signal(int, int, str)


def image_layers(viewer) -> list:
    """Image layers the model can run on: 4D ``(T, Z, Y, X)`` or 3D ``(Z, Y, X)`` (one frame), not RGB."""
    from napari.layers import Image

    return [ly for ly in viewer.layers
            if isinstance(ly, Image) and ly.ndim in (3, 4) and not ly.rgb and not ly.multiscale]


def _layer_snapshot(layer) -> _LayerSnapshot:
    meta = dict(layer.metadata or {})
    scale = tuple(float(s) for s in layer.scale)
    translate = tuple(float(s) for s in layer.translate)
    if layer.ndim == 3:
        scale, translate = (1.0, *scale), (0.0, *translate)
    spacing = tuple(float(s) for s in meta.get("spacing", scale[-3:]))
    affine = meta.get("affine")
    if affine is None:
        dz, dy, dx = spacing
        affine = np.diag([dx, dy, dz, 1.0])
    return _LayerSnapshot(
        data=layer.data, name=layer.name, scale=scale, translate=translate, spacing=spacing,  # type: ignore[arg-type]
        frame_interval_ms=float(meta.get("frame_interval_ms", 0.0) or 0.0), affine=np.asarray(affine, float),
    )


class RunWidget(QWidget):
    """Run the joint model on an image layer and show ``segmentation`` + ``motion`` layers."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state: ViewerState = get_state(napari_viewer)
        self.worker = None
        self._cancel = threading.Event()
        self._run_layer = None
        self._snapshot: _LayerSnapshot | None = None
        self._pbar = None
        self._got_result = False
        #: "done" | "cancelled" | "error" | None — outcome of the last run (for tests and callers)
        self.last_outcome: str | None = None
        self._relay = _ProgressRelay(self)
        self.progress_signal = self._relay.progress
        self._relay.progress.connect(self._on_progress)

        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Image layer with axes (T, Z, Y, X); a 3D image is one frame.")
        self.model_combo = QComboBox()
        self.model_combo.setToolTip(f"Shipped model, checkpoints in {user_model_dir()}, or any .pt file.")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *available_devices()])
        self.ed_spin = QSpinBox()
        self.ed_spin.setMinimum(-1)
        self.ed_spin.setSpecialValueText("auto")
        self.ed_spin.setValue(-1)
        self.ed_spin.setToolTip("End-diastolic reference frame; auto = largest predicted LV blood pool.")
        self.arrow_combo = QComboBox()
        for key, text in ARROW_MODES.items():
            self.arrow_combo.addItem(text, key)
        self.arrow_combo.setToolTip("from ED: arrow from where the tissue was at ED to where it is now.\n"
                                    "frame to frame: from where it was in the previous frame.")
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
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self._populate_models()
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.model_combo.activated.connect(self._on_model_activated)
        self.arrow_combo.currentIndexChanged.connect(self._on_arrow_mode_changed)
        self.layer_combo.currentIndexChanged.connect(self._on_layer_changed)
        ev = self.viewer.layers.events
        for name in ("inserted", "removed", "moved", "reordered"):
            emitter = getattr(ev, name, None)
            if emitter is not None:
                emitter.connect(self._refresh_layers)
        ev.inserted.connect(self._watch_layer_name)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ choices

    def _watch_layer_name(self, event=None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            layer.events.name.connect(self._refresh_layers)

    def _refresh_layers(self, event=None) -> None:
        current = self.selected_layer()
        layers = image_layers(self.viewer)
        if current not in layers:
            active = self.viewer.layers.selection.active
            current = active if active in layers else (layers[0] if layers else None)
        self._layers = layers
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems([ly.name for ly in layers])
        if current is not None:
            self.layer_combo.setCurrentIndex(layers.index(current))
        self.layer_combo.blockSignals(False)
        self._on_layer_changed()

    def selected_layer(self):
        """The image layer chosen in the combobox (or ``None``)."""
        i = self.layer_combo.currentIndex()
        layers = getattr(self, "_layers", [])
        return layers[i] if 0 <= i < len(layers) else None

    def set_layer(self, layer) -> None:
        """Choose ``layer`` (an eligible Image layer of the viewer)."""
        self._refresh_layers()
        self.layer_combo.setCurrentIndex(self._layers.index(layer))

    def _on_layer_changed(self, *_) -> None:
        layer = self.selected_layer()
        n_t = layer.data.shape[0] if layer is not None and layer.ndim == 4 else 1
        self.ed_spin.setMaximum(max(n_t - 1, 0))

    def _populate_models(self, select: str | None = None) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItem(DEFAULT_MODEL_LABEL, "")
        paths: list[str] = []
        try:
            folder = user_model_dir()
            if folder.is_dir():
                paths = [str(p) for p in sorted(folder.glob("*.pt"))]
        except OSError:
            pass
        for extra in getattr(self, "_extra_models", []):
            if extra not in paths:
                paths.append(extra)
        for p in paths:
            self.model_combo.addItem(Path(p).name, p)
            self.model_combo.setItemData(self.model_combo.count() - 1, p, 3)  # Qt.ToolTipRole
        self.model_combo.addItem(BROWSE_LABEL, None)
        idx = self.model_combo.findData(select) if select is not None else 0
        self.model_combo.setCurrentIndex(max(idx, 0))
        self._last_model_index = self.model_combo.currentIndex()
        self.model_combo.blockSignals(False)

    def set_model_path(self, path: str | Path | None) -> None:
        """Choose a checkpoint file (``None`` or ``""`` = the shipped default)."""
        if not path:
            self._populate_models("")
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
            return
        path, _ = QFileDialog.getOpenFileName(self, "Choose a model checkpoint", str(Path.home()),
                                              "Checkpoints (*.pt);;All files (*)")
        if path:
            self.set_model_path(path)
        else:
            self.model_combo.setCurrentIndex(self._last_model_index)

    def arrow_mode(self) -> str:
        return self.arrow_combo.currentData()

    def set_arrow_mode(self, mode: str) -> None:
        self.arrow_combo.setCurrentIndex(self.arrow_combo.findData(mode))

    # ------------------------------------------------------------------ run / cancel

    @property
    def is_running(self) -> bool:
        return self.worker is not None

    def run(self) -> None:
        """Start a prediction on the chosen layer (no-op while one is running)."""
        from napari.qt.threading import create_worker
        from napari.utils import progress as napari_progress
        from napari.utils.notifications import show_error

        if self.worker is not None:
            return
        layer = self.selected_layer()
        if layer is None:
            show_error("Cardiac motion: open a cine image first (File › Open, or File › Open Sample).")
            return
        self._run_layer = layer
        self._snapshot = snap = _layer_snapshot(layer)
        self._cancel = threading.Event()
        self._got_result = False
        self.last_outcome = None
        ed = self.ed_spin.value()
        model_path = self.model_path()
        self._model_path = model_path
        relay = self._relay
        cancel_event = self._cancel
        holder: dict[str, Any] = {}

        def cancel() -> bool:
            w = holder.get("worker")
            return cancel_event.is_set() or bool(w is not None and w.abort_requested)

        worker = create_worker(
            _predict_job, snap, model_path, self.device_combo.currentText(), None if ed < 0 else ed,
            self.arrow_mode(), relay.progress.emit, cancel, _start_thread=False,
        )
        holder["worker"] = worker
        self.worker = worker
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self._pbar = napari_progress(total=0, desc=f"Cardiac motion: {layer.name}")
        self.progress_bar.setRange(0, 0)  # busy until the first slice is done
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._set_status(f"Running on '{layer.name}'…")
        worker.start()

    def cancel(self) -> None:
        """Ask the running job to stop at the next slice; no layer is created or changed."""
        if self.worker is None:
            return
        self._cancel.set()
        self.cancel_button.setEnabled(False)
        self._set_status("Cancelling…")

    def _on_progress(self, done: int, total: int, message: str) -> None:
        if self.worker is None:
            return
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        if not self._cancel.is_set():
            self._set_status(message)
        pbar = self._pbar  # napari's progress may process events (and finish the run) re-entrantly
        if pbar is not None:
            if pbar.total != total:
                pbar.total = total
            pbar.set_description(f"Cardiac motion: {message}")
            pbar.update(done - pbar.n)  # last: the run may have finished inside this call

    def _on_returned(self, out) -> None:
        from napari.utils.notifications import show_error, show_info

        self._got_result = True
        if isinstance(out, _Failure):
            out = out.error
        if self._cancel.is_set() or isinstance(out, CancelledError):
            self.last_outcome = "cancelled"
            self._set_status("Cancelled; no layers were changed.")
            show_info("Cardiac motion: cancelled; no layers were changed.")
            return
        if isinstance(out, BaseException):
            self.last_outcome = "error"
            if isinstance(out, CardiacMotionError):
                msg = str(out)
            else:
                msg = f"unexpected {type(out).__name__}: {out}"
            self._set_status(f"Error: {msg}")
            show_error(f"Cardiac motion: {msg}")
            return
        try:
            self._apply_output(out)
        except Exception as exc:  # never leave a traceback for the user
            self.last_outcome = "error"
            self._set_status(f"Error while showing the results: {exc}")
            show_error(f"Cardiac motion: could not show the results ({type(exc).__name__}: {exc})")
            return
        self.last_outcome = "done"
        r = out.result
        self._set_status(
            f"Done in {r.seconds:.1f} s ({r.frames_per_second:.0f} frames/s, {r.device}). "
            f"ED frame {r.ed_frame}, ES frame {r.es_frame}."
        )

    def _on_finished(self) -> None:
        if not self._got_result and self.last_outcome is None:  # aborted from napari's activity dock
            self.last_outcome = "cancelled"
            self._set_status("Cancelled; no layers were changed.")
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1 if self.last_outcome == "done" else 0)
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _set_status(self, text: str) -> None:
        self.status_label.setText(text)

    # ------------------------------------------------------------------ results → layers

    def _apply_output(self, out: _RunOutput) -> None:
        snap = self._snapshot
        assert snap is not None
        r = out.result
        meta = {
            "ed_frame": r.ed_frame,
            "es_frame": r.es_frame,
            "model": out.model_meta.get("name", ""),
            "model_version": out.model_meta.get("version", ""),
            "source_layer": snap.name,
            "affine": out.cine.affine.copy(),
            "spacing": tuple(out.cine.spacing),
            "frame_interval_ms": out.cine.frame_interval_ms,
        }
        st = self.state
        st.image_layer = self._run_layer
        st.cine = out.cine
        st.scale, st.translate = snap.scale, snap.translate
        st.model_path = Path(self._model_path) if self._model_path else None
        st.model_metadata = dict(out.model_meta)
        st.result = r
        st.predicted_labels = r.labels.copy()
        st.arrow_mode = self.arrow_mode()
        data, kwargs, _ = segmentation_layer_data(r.labels, snap.scale, snap.translate, meta)
        st.segmentation_layer = self._put_segmentation(data, kwargs)
        st.motion_layer = self._put_motion(out.vectors, out.magnitudes, dict(meta, arrow_mode=st.arrow_mode))
        st.notify()

    def _existing(self, kind, remembered, name: str):
        if remembered is not None and remembered in self.viewer.layers and isinstance(remembered, kind):
            return remembered
        for layer in self.viewer.layers:
            if layer.name == name and isinstance(layer, kind):
                return layer
        return None

    def _put_segmentation(self, data: np.ndarray, kwargs: dict):
        from napari.layers import Labels

        layer = self._existing(Labels, self.state.segmentation_layer, SEGMENTATION_LAYER)
        if layer is not None and layer.ndim == data.ndim:
            layer.data = data
            layer.scale = kwargs["scale"]
            layer.translate = kwargs["translate"]
            layer.metadata = kwargs["metadata"]
            layer.colormap = kwargs["colormap"]
            layer.features = kwargs["features"]
            layer.refresh()
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        return self.viewer.add_labels(data, **kwargs)

    @staticmethod
    def _vector_style(magnitudes: np.ndarray) -> dict:
        """Colour limits from the 98th percentile; ``length`` > 1 only when motion is too small to see.

        Arrows are drawn at their true length (``length = 1``) unless the 95th-percentile arrow is
        shorter than ~3/4 of the grid step; then they are lengthened up to ×4 so they stay visible
        (the factor is the layer's ``length``, shown and adjustable in its layer controls).
        """
        hi = float(np.percentile(magnitudes, 98)) if magnitudes.size else 1.0
        p95 = float(np.percentile(magnitudes, 95)) if magnitudes.size else 0.0
        length = float(np.clip(0.75 * ARROW_STEP / max(p95, 1e-6), 1.0, 4.0))
        return {"edge_colormap": "plasma", "edge_contrast_limits": (0.0, max(hi, 0.5)), "length": round(length, 2)}

    def _put_motion(self, vectors: np.ndarray, magnitudes: np.ndarray, metadata: dict):
        from napari.layers import Vectors

        scale, translate = self.state.scale, self.state.translate
        style = self._vector_style(magnitudes)
        layer = self._existing(Vectors, self.state.motion_layer, MOTION_LAYER)
        if layer is not None and layer.ndim == 4:
            layer.data = vectors
            layer.features = {"magnitude": magnitudes}
            layer.scale = scale
            layer.translate = translate
            layer.metadata = metadata
            layer.edge_colormap = style["edge_colormap"]
            layer.edge_color = "magnitude"
            layer.edge_contrast_limits = style["edge_contrast_limits"]
            layer.length = style["length"]
            layer.refresh()
            return layer
        if layer is not None:
            self.viewer.layers.remove(layer)
        return self.viewer.add_vectors(
            vectors, ndim=4, name=MOTION_LAYER, features={"magnitude": magnitudes}, edge_color="magnitude",
            edge_width=0.35 * min(scale[-2:]), vector_style="arrow", projection_mode="none",
            scale=scale, translate=translate, metadata=metadata, opacity=1.0, **style,
        )

    def _on_arrow_mode_changed(self, *_) -> None:
        """Redraw the arrows of the last result in the newly chosen mode (no re-run)."""
        st = self.state
        if st.result is None or self.worker is not None:
            return
        mode = self.arrow_mode()
        if mode == st.arrow_mode:
            return
        vectors, mags = motion_vectors(st.result.motion, st.result.labels, step=ARROW_STEP, mode=mode,
                                       min_magnitude=ARROW_MIN_LENGTH)
        st.arrow_mode = mode
        meta = dict(st.motion_layer.metadata) if st.motion_layer is not None else {}
        st.motion_layer = self._put_motion(vectors, mags, dict(meta, arrow_mode=mode))

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt)
        self.cancel()
        super().closeEvent(event)
