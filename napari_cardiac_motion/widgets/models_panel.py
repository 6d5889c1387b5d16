"""Panel "Saved models": the fine-tuned models in the user's model folder; use one, or delete one.

Thin wiring of :mod:`..model_store` (:func:`~..model_store.list_models`, :func:`~..model_store.delete_model`).
Deleting asks first (:func:`._session.ask`) and refuses a model an image is using.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from . import _session
from ._session import Session, get_session, unwrap


class ModelsPanel(QWidget):
    """List of saved fine-tuned models (newest first) with Use and Delete."""

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer = unwrap(napari_viewer)  # the viewer, not the Plugins menu's proxy
        self.session: Session = get_session(napari_viewer)
        self.state = self.session.state
        self.list = QListWidget()
        self.list.setToolTip("Your taught models: name, date, the image they learnt from.")
        self.use_button = QPushButton("Use for the next run")
        self.delete_button = QPushButton("Delete…")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Saved models:"))
        layout.addWidget(self.list)
        row = QHBoxLayout()
        row.addWidget(self.use_button)
        row.addWidget(self.delete_button)
        layout.addLayout(row)
        layout.addWidget(self.status_label)
        self.use_button.clicked.connect(self.use_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.session.changed.connect(self._on_state_changed)
        self.refresh()

    def _on_state_changed(self, key, what: str) -> None:
        if what == "model":
            self.refresh()

    def refresh(self) -> None:
        from ..model_store import list_models

        self.list.clear()
        for path, meta in list_models():
            source = meta.get("source_image") or "?"
            date = str(meta.get("date", ""))[:16].replace("T", " ")
            item = QListWidgetItem(f"{meta.get('name', path.stem)} — {date}, from '{source}'")
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            item.setToolTip(str(path))
            self.list.addItem(item)
        has = self.list.count() > 0
        self.use_button.setEnabled(has)
        self.delete_button.setEnabled(has)

    def paths(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def select_path(self, path: str | Path) -> None:
        for i in range(self.list.count()):
            if Path(self.list.item(i).data(Qt.ItemDataRole.UserRole)) == Path(path):
                self.list.setCurrentRow(i)
                return

    def selected_path(self) -> str | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def _run_widgets(self):
        from .run_widget import RunWidget

        docks = getattr(self.viewer.window, "dock_widgets", None) or {}
        for w in list(docks.values()):
            for cand in (w, getattr(w, "widget", lambda: None)()):
                if isinstance(cand, RunWidget):
                    yield cand

    def use_selected(self) -> None:
        path = self.selected_path()
        if path is None:
            return
        n = 0
        for run in self._run_widgets():
            run.set_model_path(path)
            n += 1
        self.status_label.setText(f"The Run panel now uses {Path(path).name}." if n else
                                  "Open the 'Joint motion and segmentation' panel to run with this model.")

    def delete_selected(self) -> None:
        """Delete the selected model after asking; refused while an image uses it."""
        from napari.utils.notifications import show_error

        from ..errors import CardiacMotionError
        from ..model_store import delete_model

        path = self.selected_path()
        if path is None:
            return
        users = [img.name for img in self.state.images.values()
                 if img.model_path is not None and Path(img.model_path) == Path(path)
                 or any(p is not None and Path(p) == Path(path) for p, _ in img.model_history)]
        if users:
            msg = f"{Path(path).name} is in use for {', '.join(users)}; it was not deleted."
            self.status_label.setText(msg)
            show_error(f"Cardiac motion: {msg}")
            return
        if not _session.ask(self, "Delete model?", f"Delete {Path(path).name} from your saved models? This cannot be undone."):
            return
        try:
            delete_model(path)
        except CardiacMotionError as exc:
            self.status_label.setText(str(exc))
            show_error(f"Cardiac motion: {exc}")
            return
        self.status_label.setText(f"Deleted {Path(path).name}.")
        self.refresh()
        for run in self._run_widgets():
            run.refresh_models()
