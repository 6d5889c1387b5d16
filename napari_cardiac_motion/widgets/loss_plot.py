"""A tiny live plot of the fine-tuning loss per step (QPainter; no matplotlib)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QWidget


class LossPlot(QWidget):
    """Total loss per step, min–max scaled; the last value is written in the corner."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.values: list[float] = []
        self.setMinimumHeight(70)

    def set_values(self, values: list[float]) -> None:
        self.values = [float(v) for v in values]
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
