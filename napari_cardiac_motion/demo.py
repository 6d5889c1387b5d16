"""Open napari with the sample cine, the Run and Cardiac function panels docked and the model already run.

    python -m napari_cardiac_motion.demo [--screenshot PATH] [--device auto] [--model CKPT]

The model runs through the dock widget's own worker (the same path a user's click takes); the demo
waits for it (and for the Cardiac function panel's read-out of it: volume and strain curves), then shows
the ES frame on a mid-ventricular slice. With ``--screenshot`` the whole
window is saved to PATH and the program exits (exit code 1 if the run failed); otherwise napari stays
open.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PLUGIN = "napari-cardiac-motion"
WIDGET = "Joint motion and segmentation"
FUNCTION_WIDGET = "Cardiac function"


def _dock(viewer, title: str, cls):
    """The plugin's dock widget through npe2 (as the Plugins menu does), else a direct instance."""
    try:
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, title)
        if isinstance(widget, cls):
            return widget
    except Exception:  # plugin not installed/registered (e.g. run from a source tree)
        pass
    widget = cls(viewer)
    viewer.window.add_dock_widget(widget, name=title, area="right")
    return widget


def _dock_run_widget(viewer):
    from .widgets.run_widget import RunWidget

    return _dock(viewer, WIDGET, RunWidget)


def _dock_function_widget(viewer):
    from .widgets.function_widget import FunctionWidget

    return _dock(viewer, FUNCTION_WIDGET, FunctionWidget)


def _camera(viewer):
    """The viewer's camera: ``viewer.scene.camera`` (napari ≥ 0.9 deprecates ``viewer.camera``)."""
    scene = getattr(viewer, "scene", None)
    camera = getattr(scene, "camera", None)
    return camera if camera is not None else viewer.camera


def _wait(widget, timeout_s: float) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    t0 = time.monotonic()
    while widget.is_running:
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout_s:
            widget.cancel()
            t0 = time.monotonic() + 1e9  # wait for the cancel to land
    app.processEvents()


def _wait_read_out(function, n_before: int, timeout_s: float = 60.0) -> None:
    """Until the Cardiac function panel has read out the new result (it recomputes after a short delay)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        app.processEvents()
        if function.n_computed > n_before and not function.is_busy:
            return
        time.sleep(0.02)


def mid_ventricular_slice(labels, ed_frame: int) -> int:
    """The middle of the slices holding LV at ED (else the middle slice)."""
    import numpy as np

    n_z = labels.shape[1]
    zs = np.nonzero((labels[ed_frame] == 1).reshape(n_z, -1).any(1))[0]
    return int(np.median(zs)) if zs.size else n_z // 2


def _zoom_to_heart(viewer, state, margin: float = 1.4) -> None:
    """Centre the camera on the predicted heart (all frames, all slices) and zoom so it fills ~1/margin."""
    import numpy as np

    labels = state.result.labels
    yx = np.nonzero((labels > 0).any(axis=(0, 1)))
    if yx[0].size == 0:
        return
    lo = np.array([yx[0].min(), yx[1].min()], float)
    hi = np.array([yx[0].max(), yx[1].max()], float) + 1
    size = labels.shape[-2:]
    if np.all(hi - lo > 0.8 * np.array(size)):  # the "heart" is the whole image: keep the full view
        return
    scale = np.array(state.scale[-2:], float)
    translate = np.array(state.translate[-2:], float)
    centre = translate + scale * (lo + hi - 1) / 2
    factor = float(np.min(np.array(size) / ((hi - lo) * margin)))
    camera = _camera(viewer)
    camera.center = (float(centre[0]), float(centre[1]))
    camera.zoom = camera.zoom * max(1.0, min(factor, 4.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_cardiac_motion.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--screenshot", metavar="PATH", help="save a screenshot of the window and exit")
    parser.add_argument("--device", default="auto", help="auto|cpu|cuda|mps (default auto)")
    parser.add_argument("--model", default=None, help="checkpoint .pt (default: the shipped model)")
    parser.add_argument("--arrows", default="from_ed", choices=["from_ed", "frame_to_frame"])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before the run is cancelled")
    args = parser.parse_args(argv)

    import napari
    import numpy as np

    from ._sample_data import load_sample_cine

    viewer = napari.Viewer(title="napari-cardiac-motion demo")
    data, kwargs, _ = load_sample_cine()[0]
    image = viewer.add_image(data, **kwargs)  # the reader's kwargs name the axes t, z, y, x
    widget = _dock_run_widget(viewer)
    function = _dock_function_widget(viewer)
    widget.set_layer(image)
    if args.model:
        widget.set_model_path(args.model)
    if widget.device_combo.findText(args.device) < 0:
        print(f"error: device '{args.device}' is not available here", file=sys.stderr)
        return 2
    widget.device_combo.setCurrentText(args.device)
    widget.set_arrow_mode(args.arrows)
    n_read = function.n_computed
    widget.run()
    _wait(widget, args.timeout)
    if widget.last_outcome == "done":
        _wait_read_out(function, n_read)
    print(f"demo: {widget.status_label.text()}", file=sys.stderr)

    state = widget.state.current
    ok = widget.last_outcome == "done" and state is not None and state.result is not None
    if ok:
        r = state.result
        frame = r.es_frame
        if frame == r.ed_frame and r.labels.shape[0] > 1:  # no LV found: show the frame that moves most
            mean_motion = np.abs(r.motion).reshape(r.labels.shape[0], -1).mean(1)
            frame = int(np.argmax(mean_motion))
        viewer.dims.set_current_step(0, frame)
        viewer.dims.set_current_step(1, mid_ventricular_slice(r.labels, r.ed_frame))
        viewer.layers.selection.active = image
    viewer.reset_view()
    if ok:
        _zoom_to_heart(viewer, state)

    if args.screenshot:
        from qtpy.QtWidgets import QApplication

        from .widgets._scroll import scroll_to

        viewer.window._qt_window.resize(1280, 860)
        for _ in range(10):
            QApplication.instance().processEvents()
            time.sleep(0.05)
        scroll_to(function.canvas)  # the curves, in a Cardiac function panel shorter than its content
        QApplication.instance().processEvents()
        path = Path(args.screenshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(path), canvas_only=False)
        print(f"demo: screenshot saved to {path}", file=sys.stderr)
        viewer.close()
        return 0 if ok else 1
    napari.run()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
