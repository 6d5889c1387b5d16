"""The export part of the "Cardiac function" panel: the Export button, the DICOM SEG option and the job.

:class:`ExportControls` writes JSON, CSV (measures, curves, slices counted), PNG figures and the one-page
HTML report (:func:`..analysis.report.export_all`) as a read-only job of the session's
:class:`~._runner.JobRunner` (:func:`export_job`), and, when the image was opened from
a DICOM folder, the labels as a DICOM SEG series (:mod:`..io.dicom_seg`, ``dicom_seg/`` in the export
folder); for other images it says why not (one short line, the whole reason on hover).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from qtpy.QtWidgets import QCheckBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

from ..analysis import Measurements
from ..analysis import report as rep
from ..errors import CardiacMotionError
from ._function_context import dicom_seg_source, prediction_for
from ._jobs import Cancel, Progress
from ._runner import JobRunner, ReadOnlyKey, user_message

EXPORT_JOB = "export"

DICOM_SEG_HELP = ("Also write the labels as a DICOM SEG series (dicom_seg/ in the export folder) "
                  "referencing the source DICOM images, for PACS, OHIF, 3D Slicer")


def export_files(m: Measurements, folder: str | Path, seg: tuple | None) -> dict[str, Path] | Exception:
    """Job body (any thread): every export of ``m`` into ``folder`` (and the DICOM SEG of ``seg`` =
    ``(labels (T, Z, Y, X), DICOM folder, model metadata)`` first); a user-facing error is returned."""
    from ..io.dicom_seg import DICOM_SEG_DIR, write_dicom_seg

    try:
        written = {}
        if seg is not None:  # first: it checks everything before writing, so a refusal leaves no files
            res = write_dicom_seg(Path(folder) / DICOM_SEG_DIR, *seg)
            written = {f"dicom_seg_t{t:03d}": p for t, p in res.files.items()}
        return {**rep.export_all(m, folder), **written}
    except (OSError, CardiacMotionError) as exc:
        return exc


def export_job(m: Measurements, folder: str | Path, seg: tuple | None, *, progress: Progress,
               cancel: Cancel) -> dict[str, Path]:
    """Job body (read-only; any thread): :func:`export_files`, its error raised for the runner."""
    progress(0, 1, f"exporting to {folder}")
    out = export_files(m, folder, seg)
    if isinstance(out, Exception):
        raise out
    return out


class ExportControls(QWidget):
    """The DICOM SEG row (check box and note) and the Export button (placed by the panel)."""

    def __init__(self, say: Callable[[str], None], runner: JobRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self._say = say
        self.runner = runner
        #: the slot of this panel's export job in the runner
        self.job_key = ReadOnlyKey(id(self), EXPORT_JOB)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write measurements.json/.csv, curves.csv, slices.csv, PNG figures and "
                                      "report.html")
        self.dicom_seg_check = QCheckBox("DICOM SEG")
        self.dicom_seg_check.setToolTip(DICOM_SEG_HELP)
        self.dicom_seg_note = QLabel("")
        # always shown (empty when there is nothing to say) and never wider than the row: a new text (a
        # result lands) then does not re-lay out the window, which would redraw the canvas there and then
        self.dicom_seg_note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        #: the DICOM folder of the read-out layer's image (``None``: no DICOM SEG, ``dicom_seg_note`` says why)
        self.dicom_seg_folder: str | None = None
        self.last_export: dict[str, Path] | None = None
        row = QHBoxLayout(self)  # its own row: the dock is narrow
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.dicom_seg_check)
        row.addWidget(self.dicom_seg_note, 1)

    def update_option(self, viewer, layer) -> None:
        """Offer DICOM SEG when the layer's image came from DICOM; otherwise say plainly why not."""
        folder, why = (None, "") if layer is None else dicom_seg_source(viewer, layer)
        self.dicom_seg_folder = folder
        self.dicom_seg_check.setEnabled(folder is not None)
        self.dicom_seg_check.setChecked(folder is not None)
        self.dicom_seg_note.setText("not available here (hover: why)" if why else "")
        self.dicom_seg_note.setToolTip(f"DICOM SEG not available: {why}" if why else "")
        self.dicom_seg_check.setToolTip(f"DICOM SEG not available: {why}" if why else DICOM_SEG_HELP)

    def ask_folder(self) -> str:
        """The folder the user picks ("" when cancelled)."""
        return QFileDialog.getExistingDirectory(self, "Export the cardiac function read-out to a folder")

    def _dicom_seg_inputs(self, viewer, layer) -> tuple[Any, ...] | None:
        if not (self.dicom_seg_check.isEnabled() and self.dicom_seg_check.isChecked() and layer is not None):
            return None
        labels = np.array(layer.data, copy=True)  # copied here: edits may continue meanwhile
        model = prediction_for(viewer, layer).get("model") or {
            "name": layer.metadata.get("model"), "version": layer.metadata.get("model_version")}
        return (labels if labels.ndim == 4 else labels[None], self.dicom_seg_folder, dict(model))

    @property
    def busy(self) -> bool:
        """Whether an export is being written."""
        return self.runner.is_running(self.job_key)

    def export(self, m: Measurements | None, folder: str | Path, viewer, layer) -> None:
        """Write every export of ``m`` to ``folder`` in a worker thread; ``last_export`` holds the paths after."""
        if m is None or self.busy:
            return
        seg = self._dicom_seg_inputs(viewer, layer)
        if self.runner.start_read_only(id(self), EXPORT_JOB, export_job, m, folder, seg,
                                       on_result=self._on_exported, on_error=self._on_failed):
            self._say(f"Exporting to {folder}…")

    def _on_exported(self, out: dict[str, Path]) -> None:
        from napari.utils.notifications import show_info

        self.last_export = out
        folder = Path(next(iter(out.values()))).parent
        self._say(f"Exported {len(out)} files to {folder}")
        show_info(f"Cardiac function: {len(out)} files written to {folder}")

    def _on_failed(self, outcome: str, error: BaseException) -> None:
        from napari.utils.notifications import show_error

        if outcome == "cancelled":
            self._say("Export cancelled.")
            return
        msg = str(error) if isinstance(error, OSError) else user_message(error)  # a full disk is no surprise
        self._say(f"Export failed: {msg}")
        show_error(f"Cardiac function: export failed ({msg})")
