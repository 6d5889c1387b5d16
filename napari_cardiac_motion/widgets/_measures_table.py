"""The Cardiac function panel's table of measures: name, value, unit; each row's help as its tooltip."""

from __future__ import annotations

from qtpy.QtWidgets import QHeaderView, QTableWidget, QTableWidgetItem

from ..analysis import Measurements
from ..analysis import report as rep
from ._function_context import DISPLAY_NAMES, STRAIN_HELP, STRAIN_MEASURES, hide_row


class MeasuresTable(QTableWidget):
    """Read-only table of a :class:`~..analysis.Measurements`' scalars (rows a read-out has no value for
    hidden: :func:`._function_context.hide_row`)."""

    def __init__(self, parent=None):
        super().__init__(0, 3, parent)
        self.setHorizontalHeaderLabels(["measure", "value", "unit"])
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.setMinimumHeight(180)

    def fill(self, m: Measurements) -> None:
        rows = [(k, v, u, h) for k, v, u, h in rep.measures_table(m) if not hide_row(m, k, v)]
        self.setRowCount(len(rows))
        for i, (key, value, unit, help_) in enumerate(rows):
            if key in STRAIN_MEASURES:
                help_ = f"{help_}\n\n{STRAIN_HELP}"
            for j, text in enumerate((DISPLAY_NAMES.get(key, key), value, unit)):
                item = QTableWidgetItem(text)
                item.setToolTip(help_)
                self.setItem(i, j, item)

    def value_text(self, key: str) -> str | None:
        """The displayed value of a measure (``None`` when not shown)."""
        name = DISPLAY_NAMES.get(key, key)
        for i in range(self.rowCount()):
            if self.item(i, 0).text() == name:
                return self.item(i, 1).text()
        return None
