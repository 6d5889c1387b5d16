"""The curves of the "Cardiac function" panel, rendered off the GUI thread.

:func:`render_curves` (any thread, matplotlib Agg, no Qt) draws volume and strain curves (and the colour
bar of the motion arrows) into an RGBA buffer of the canvas's pixel size and keeps the figure for its
coordinate transforms. :class:`CurvesCanvas` (GUI thread) shows that buffer and paints the current-frame
marker over it with QPainter, so neither following the time slider nor a new result re-renders anything
on the GUI thread; a click is mapped back to a time through the kept figure's transforms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, Qt, Signal
from qtpy.QtGui import QColor, QImage, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from ..analysis import Measurements
from ..analysis import report as rep


@dataclass
class RenderedCurves:
    """An Agg rendering: ``rgba`` ``(H, W, 4)`` uint8 (device pixels), the figure and its curve axes."""

    rgba: np.ndarray
    figure: Any
    axes: list
    device_pixel_ratio: float


def warm_up() -> None:
    """Draw a tiny figure (any thread), so matplotlib's first-use work — importing its renderer, loading its
    fonts, ~0.1 s holding the GIL — is done before the first result rather than while it lands."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.0, 1.0), dpi=50)
    ax = fig.add_subplot()
    ax.plot([0.0, 1.0], [0.0, 1.0], marker="o", label="warm-up")
    ax.set_xlabel("time (ms)")
    ax.legend()
    FigureCanvasAgg(fig).draw()


def render_curves(m: Measurements, width_px: int, height_px: int, device_pixel_ratio: float = 1.0,
                  motion_legend: tuple[float, float, str, str] | None = None) -> RenderedCurves:
    """Render the panel's curves (any thread). ``motion_legend``: (low, high), colormap and unit of the arrows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100.0 * device_pixel_ratio
    w, h = max(int(width_px * device_pixel_ratio), 50), max(int(height_px * device_pixel_ratio), 50)
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)  # fixed layout: a layout engine costs every render
    canvas = FigureCanvasAgg(fig)
    lw, lh = w / device_pixel_ratio, h / device_pixel_ratio  # margins in logical pixels
    bar = 52 if motion_legend is not None else 0  # room for the colour bar and its label at the bottom
    grid = fig.add_gridspec(2, 1, left=min(58 / lw, 0.4), right=1 - 10 / lw, top=1 - 16 / lh,
                            bottom=min((56 + bar) / lh, 0.45), hspace=0.3)
    ax_v = fig.add_subplot(grid[0])
    ax_s = fig.add_subplot(grid[1], sharex=ax_v)
    rep.plot_volumes(ax_v, m)
    rep.plot_strain(ax_s, m)
    ax_v.set_xlabel("")
    if motion_legend is not None:
        left, right = min(58 / lw, 0.4), 1 - 10 / lw
        _motion_colour_bar(fig.add_axes((left, 42 / lh, right - left, 8 / lh)), *motion_legend)
    canvas.draw()
    rgba = np.array(canvas.buffer_rgba(), dtype=np.uint8, copy=True)
    return RenderedCurves(rgba, fig, [ax_v, ax_s], float(device_pixel_ratio))


def _motion_colour_bar(cax, low_mm: float, high_mm: float, cmap: str, unit: str = "mm") -> None:
    """Colour bar of the motion arrows (their colour is displacement magnitude) in ``unit`` (mm, or pixels)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cm = colormaps[cmap] if cmap in colormaps else colormaps["plasma"]
    cb = cax.figure.colorbar(ScalarMappable(Normalize(low_mm, max(high_mm, low_mm + 1e-6)), cmap=cm), cax=cax,
                             orientation="horizontal")
    cb.set_label(f"motion arrows: displacement from ED ({unit})", fontsize=7, labelpad=1)
    cb.ax.tick_params(labelsize=7)


class CurvesCanvas(QWidget):
    """Shows a :class:`RenderedCurves` with a vertical marker at ``marker_x``; emits ``clicked(x)``."""

    clicked = Signal(float)
    resized = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMinimumHeight(340)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.rendered: RenderedCurves | None = None
        self._image: QImage | None = None
        self.marker_x: float | None = None

    def set_rendered(self, rendered: RenderedCurves) -> None:
        self.rendered = rendered
        h, w = rendered.rgba.shape[:2]
        self._image = QImage(rendered.rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        self._image.setDevicePixelRatio(rendered.device_pixel_ratio)
        self.update()

    def set_marker(self, x: float | None) -> None:
        self.marker_x = x
        self.update()

    def render_size(self) -> tuple[int, int, float]:
        """(width, height) in logical pixels and the device pixel ratio to render for."""
        return max(self.width(), 200), max(self.height(), 340), float(self.devicePixelRatioF())

    def _marker_segments(self) -> list[tuple[float, float, float]]:
        """(x, y_top, y_bottom) of the marker in each curve axes, in logical widget pixels."""
        r = self.rendered
        if r is None or self.marker_x is None:
            return []
        height = r.rgba.shape[0]
        out = []
        for ax in r.axes:
            x_px = float(ax.transData.transform((self.marker_x, 0.0))[0])
            y0, y1 = ax.bbox.y0, ax.bbox.y1  # device pixels from the bottom
            out.append((x_px / r.device_pixel_ratio, (height - y1) / r.device_pixel_ratio,
                        (height - y0) / r.device_pixel_ratio))
        return out

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt)
        painter = QPainter(self)
        try:
            painter.fillRect(self.rect(), QColor("white"))
            if self._image is not None:
                painter.drawImage(QPointF(0, 0), self._image)
            painter.setPen(QPen(QColor(0, 0, 0, 180), 1.5))
            for x, top, bottom in self._marker_segments():
                painter.drawLine(QPointF(x, top), QPointF(x, bottom))
        finally:
            painter.end()

    def data_x_at(self, x: float, y: float) -> float | None:
        """The time (curve x) under a widget position, or ``None`` outside the curves."""
        r = self.rendered
        if r is None:
            return None
        dpr = r.device_pixel_ratio
        px, py = x * dpr, r.rgba.shape[0] - y * dpr
        for ax in r.axes:
            if ax.bbox.contains(px, py):
                return float(ax.transData.inverted().transform((px, py))[0])
        return None

    def widget_pos_of(self, x_data: float, y_data: float, axes_index: int = 0) -> tuple[float, float]:
        """Widget position (logical pixels) of a data point of one of the curve axes (for tests)."""
        r = self.rendered
        assert r is not None
        px, py = r.axes[axes_index].transData.transform((x_data, y_data))
        return px / r.device_pixel_ratio, (r.rgba.shape[0] - py) / r.device_pixel_ratio

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt)
        if event.button() != Qt.MouseButton.LeftButton:
            return
        pos = event.position() if hasattr(event, "position") else event.pos()
        x = self.data_x_at(float(pos.x()), float(pos.y()))
        if x is not None:
            self.clicked.emit(x)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt)
        super().resizeEvent(event)
        self.resized.emit()
