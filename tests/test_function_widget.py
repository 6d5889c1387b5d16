"""The "Cardiac function" panel in a real napari viewer (run under Xvfb: ``make test``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_cardiac_motion.analysis import compute_measurements  # noqa: E402
from napari_cardiac_motion.widgets.function_widget import FunctionWidget  # noqa: E402

SPACING = (8.0, 1.5, 1.25)
INTERVAL = 40.0
TIMEOUT_MS = 30_000


def _labels() -> np.ndarray:
    """(T=5, Z=2, 40, 48): an LV disc whose radius 9 → 6 → 9 px, a myocardial ring 3 px, an RV blob."""
    t_n, z_n, h, w = 5, 2, 40, 48
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - 20, xx - 26)
    lab = np.zeros((t_n, z_n, h, w), np.uint8)
    for t, radius in enumerate((9, 8, 6, 7, 9)):
        for z in range(z_n):
            lab[t, z][(r >= radius) & (r < radius + 3)] = 2
            lab[t, z][r < radius] = 1
            lab[t, z][(np.hypot(yy - 20, xx - 8) < 5 + t % 2)] = 3
    return lab


def _viewer_with_segmentation(make_napari_viewer):
    viewer = make_napari_viewer()
    lab = _labels()
    image = viewer.add_image(lab.astype(np.float32), name="cine", scale=(1.0, *SPACING),
                             metadata={"spacing": SPACING, "frame_interval_ms": INTERVAL,
                                       "source_path": "/data/cine.nii.gz"})
    seg = viewer.add_labels(lab.copy(), name="segmentation", scale=image.scale,
                            metadata={"spacing": SPACING, "frame_interval_ms": INTERVAL, "source_layer": "cine",
                                      "model": "test-model", "model_version": "3"})
    return viewer, seg


def test_panel_table_curves_marker_click_edit_export(make_napari_viewer, qtbot, tmp_path):
    from qtpy.QtCore import QPoint, Qt

    viewer, seg = _viewer_with_segmentation(make_napari_viewer)
    widget = FunctionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cardiac function")
    qtbot.waitUntil(lambda: widget.n_computed >= 1 and widget.measurements is not None, timeout=TIMEOUT_MS)
    expected = compute_measurements(_labels(), SPACING, INTERVAL)
    assert widget.layer is seg
    assert widget.value_text("lv_edv_ml") == f"{expected['lv_edv_ml']:.1f}"
    assert widget.value_text("lv_ef_percent") == f"{expected['lv_ef_percent']:.1f}"
    assert widget.value_text("lv_mass_g") == f"{expected['lv_mass_g']:.1f}"
    assert widget.value_text("es_frame") == "2"
    assert expected["lv_ef_percent"] > 40  # the phantom does contract

    # the marker follows the time slider (frame 3 = 120 ms)
    viewer.dims.set_point(0, 3.0)
    assert widget.current_frame() == 3
    assert widget.marker_x() == pytest.approx(3 * INTERVAL)

    # a mouse click on the volume curve near 40 ms moves the time slider to frame 1
    x, y = widget.canvas.widget_pos_of(41.0, float(expected.lv_volume_ml[1]))
    qtbot.mouseClick(widget.canvas, Qt.MouseButton.LeftButton, pos=QPoint(round(x), round(y)))
    assert widget.current_frame() == 1
    assert widget.marker_x() == pytest.approx(INTERVAL)

    # painting LV blood pool into the ED frame updates the values (debounced, off the GUI thread)
    n_before = widget.n_computed
    viewer.dims.set_point(0, 0.0)
    seg.brush_size = 6
    seg.paint((0, 0, 20, 40), 1)
    assert seg.data[0, 0, 20, 40] == 1
    qtbot.waitUntil(lambda: widget.n_computed > n_before, timeout=TIMEOUT_MS)
    edited = compute_measurements(seg.data, SPACING, INTERVAL)
    assert edited["lv_edv_ml"] > expected["lv_edv_ml"]
    assert widget.value_text("lv_edv_ml") == f"{edited['lv_edv_ml']:.1f}"

    # overriding ES and giving height/weight
    widget.es_spin.setValue(1)
    widget.height_spin.setValue(180.0)
    widget.weight_spin.setValue(80.0)
    qtbot.waitUntil(lambda: widget.measurements.es_frame == 1 and widget.measurements["bsa_m2"] is not None,
                    timeout=TIMEOUT_MS)
    assert widget.value_text("bsa_m2") == "2.0"

    widget.export(tmp_path / "export")
    qtbot.waitUntil(lambda: widget.last_export is not None, timeout=TIMEOUT_MS)
    names = {p.name for p in widget.last_export.values()}
    assert {"measurements.json", "measurements.csv", "curves.csv", "volumes.png", "strain.png",
            "report.html"} <= names
    data = json.loads((tmp_path / "export" / "measurements.json").read_text())
    assert data["es_frame"] == 1 and data["model"] == {"name": "test-model", "version": "3"}
    assert data["input"] == "/data/cine.nii.gz"
    assert data["lv_edv_ml"] == pytest.approx(edited["lv_edv_ml"])


def _moving_model(tmp_path):
    """A tiny random network saved as a checkpoint: LV and myocardium, a small non-zero motion."""
    import torch

    from conftest import tiny_net
    from napari_cardiac_motion.model import save_checkpoint

    torch.manual_seed(0)
    net = tiny_net()
    with torch.no_grad():
        net.seg_head[-1].bias.copy_(torch.tensor([0.0, 2.0, 2.5, 0.0]))
        net.flow_out.weight.normal_(std=0.05)
        net.flow_out.bias.fill_(0.05)
    return save_checkpoint(net, tmp_path / "m.pt", {"name": "tiny-run", "version": "1"})


def _run_with_panel(viewer, qtbot, checkpoint):
    """Dock the Run and Cardiac function panels, run ``checkpoint`` on the viewer's image and wait for it."""
    from napari_cardiac_motion.widgets.run_widget import RunWidget

    run = RunWidget(viewer)
    viewer.window.add_dock_widget(run)
    run.set_model_path(checkpoint)
    widget = FunctionWidget(viewer)
    viewer.window.add_dock_widget(widget)
    run.run()
    qtbot.waitUntil(lambda: not run.is_running, timeout=120_000)
    return run, widget


def test_panel_uses_motion_of_a_run(make_napari_viewer, qtbot, tiny_cine, tmp_path):
    """After a real Run (tiny random model) the panel finds the dense motion: strain curves exist."""
    viewer = make_napari_viewer()
    viewer.add_image(tiny_cine.data, name="tiny", scale=tiny_cine.napari_scale(),
                     metadata={"spacing": tiny_cine.spacing, "frame_interval_ms": 40.0, "affine": tiny_cine.affine})
    _, widget = _run_with_panel(viewer, qtbot, _moving_model(tmp_path))
    seg = next(ly for ly in viewer.layers if ly.name.startswith("segmentation"))
    qtbot.waitUntil(lambda: widget.layer is seg and widget.measurements is not None
                    and widget.measurements.strain is not None, timeout=TIMEOUT_MS)
    m = widget.measurements
    assert m.model.get("name") == "tiny-run"
    assert m.strain.radial_percent.shape == (tiny_cine.shape[0],)
    assert np.isfinite(m.strain.radial_percent[m.strain.reference_frame])


def test_echo_run_hides_the_slice_table(make_napari_viewer, qtbot, tiny_cine, tmp_path):
    """A model that says it is echo (modality US) on a one-slice clip: the panel shows the echo read-out (no RV)
    and hides the short-axis slice table, which has nothing to count in an apical view; a short-axis stack
    shows it again."""
    import torch

    from napari_cardiac_motion.model import save_checkpoint
    from napari_cardiac_motion.model.checkpoint import read_checkpoint
    from napari_cardiac_motion.model.network import JointConfig, JointMotionSegNet
    from napari_cardiac_motion.model_description import ECHO_DEFAULT

    payload = read_checkpoint(_moving_model(tmp_path))
    net = JointMotionSegNet(JointConfig.from_dict(payload["config"]))
    net.load_state_dict(payload["state_dict"])
    with torch.no_grad():  # mostly LV cavity, some wall: an LV for the echo read-out to measure
        net.seg_head[-1].bias.copy_(torch.tensor([0.0, 2.6, 2.4, 0.0]))
    echo = save_checkpoint(net, tmp_path / "echo.pt", {"name": "tiny-echo", "version": "1",
                                                       **ECHO_DEFAULT.to_metadata()})
    viewer = make_napari_viewer()
    clip = tiny_cine.data[:, :1]
    viewer.add_image(clip, name="clip", scale=(1.0, 1.0, *tiny_cine.spacing[1:]),
                     metadata={"spacing": (1.0, *tiny_cine.spacing[1:]), "frame_interval_ms": 40.0})
    run, widget = _run_with_panel(viewer, qtbot, echo)
    assert run.last_outcome == "done", run.status_label.text()
    qtbot.waitUntil(lambda: widget.measurements is not None and widget.measurements.description.is_echo,
                    timeout=TIMEOUT_MS)
    assert widget.measurements.slices == [] and widget.value_text("rv_edv_ml") is None
    assert widget.slices_section.isHidden() and not widget.slices.isVisibleTo(widget)
    assert not widget.reset_slices_button.isVisibleTo(widget)
    lab = _labels()  # a short-axis stack (the phantom of the first test): its slices are listed again
    phantom = viewer.add_labels(lab, name="phantom", scale=(1.0, *SPACING),
                                metadata={"spacing": SPACING, "frame_interval_ms": INTERVAL})
    widget.set_layer(phantom)
    qtbot.waitUntil(lambda: widget.measurements is not None and not widget.measurements.description.is_echo
                    and widget.measurements.slices != [], timeout=TIMEOUT_MS)
    assert widget.slices.isVisibleTo(widget) and widget.reset_slices_button.isVisibleTo(widget)


def test_panels_docked_from_the_plugin_menu_show_strain_after_a_plain_run(make_napari_viewer, qtbot, tiny_cine,
                                                                           tmp_path):
    """The three panels docked as napari's Plugins menu docks them (each gets its own public-only proxy
    of the viewer, and sees proxies of the layers): after a plain Run the function panel finds the
    motion of the run and shows strain curves."""
    from napari_cardiac_motion.widgets.run_widget import RunWidget

    plugin = "napari-cardiac-motion"
    viewer = make_napari_viewer()
    viewer.add_image(tiny_cine.data, name="tiny", scale=tiny_cine.napari_scale(),
                     metadata={"spacing": tiny_cine.spacing, "frame_interval_ms": 40.0, "affine": tiny_cine.affine})
    docked = {}
    for title in ("Joint motion and segmentation", "Corrections and fine-tuning", "Cardiac function"):
        try:
            _, docked[title] = viewer.window.add_plugin_dock_widget(plugin, title)
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"the plugin is not registered with napari here ({exc})")
    run, widget = docked["Joint motion and segmentation"], docked["Cardiac function"]
    assert isinstance(run, RunWidget) and isinstance(widget, FunctionWidget)
    run.set_model_path(_moving_model(tmp_path))
    run.run()
    qtbot.waitUntil(lambda: not run.is_running, timeout=120_000)
    assert run.last_outcome == "done"
    qtbot.waitUntil(lambda: widget.n_computed >= 1 and not widget.is_busy,
                    timeout=TIMEOUT_MS)
    m = widget.measurements
    assert m is not None and m.strain is not None, widget.status.text()
    assert "strain not available" not in widget.status.text()
    assert np.isfinite(m.strain.radial_percent).any() and np.isfinite(m.strain.circumferential_percent).any()
    assert widget.value_text("peak_radial_strain_percent") not in (None, "—")
    # the panel says which strain it shows
    assert "Lagrangian" in widget.canvas.toolTip() and "end-diastole" in widget.canvas.toolTip()
    row = next(i for i in range(widget.table.rowCount()) if widget.table.item(i, 0).text() == "peak radial strain")
    assert "λ − 1" in widget.table.item(row, 1).toolTip()
    # the arrows' colour bar, its tick labels and its title lie inside the rendered canvas (nothing clipped)
    fig = widget.canvas.rendered.figure
    renderer = fig.canvas.get_renderer()
    bars = [ax for ax in fig.axes if "motion arrows" in ax.xaxis.label.get_text()]
    assert len(bars) == 1, "no colour bar of the motion arrows"
    box = bars[0].get_tightbbox(renderer)  # the bar, its tick labels and its title
    assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= fig.bbox.width, box


def test_toggling_a_slice_changes_the_edv_by_its_volume(make_napari_viewer, qtbot, tmp_path):
    """The slices table: unticking LV at ED in slice 1 lowers the EDV by that slice's LV volume, the
    export carries the choice; ticking it again restores the rule's read-out."""
    from qtpy.QtCore import Qt

    viewer, seg = _viewer_with_segmentation(make_napari_viewer)
    widget = FunctionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cardiac function")
    qtbot.waitUntil(lambda: widget.measurements is not None and not widget.is_busy, timeout=TIMEOUT_MS)
    m0 = widget.measurements
    ed = m0.ed_frame
    lab = _labels()
    slice_ml = (lab[ed, 1] == 1).sum() * SPACING[0] * SPACING[1] * SPACING[2] / 1000.0
    assert slice_ml > 1.0
    assert widget.slices.is_checked(ed, 1, "LV") is True
    assert widget.slices.table.rowCount() == lab.shape[1]
    item = widget.slices.item_for(ed, 1, "LV")
    assert f"{slice_ml:.1f} ml" in item.toolTip() and "counted" in item.toolTip()
    n = widget.n_computed
    item.setCheckState(Qt.CheckState.Unchecked)  # what a click on the box does
    qtbot.waitUntil(lambda: widget.n_computed > n and not widget.is_busy, timeout=TIMEOUT_MS)
    m1 = widget.measurements
    assert m1["lv_edv_ml"] == pytest.approx(m0["lv_edv_ml"] - slice_ml)
    assert m1["lv_esv_ml"] == pytest.approx(m0["lv_esv_ml"])
    assert widget.value_text("lv_edv_ml") == f"{m1['lv_edv_ml']:.1f}"
    assert widget.slices.is_checked(ed, 1, "LV") is False
    widget.export(tmp_path / "exp")
    qtbot.waitUntil(lambda: widget.last_export is not None, timeout=TIMEOUT_MS)
    data = json.loads((tmp_path / "exp" / "measurements.json").read_text())
    entry = next(e for e in data["slices"] if (e["frame"], e["slice"], e["structure"]) == (ed, 1, "LV"))
    assert entry["included"] is False and entry["overridden"] is True
    assert data["lv_edv_ml"] == pytest.approx(m1["lv_edv_ml"])
    # nothing lost: the choice lives with the Labels layer, so a panel opened again shows it
    viewer.window.remove_dock_widget(widget)
    widget = FunctionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cardiac function")
    qtbot.waitUntil(lambda: widget.measurements is not None and not widget.is_busy, timeout=TIMEOUT_MS)
    assert widget.slices.is_checked(ed, 1, "LV") is False
    assert widget.measurements["lv_edv_ml"] == pytest.approx(m1["lv_edv_ml"])
    n = widget.n_computed
    widget.reset_slices_button.click()  # the rules decide again
    qtbot.waitUntil(lambda: widget.n_computed > n and not widget.is_busy, timeout=TIMEOUT_MS)
    assert widget.measurements["lv_edv_ml"] == pytest.approx(m0["lv_edv_ml"])
    assert widget.slices.overrides == {}


def test_a_labels_layer_not_offered_says_why(make_napari_viewer, qtbot):
    """A 2D labels layer is not in the panel's list; selecting it says why (it was silently missing)."""
    viewer, seg = _viewer_with_segmentation(make_napari_viewer)
    widget = FunctionWidget(viewer)
    qtbot.waitUntil(lambda: widget.n_computed >= 1, timeout=TIMEOUT_MS)
    flat = viewer.add_labels(np.zeros((40, 48), np.uint8), name="one slice")
    viewer.layers.selection.active = flat
    assert flat not in widget._labels_layers() and seg in widget._labels_layers()
    assert "'one slice'" in widget.status.text() and "not offered" in widget.status.text()
