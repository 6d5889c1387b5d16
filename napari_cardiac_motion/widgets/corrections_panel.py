"""Panel "Corrections": the slices quality control asks to check (worst first) and the edited slices of
the shown image, with revert, propagate, accept, undo, save and load. Thin: the provenance lives in the
:class:`~..state.ViewerState`, the scores in the prediction's ``qc`` (:mod:`..qc`); labels are written
through :meth:`~._session.Session.write_slices` (one napari undo step each); propagation runs in the
background through the session's runner.

Numbers are those of napari's sliders: "frame 3, slice 5" is t = 3, z = 5 on the sliders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..corrections import ACCEPTED, HAND, PROPAGATED, Pair
from ..errors import CardiacMotionError
from ._jobs import propagate_job
from . import _session
from ._session import Session, get_session, unwrap

KIND_TEXT = {HAND: "painted", PROPAGATED: "proposed — not yet accepted", ACCEPTED: "accepted"}


class CorrectionsPanel(QWidget):
    """The list of edited (frame, slice) pairs of the shown image and what can be done with them."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer = unwrap(napari_viewer)  # the viewer, not the Plugins menu's proxy
        self.session: Session = get_session(napari_viewer)
        self.state = self.session.state

        self.title = QLabel("Paint on the segmentation to correct it. Edited slices:")
        self.title.setWordWrap(True)
        self.list = QListWidget()
        self.list.setToolTip("Click a slice to go there. Proposed slices (from Propagate) count as "
                             "corrections only once you accept them.")
        self.list.itemClicked.connect(self._on_item_clicked)
        self.qc_title = QLabel("")
        self.qc_title.setWordWrap(True)
        self.qc_list = QListWidget()
        self.qc_list.setToolTip("Slices where the model's own evidence (its uncertainty, its motion, the "
                                "anatomy) says the labels are most likely wrong, worst first. Click one to go there.")
        self.qc_list.setMaximumHeight(120)
        self.qc_list.setWordWrap(True)  # the reasons are long: wrapped in the narrow dock, not scrolled sideways
        self.qc_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.qc_list.itemClicked.connect(self._on_item_clicked)
        self.revert_button = QPushButton("Revert slice")
        self.revert_button.setToolTip("Put the model's labels back on the selected slice (Undo brings yours back).")
        self.propagate_button = QPushButton("Propagate")
        self.propagate_button.setToolTip("Propose labels for the other frames of this slice by following the "
                                         "heart's motion from the selected (or shown) frame. Check, then accept.")
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("Accept the selected proposal: it becomes a correction.")
        self.accept_all_button = QPushButton("Accept all")
        self.accept_all_button.setToolTip("Accept every proposal of this image.")
        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Undo the last paint, propagation or revert (napari's Undo, Ctrl+Z).")
        self.save_button = QPushButton("Save corrections…")
        self.load_button = QPushButton("Load corrections…")
        self.status_label = QLabel("")
        self._paused_shown = False  # the status says "editing tools are paused"
        self.status_label.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.qc_title)
        layout.addWidget(self.qc_list)
        layout.addWidget(self.title)
        layout.addWidget(self.list)
        for group in ((self.revert_button, self.propagate_button, self.undo_button),
                      (self.accept_button, self.accept_all_button),
                      (self.save_button, self.load_button)):
            row = QHBoxLayout()
            for b in group:
                row.addWidget(b)
            layout.addLayout(row)
        layout.addWidget(self.status_label)

        self.revert_button.clicked.connect(self.revert_selected)
        self.propagate_button.clicked.connect(self.propagate_selected)
        self.accept_button.clicked.connect(self.accept_selected)
        self.accept_all_button.clicked.connect(self.accept_all)
        self.undo_button.clicked.connect(self.undo)
        self.save_button.clicked.connect(self._save_dialog)
        self.load_button.clicked.connect(self._load_dialog)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(100)
        self._refresh_timer.timeout.connect(self.refresh)
        self.session.changed.connect(self._on_state_changed)
        self.refresh()

    # ------------------------------------------------------------------ views

    @property
    def key(self):
        return self.state.active

    @property
    def corrected(self) -> list[Pair]:
        """Corrections (painted + accepted) of the shown image, sorted (frame, slice)."""
        img = self.state.current
        return img.corrected if img is not None else []

    @property
    def propagated(self) -> list[Pair]:
        img = self.state.current
        return img.propagated if img is not None else []

    def _on_state_changed(self, key, what: str) -> None:
        if what == "edits" and key == self.state.active:
            self._refresh_timer.start()  # a brush stroke edits many times: rebuild the list once
        elif key == self.state.active or what in ("active", "removed"):
            self.refresh()

    def refresh(self) -> None:
        """Rebuild the list and the buttons from the state."""
        self._refresh_timer.stop()
        img = self.state.current
        selected = self.selected_pair()
        self.list.clear()
        entries = img.provenance() if img is not None else []
        for (t, z), kind in entries:
            item = QListWidgetItem(f"frame {t}, slice {z} — {KIND_TEXT[kind]}")
            item.setData(Qt.ItemDataRole.UserRole, (t, z))
            if kind == PROPAGATED:
                item.setForeground(Qt.GlobalColor.darkYellow)
            self.list.addItem(item)
            if (t, z) == selected:
                self.list.setCurrentItem(item)
        self.refresh_checks()
        ready = img is not None and img.tracker is not None
        busy = ready and img.busy is not None
        self.title.setText(f"Edited slices of '{img.name}':" if ready else
                           "Run the model first; then paint on the segmentation to correct it.")
        for b in (self.revert_button, self.propagate_button, self.undo_button, self.save_button, self.load_button):
            b.setEnabled(bool(ready and not busy))
        self.accept_button.setEnabled(bool(ready and not busy and entries))
        self.accept_all_button.setEnabled(bool(ready and not busy and img.propagated))
        if busy:
            self.status_label.setText(f"'{img.name}' is busy ({img.busy}); editing tools are paused.")
            self._paused_shown = True
        elif self._paused_shown:  # the job is over: the tools are back
            self.status_label.setText("")
            self._paused_shown = False

    def refresh_checks(self) -> None:
        """Rebuild the list of flagged slices (quality control of the last prediction), worst first."""
        img = self.state.current
        qc = getattr(img.result, "qc", None) if img is not None else None
        current = self.qc_list.currentItem()
        selected = tuple(current.data(Qt.ItemDataRole.UserRole)) if current is not None else None
        self.qc_list.clear()
        if qc is None:
            self.qc_title.setText("Slices to check: run the model first." if img is None or img.result is None
                                  else "Slices to check: no quality control for this prediction.")
            return
        worst = qc.worst()
        why = qc.reasons
        corrected = set(img.corrected)
        for t, z, score in worst:
            done = " (corrected)" if (t, z) in corrected else ""
            reasons = why.get((t, z), "")
            first = f": {reasons.split('; ')[0]}" if reasons else ""  # the main one; all in the tooltip
            item = QListWidgetItem(f"frame {t}, slice {z} — score {score:.2f}{done}{first}")
            item.setToolTip(f"Frame {t}, slice {z}, score {score:.2f}" + (f": {reasons}" if reasons else "")
                            + ". Click to go there.")
            item.setData(Qt.ItemDataRole.UserRole, (t, z))
            self.qc_list.addItem(item)
            if (t, z) == selected:
                self.qc_list.setCurrentItem(item)
        n = int(qc.scores.size)
        self.qc_title.setText(f"Slices to check ({len(worst)} of {n} flagged), worst first:" if worst else
                              f"Slices to check: none of the {n} slices flagged.")

    def flagged_pairs(self) -> list[Pair]:
        """The (frame, slice) pairs of the list of slices to check, in its order (worst first)."""
        return [tuple(self.qc_list.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.qc_list.count())]

    def selected_pair(self) -> Pair | None:
        item = self.list.currentItem()
        return tuple(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def select_pair(self, t: int, z: int) -> None:
        """Select (t, z) in the list and move the viewer there (as clicking it does)."""
        if self._refresh_timer.isActive():
            self.refresh()
        for i in range(self.list.count()):
            item = self.list.item(i)
            if tuple(item.data(Qt.ItemDataRole.UserRole)) == (t, z):
                self.list.setCurrentItem(item)
                self._on_item_clicked(item)
                return

    def _on_item_clicked(self, item) -> None:
        t, z = item.data(Qt.ItemDataRole.UserRole)
        self.session.go_to(self.key, t, z)

    # ------------------------------------------------------------------ actions

    def _ready(self) -> bool:
        img = self.state.current
        if img is None or img.tracker is None:
            self._error("run the model first.")
            return False
        if img.busy:
            self._error(f"'{img.name}' is busy ({img.busy}); wait for it to finish.")
            return False
        self.session.sync(self.key)
        return True

    def revert_selected(self) -> None:
        """Put the prediction back on the selected slice (one napari undo step)."""
        pair = self.selected_pair()
        if pair is None:
            self._error("select an edited slice in the list first.")
            return
        if not self._ready():
            return
        img = self.state.current
        self.session.write_slices(self.key, {pair: img.tracker.prediction[pair]})
        self.state.note_edits(self.key, [pair])
        self._status(f"Frame {pair[0]}, slice {pair[1]} reverted to the model's labels (Undo brings yours back).")

    def propagate_selected(self) -> None:
        """Propose labels for the other frames of the selected (or shown) slice, in the background."""
        if not self._ready():
            return
        img = self.state.current
        pair = self.selected_pair() or self.session.current_pair(self.key)
        if pair is None:
            self._error("select a slice to propagate.")
            return
        t, z = pair
        motion = img.result.motion
        if motion.shape[:4] != img.labels.shape:
            self._error("the motion does not match the segmentation; run the model again.")
            return
        key = self.key
        source = np.array(img.labels[t, z], copy=True)
        self.session.runner.start(key, "propagate", propagate_job, source, np.asarray(motion[:, z]), t,
                                  name=img.name, on_result=lambda out: self._land_propagation(key, t, z, out))
        self._status(f"Propagating frame {t} of slice {z}…")

    def _land_propagation(self, key, t: int, z: int, proposal: np.ndarray) -> None:
        img = self.state.image(key)
        if img is None or img.tracker is None:
            return
        self.session.sync(key)
        corrected = img.tracker.corrected
        updates = {(f, z): proposal[f] for f in range(proposal.shape[0])
                   if f != t and (f, z) not in corrected}
        self.session.write_slices(key, updates)
        self.state.set_propagated(key, updates)
        self._status(f"Proposed labels for {len(updates)} frame(s) of slice {z} from frame {t}. Check them, "
                     "then Accept; Undo removes them.")

    def accept_selected(self) -> None:
        """Accept the selected proposal (or, on a correction, every proposal of that slice)."""
        pair = self.selected_pair()
        if pair is None or not self._ready():
            if pair is None:
                self._error("select a proposed slice first.")
            return
        img = self.state.current
        pairs = [pair] if pair in img.tracker.propagated else [p for p in img.tracker.propagated if p[1] == pair[1]]
        done = self.state.accept(self.key, pairs)
        self._status(f"Accepted {len(done)} slice(s); they now count as corrections.")

    def accept_all(self) -> None:
        if not self._ready():
            return
        done = self.state.accept(self.key)
        self._status(f"Accepted {len(done)} slice(s); they now count as corrections.")

    def undo(self) -> None:
        """napari's Undo on the shown image's segmentation (paint, propagation, revert)."""
        if self._ready():
            self.session.undo(self.key)

    # ------------------------------------------------------------------ save / load

    def save_corrections(self, path: str | Path) -> tuple[Path, Path] | None:
        if not self._ready():
            return None
        img = self.state.current
        c = img.cine
        try:
            out = img.tracker.save(path, img.labels, affine=c.affine, spacing=c.spacing,
                                   frame_interval_ms=c.frame_interval_ms, source=c.name)
        except (CardiacMotionError, OSError) as exc:
            self._error(str(exc))
            return None
        self._status(f"Saved {out[0].name} and {out[1].name}.")
        return out

    def load_corrections(self, path: str | Path) -> bool:
        """Load corrections saved for this image; asks before replacing edits made here."""
        if not self._ready():
            return False
        img = self.state.current
        if img.has_edits() and not _session.ask(self, "Replace your edits?",
                                       f"'{img.name}' has {len(img.provenance())} edited slice(s). Loading "
                                       f"{Path(path).name} replaces them. Continue?"):
            return False
        try:
            labels = img.tracker.load(path)
        except (CardiacMotionError, OSError) as exc:
            self._error(str(exc))
            return False
        self.session.write_slices(self.key, {p: labels[p] for p in np.ndindex(*labels.shape[:2])
                                             if not np.array_equal(labels[p], img.labels[p])})
        self.state.notify(self.key, "edits")
        note = img.tracker.load_warning
        self._status(f"Loaded {len(img.corrected)} corrected slice(s) from {Path(path).name}."
                     + (f" {note}" if note else ""))
        if note:
            from napari.utils.notifications import show_warning

            show_warning(f"Cardiac motion: {note}")
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

    def _status(self, text: str) -> None:
        self.status_label.setText(text)
        self._paused_shown = False

    def _error(self, msg: str) -> None:
        from napari.utils.notifications import show_error

        self._status(f"Error: {msg}")
        show_error(f"Cardiac motion: {msg}")
