"""The Corrections panel in a real viewer: run → paint → edit detected (undo too) → propagate →
fine-tune (few steps, tiny model) → re-run, corrected slice untouched (run under Xvfb: ``make test``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_cardiac_motion.model import JointConfig, JointMotionSegNet, load_checkpoint, save_checkpoint  # noqa: E402
from napari_cardiac_motion.widgets import get_state  # noqa: E402
from napari_cardiac_motion.widgets import run_widget as rw  # noqa: E402
from napari_cardiac_motion.widgets.corrections_widget import CorrectionsWidget  # noqa: E402

TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    net = JointMotionSegNet(JointConfig(channels=(4, 8, 8, 8, 8), head=4, gru_hidden=4, max_flow=4.0))
    with torch.no_grad():
        net.seg_head[-1].bias.copy_(torch.tensor([0.0, 3.0, 0.0, 0.0]))
        net.flow_out.weight.normal_(std=0.05)
        net.flow_out.bias.fill_(0.05)
    return save_checkpoint(net, tmp_path_factory.mktemp("models") / "tiny.pt", {"name": "tiny", "version": "0"})


@pytest.fixture
def notifications(monkeypatch):
    import napari.utils.notifications as nt

    seen: dict[str, list[str]] = {"error": [], "info": []}
    monkeypatch.setattr(nt, "show_error", lambda msg, *a, **k: seen["error"].append(str(msg)))
    monkeypatch.setattr(nt, "show_info", lambda msg, *a, **k: seen["info"].append(str(msg)))
    return seen


@pytest.fixture
def home(tmp_path, monkeypatch):
    from napari_cardiac_motion.model_store import HOME_ENV

    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home"


def _setup(make_napari_viewer, qtbot, model_path, tiny_cine):
    viewer = make_napari_viewer()
    run = rw.RunWidget(viewer)
    viewer.window.add_dock_widget(run, name="Joint motion and segmentation")
    corr = CorrectionsWidget(viewer)
    viewer.window.add_dock_widget(corr, name="Corrections and fine-tuning")
    run.set_model_path(model_path)
    run.device_combo.setCurrentText("cpu")
    viewer.add_image(tiny_cine.data, name="tiny", scale=tiny_cine.napari_scale(),
                     metadata={"spacing": tiny_cine.spacing, "frame_interval_ms": 40.0, "affine": tiny_cine.affine})
    run.run_button.click()
    qtbot.waitUntil(lambda: not run.is_running, timeout=TIMEOUT_MS)
    assert run.last_outcome == "done", run.status_label.text()
    return viewer, run, corr


def _paint(layer, t, z, value, ys=slice(2, 8), xs=slice(2, 9)):
    yy, xx = np.mgrid[ys, xs]
    idx = (np.full(yy.size, t), np.full(yy.size, z), yy.ravel(), xx.ravel())
    layer.data_setitem(idx, value)  # what the brush does: writes history and emits `paint`


def test_whole_loop(make_napari_viewer, qtbot, model_path, tiny_cine, notifications, home):
    viewer, run, corr = _setup(make_napari_viewer, qtbot, model_path, tiny_cine)
    seg = viewer.layers["segmentation"]
    state = get_state(viewer)
    assert corr.corrected == []

    # paint → detected per (frame, slice)
    _paint(seg, 0, 0, 2)
    qtbot.waitUntil(lambda: corr.corrected == [(0, 0)], timeout=5000)
    _paint(seg, 2, 1, 3)
    qtbot.waitUntil(lambda: corr.corrected == [(0, 0), (2, 1)], timeout=5000)
    assert corr.list.count() == 2
    # undo / redo
    seg.undo()
    qtbot.waitUntil(lambda: corr.corrected == [(0, 0)], timeout=5000)
    seg.redo()
    qtbot.waitUntil(lambda: corr.corrected == [(0, 0), (2, 1)], timeout=5000)
    # clicking an item moves the viewer there
    corr.select_pair(2, 1)
    assert tuple(viewer.dims.current_step[:2]) == (2, 1)
    # revert slice
    corr.revert_button.click()
    assert corr.corrected == [(0, 0)]
    np.testing.assert_array_equal(seg.data[2, 1], state.predicted_labels[2, 1])

    # propagate (slice 0) and undo it in one step
    corr.select_pair(0, 0)
    before = np.array(seg.data[:, 0])
    corr.propagate_button.click()
    assert corr.undo_propagation_button.isEnabled()
    assert not np.array_equal(seg.data[:, 0], before)
    np.testing.assert_array_equal(seg.data[0, 0], before[0])
    corr.undo_propagation_button.click()
    np.testing.assert_array_equal(seg.data[:, 0], before)
    qtbot.waitUntil(lambda: corr.corrected == [(0, 0)], timeout=5000)

    # fine-tune (3 steps) → new model saved, used, cine re-predicted, corrected slice untouched
    painted = np.array(seg.data[0, 0])
    old_result = state.result
    corr.steps_spin.setValue(3)
    corr.finetune_button.click()
    assert corr.is_running
    qtbot.waitUntil(lambda: not corr.is_running, timeout=TIMEOUT_MS)
    assert corr.last_outcome == "done", (corr.status_label.text(), notifications)
    assert not notifications["error"]
    assert len(corr.loss_plot.values) == 3
    saved = list((home / "models").glob("*.pt"))
    assert len(saved) == 1 and state.model_path == saved[0]
    _, meta = load_checkpoint(saved[0])
    assert meta["corrected_slices"] == [[0, 0]] and meta["steps"] == 3 and meta["source_image"] == "tiny"
    assert state.result is not old_result
    np.testing.assert_array_equal(seg.data[0, 0], painted)
    assert corr.corrected == [(0, 0)]
    assert run.model_path() == str(saved[0])  # the Run panel now uses the fine-tuned model

    # re-run from the Run panel: the corrected slice survives
    run.run_button.click()
    qtbot.waitUntil(lambda: not run.is_running, timeout=TIMEOUT_MS)
    assert run.last_outcome == "done"
    qtbot.wait(200)
    np.testing.assert_array_equal(seg.data[0, 0], painted)
    assert corr.corrected == [(0, 0)]

    # revert model → back to the tiny model
    assert corr.revert_model_button.isEnabled()
    corr.revert_model_button.click()
    qtbot.waitUntil(lambda: not corr.is_running, timeout=TIMEOUT_MS)
    assert corr.last_outcome == "done", corr.status_label.text()
    assert str(state.model_path) == str(model_path)
    np.testing.assert_array_equal(seg.data[0, 0], painted)


def test_cancel_keeps_model_and_save_load(make_napari_viewer, qtbot, model_path, tiny_cine, notifications, home,
                                          tmp_path):
    viewer, run, corr = _setup(make_napari_viewer, qtbot, model_path, tiny_cine)
    seg = viewer.layers["segmentation"]
    state = get_state(viewer)
    _paint(seg, 1, 1, 2)
    qtbot.waitUntil(lambda: corr.corrected == [(1, 1)], timeout=5000)

    corr.steps_spin.setValue(2000)
    corr.finetune_button.click()
    qtbot.waitUntil(lambda: len(corr.loss_plot.values) >= 1, timeout=TIMEOUT_MS)
    corr.cancel_button.click()
    qtbot.waitUntil(lambda: not corr.is_running, timeout=TIMEOUT_MS)
    assert corr.last_outcome == "cancelled"
    assert str(state.model_path) == str(model_path)
    assert not (home / "models").exists() or not list((home / "models").glob("*.pt"))
    assert not corr.revert_model_button.isEnabled()

    # save, wipe, load
    painted = np.array(seg.data[1, 1])
    out = corr.save_corrections(tmp_path / "c.nii.gz")
    assert out is not None and out[1].exists()
    corr.select_pair(1, 1)
    corr.revert_button.click()
    assert corr.corrected == []
    assert corr.load_corrections(tmp_path / "c.nii.gz")
    assert corr.corrected == [(1, 1)]
    np.testing.assert_array_equal(seg.data[1, 1], painted)

    # errors are notifications, not tracebacks
    assert not corr.load_corrections(tmp_path / "missing.nii.gz")
    assert notifications["error"]
