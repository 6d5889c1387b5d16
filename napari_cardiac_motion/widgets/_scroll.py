"""A dock widget's body in a scroll area, so that docking a tall panel never grows napari's window.

napari stacks dock widgets in its dock area, and Qt will not make a window smaller than the sum of their
minimum heights: with the Run, Corrections and Cardiac function panels docked, that sum (about 1,900 px
without scrolling) pushed the window's lower part, with its buttons, off any screen. Inside a scroll area a
panel asks for its full height when there is room, and scrolls when there is not.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QSize
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

#: the least height (px) a scrolling panel asks of the dock area: a few rows stay visible
MIN_VISIBLE_HEIGHT = 160


class FitScrollArea(QScrollArea):
    """A scroll area that prefers its content's full size and needs only :data:`MIN_VISIBLE_HEIGHT`."""

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt)
        body = self.widget()
        if body is None:
            return super().sizeHint()
        hint = body.sizeHint()
        bar = self.verticalScrollBar().sizeHint().width()
        return QSize(hint.width() + bar + 2 * self.frameWidth(), hint.height() + 2 * self.frameWidth())

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt)
        """The body's layout changed (built, a section shown or hidden): the hints above change with it, so
        the dock area must ask again (a scroll area does not pass its content's layout requests up)."""
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(obj, event)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt)
        body = self.widget()
        width = body.minimumSizeHint().width() if body is not None else 0
        bar = self.verticalScrollBar().sizeHint().width()
        return QSize(width + bar + 2 * self.frameWidth(), MIN_VISIBLE_HEIGHT)


def scrolling_layout(owner: QWidget) -> QVBoxLayout:
    """Fill ``owner`` with a :class:`FitScrollArea` and return the vertical layout of its body (the panel's
    widgets go there; they stay children of ``owner`` for ``findChild``)."""
    outer = QVBoxLayout(owner)
    outer.setContentsMargins(0, 0, 0, 0)
    area = FitScrollArea(owner)
    area.setObjectName("panel_scroll_area")
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    body = QWidget()
    area.setWidget(body)
    body.installEventFilter(area)
    outer.addWidget(area)
    return QVBoxLayout(body)


def scroll_to(widget: QWidget) -> None:
    """Scroll the panel holding ``widget`` (if it scrolls) so that as much of ``widget`` as fits is shown."""
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QScrollArea):
        parent = parent.parentWidget()
    if parent is not None:
        parent.ensureWidgetVisible(widget, 0, 0)
