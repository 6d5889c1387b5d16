"""The slices counted in the ED/ES volumes, one row per slice, with a check box per structure and frame.

:class:`SlicesTable` shows the decisions of :func:`..analysis.slices.decide_slices` (LV and RV at ED and at
ES; the reason and the slice's volume on hover; a cell without a check box has no blood pool labelled)
and keeps the user's overrides ``{(frame, slice, "LV"|"RV"): included}`` with each Labels layer (in the
layer's metadata under :data:`OVERRIDES_KEY`, so closing and reopening the panel loses none); toggling a
box emits :attr:`SlicesTable.overrides_changed`, the panel then recomputes the read-out with them.
:class:`SlicesSection` puts a header with the "Rules decide" button above it and hides itself when the read-out
has no slices (an echo view).
"""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (QHBoxLayout, QHeaderView, QLabel, QPushButton, QTableWidget, QTableWidgetItem,
                            QVBoxLayout, QWidget)

from ..analysis.slices import SliceDecision

#: table columns after "slice": (structure, phase)
COLUMNS = (("LV", "ED"), ("LV", "ES"), ("RV", "ED"), ("RV", "ES"))
OVERRIDDEN_COLOUR = QColor(255, 214, 120)
#: where a Labels layer keeps the user's slice choices (``layer.metadata[OVERRIDES_KEY]``)
OVERRIDES_KEY = "slice_overrides"


class SlicesTable(QWidget):
    """Per-slice decisions (see module docstring). ``overrides`` are those of the current layer."""

    overrides_changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.table = QTableWidget(0, 1 + len(COLUMNS))
        self.table.setHorizontalHeaderLabels(["slice"] + [f"{s} {p}" for s, p in COLUMNS])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setToolTip("Slices counted in the ED/ES volumes (slice index; ml labelled). Untick to leave "
                              "a slice out, tick to count it; hover a box for the rule's reason.")
        self.table.setMinimumHeight(120)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        self._layer = None  # the Labels layer whose choices are shown (they live in its metadata)
        self._no_layer: dict[tuple[int, int, str], bool] = {}
        #: the decisions shown, by (frame, slice, structure)
        self.decisions: dict[tuple[int, int, str], SliceDecision] = {}
        self._cells: dict[tuple[int, int], tuple[int, int, str]] = {}  # (row, column) -> decision key
        self.table.itemChanged.connect(self._on_item_changed)

    @property
    def overrides(self) -> dict[tuple[int, int, str], bool]:
        """The user's choices for the current layer (a copy)."""
        return dict(self._store())

    def set_layer(self, layer) -> None:
        """Show (and keep) the overrides of ``layer`` (``None`` for none)."""
        self._layer = layer

    def _store(self) -> dict[tuple[int, int, str], bool]:
        """The current layer's choices, kept in its metadata (a plain dict without a layer)."""
        if self._layer is None:
            return self._no_layer
        meta = getattr(self._layer, "metadata", None)
        if meta is None:
            return self._no_layer
        return meta.setdefault(OVERRIDES_KEY, {})

    def clear_overrides(self) -> None:
        """Forget the current layer's choices (the rules decide again)."""
        store = self._store()
        if store:
            store.clear()
            self.overrides_changed.emit()

    def set_decisions(self, decisions: list[SliceDecision]) -> None:
        """Fill the table from the read-out's decisions (rows: slices with any decision, by index)."""
        self.decisions = {d.key: d for d in decisions}
        phase_frame = {d.phase: d.frame for d in decisions}
        slices = sorted({d.slice for d in decisions})
        self.table.blockSignals(True)
        try:
            self.table.setRowCount(len(slices))
            self._cells = {}
            for row, z in enumerate(slices):
                head = QTableWidgetItem(str(z))
                head.setFlags(Qt.ItemFlag.ItemIsEnabled)
                self.table.setItem(row, 0, head)
                for col, (structure, phase) in enumerate(COLUMNS, start=1):
                    d = self.decisions.get((phase_frame.get(phase, -1), z, structure))
                    self.table.setItem(row, col, self._cell(d))
                    if d is not None:
                        self._cells[(row, col)] = d.key
        finally:
            self.table.blockSignals(False)

    @staticmethod
    def _cell(d: SliceDecision | None) -> QTableWidgetItem:
        item = QTableWidgetItem("")
        if d is None:
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            item.setToolTip("no blood pool labelled in this slice")
            return item
        item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if d.included else Qt.CheckState.Unchecked)
        item.setText(f"{d.volume_ml:.1f}")
        item.setToolTip(f"{d.structure} at {d.phase} (frame {d.frame}), slice {d.slice}: {d.volume_ml:.1f} ml, "
                        f"{'counted' if d.included else 'not counted'}. {d.reason}")
        if d.overridden:
            item.setBackground(OVERRIDDEN_COLOUR)
        return item

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        key = self._cells.get((item.row(), item.column()))
        if key is None:
            return
        self.set_included(*key, item.checkState() == Qt.CheckState.Checked)

    def set_included(self, frame: int, slice_: int, structure: str, included: bool) -> None:
        """The user's choice for one decided slice (a choice equal to the rule's removes the override)."""
        d = self.decisions.get((frame, slice_, structure))
        if d is None:
            raise KeyError(f"no decision for frame {frame}, slice {slice_}, {structure}: nothing labelled there")
        rule = d.included != d.overridden  # what the rule alone said
        ov = self._store()
        if included == rule:
            ov.pop(d.key, None)
        else:
            ov[d.key] = included
        self.overrides_changed.emit()

    def item_for(self, frame: int, slice_: int, structure: str) -> QTableWidgetItem | None:
        """The check box cell of a decided slice (``None`` when nothing is labelled there)."""
        for (row, col), key in self._cells.items():
            if key == (frame, slice_, structure):
                return self.table.item(row, col)
        return None

    def is_checked(self, frame: int, slice_: int, structure: str) -> bool | None:
        """Whether the box of a decided slice is ticked (``None`` when the slice has none)."""
        item = self.item_for(frame, slice_, structure)
        return None if item is None else item.checkState() == Qt.CheckState.Checked


class SlicesSection(QWidget):
    """The "slices counted" header (label and "Rules decide" button) above a :class:`SlicesTable`; hidden when
    the read-out has no slice decisions (an apical echo view has nothing to count)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.table = SlicesTable()
        self.label = QLabel("slices counted (ml)")
        self.reset_button = QPushButton("Rules decide")
        self.reset_button.setToolTip("Forget your slice choices for this layer: the rules decide again.")
        self.reset_button.clicked.connect(self.table.clear_overrides)
        head = QHBoxLayout()
        head.addWidget(self.label, 1)
        head.addWidget(self.reset_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.table)

    def set_decisions(self, decisions: list[SliceDecision]) -> None:
        self.table.set_decisions(decisions)
        self.setVisible(bool(decisions))
