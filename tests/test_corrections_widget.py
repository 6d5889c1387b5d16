"""The Corrections widget in a real viewer: run → paint → edit detected (undo too) → revert (undoable) →
propagate (proposals, not corrections) → accept → teach (few steps, tiny model) → re-run, corrections
untouched → undo teaching → saved models listed and deleted (run under Xvfb: ``make test``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_cardiac_motion.model import load_checkpoint  # noqa: E402
from napari_cardiac_motion.widgets import _session, get_session  # noqa: E402
from napari_cardiac_motion.widgets import run_widget as rw  # noqa: E402
from napari_cardiac_motion.widgets.corrections_widget import CorrectionsWidget  # noqa: E402

TIMEOUT_MS = 120_000


@pytest.fixture
def answers(monkeypatch):
    """Questions the plugin asks; answer with ``answers.append(True/False)`` before the action."""
    class Replies(list):
        asked: list[str] = []

    replies = Replies()
    asked = replies.asked = []

    def fake_ask(parent, title, text):
        asked.append(text)
        return replies.pop(0) if replies else False

    monkeypatch.setattr(_session, "ask", fake_ask)
    return replies


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


def _idle(qtbot, corr):
    qtbot.waitUntil(lambda: not corr.is_running, timeout=TIMEOUT_MS)


def test_whole_loop(make_napari_viewer, qtbot, model_path, tiny_cine, notifications, home, answers):
    viewer, run, corr = _setup(make_napari_viewer, qtbot, model_path, tiny_cine)
    seg = viewer.layers["segmentation"]
    img = get_session(viewer).state.current
    panel = corr.corrections
    assert corr.corrected == []
    assert "paused" not in panel.status_label.text()  # the run is over: the tools are back

    # paint → detected per (frame, slice)
    _paint(seg, 0, 0, 2)
    qtbot.waitUntil(lambda: corr.corrected == [(0, 0)], timeout=5000)
    _paint(seg, 2, 1, 3)
    qtbot.waitUntil(lambda: corr.corrected == [(0, 0), (2, 1)], timeout=5000)
    qtbot.waitUntil(lambda: panel.list.count() == 2, timeout=5000)  # the list is rebuilt once per stroke
    assert "painted" in panel.list.item(0).text()
    # undo / redo (napari's own)
    seg.undo()
    qtbot.waitUntil(lambda: corr.corrected == [(0, 0)], timeout=5000)
    seg.redo()
    qtbot.waitUntil(lambda: corr.corrected == [(0, 0), (2, 1)], timeout=5000)
    # clicking an item moves the viewer there: the sliders read the same frame and slice
    corr.select_pair(2, 1)
    assert tuple(viewer.dims.current_step[:2]) == (2, 1)
    # revert slice — one napari undo step brings the painting back
    painted21 = np.array(seg.data[2, 1])
    corr.revert_button.click()
    assert corr.corrected == [(0, 0)]
    np.testing.assert_array_equal(seg.data[2, 1], img.predicted_labels[2, 1])
    panel.undo_button.click()
    np.testing.assert_array_equal(seg.data[2, 1], painted21)
    qtbot.waitUntil(lambda: corr.corrected == [(0, 0), (2, 1)], timeout=5000)

    # propagate slice 0 from frame 0: proposals on the other frames, NOT corrections
    corr.select_pair(0, 0)
    before = np.array(seg.data[:, 0])
    corr.propagate_button.click()
    _idle(qtbot, corr)
    qtbot.waitUntil(lambda: corr.propagated != [], timeout=5000)
    changed = [f for f in range(1, 4) if not np.array_equal(seg.data[f, 0], before[f])]
    assert changed
    assert corr.corrected == [(0, 0), (2, 1)]  # the corrected set after Propagate: unchanged
    assert corr.propagated == [(f, 0) for f in changed]
    panel.refresh()
    texts = [panel.list.item(i).text() for i in range(panel.list.count())]
    assert sum("not yet accepted" in t for t in texts) == len(changed)
    assert not (img.corrections_array()[changed[0], 0] != 255).any()  # not taught
    np.testing.assert_array_equal(seg.data[0, 0], before[0])
    # one Undo removes the whole propagation
    panel.undo_button.click()
    np.testing.assert_array_equal(seg.data[:, 0], before)
    qtbot.waitUntil(lambda: corr.propagated == [], timeout=5000)
    assert corr.corrected == [(0, 0), (2, 1)]
    # propagate again, accept one frame: it becomes a correction
    corr.select_pair(0, 0)
    corr.propagate_button.click()
    _idle(qtbot, corr)
    qtbot.waitUntil(lambda: corr.propagated != [], timeout=5000)
    first = corr.propagated[0]
    corr.select_pair(*first)
    panel.accept_button.click()
    assert first in corr.corrected and first not in corr.propagated

    # teach (2 steps) → new model saved, used, cine re-predicted, corrections untouched
    kept = {p: np.array(seg.data[p]) for p in corr.corrected}
    old_result = img.result
    corr.steps_spin.setValue(2)
    corr.finetune_button.click()
    assert corr.is_running
    assert not run.run_button.isEnabled()  # one job at a time on this image
    _idle(qtbot, corr)
    assert corr.finetune.last_outcome == "done", (corr.finetune.status_label.text(), notifications)
    assert not notifications["error"]
    assert len(corr.finetune.loss_plot.values) == 2
    saved = list((home / "models").glob("*.pt"))
    assert len(saved) == 1 and img.model_path == saved[0]
    _, meta = load_checkpoint(saved[0])
    assert sorted(map(tuple, meta["corrected_slices"])) == sorted(kept)
    assert meta["steps"] == 2 and meta["source_image"] == "tiny"
    assert img.result is not old_result
    for p, values in kept.items():
        np.testing.assert_array_equal(seg.data[p], values)
    assert corr.propagated == []  # proposals were redrawn by the new model
    assert run.model_path() == str(saved[0])  # the Run panel now uses the taught model
    assert corr.models.paths() == [str(saved[0])]

    # re-run from the Run panel: the corrections survive
    run.run_button.click()
    qtbot.waitUntil(lambda: not run.is_running, timeout=TIMEOUT_MS)
    assert run.last_outcome == "done"
    for p, values in kept.items():
        np.testing.assert_array_equal(seg.data[p], values)

    # the model in use cannot be deleted
    corr.models.select_path(saved[0])
    corr.models.delete_button.click()
    assert saved[0].exists() and "in use" in corr.models.status_label.text()

    # undo teaching → back to the tiny model, corrections still there
    assert corr.finetune.revert_model_button.isEnabled()
    corr.finetune.revert_model_button.click()
    _idle(qtbot, corr)
    assert corr.finetune.last_outcome == "done", corr.finetune.status_label.text()
    assert str(img.model_path) == str(model_path)
    for p, values in kept.items():
        np.testing.assert_array_equal(seg.data[p], values)

    # now it may be deleted, after asking: "no" keeps it, "yes" deletes it
    corr.models.select_path(saved[0])
    answers.append(False)
    corr.models.delete_button.click()
    assert saved[0].exists() and answers.asked
    answers.append(True)
    corr.models.delete_button.click()
    assert not saved[0].exists() and corr.models.paths() == []


def test_teaching_redraws_the_way_the_run_was_made(make_napari_viewer, qtbot, model_path, tiny_cine, notifications,
                                                    home):
    """Run with the mirror image switched off: the redraw after teaching, and after undoing it, is one pass too."""
    viewer, run, corr = _setup(make_napari_viewer, qtbot, model_path, tiny_cine)
    img = get_session(viewer).state.current
    assert img.result.metadata["tta"] is True  # the MR default
    run.tta_check.setChecked(False)
    run.run_button.click()
    qtbot.waitUntil(lambda: not run.is_running, timeout=TIMEOUT_MS)
    assert img.result.metadata["tta"] is False
    _paint(viewer.layers["segmentation"], 0, 0, 2)
    qtbot.waitUntil(lambda: corr.corrected == [(0, 0)], timeout=5000)
    corr.steps_spin.setValue(1)
    corr.finetune_button.click()
    _idle(qtbot, corr)
    assert corr.finetune.last_outcome == "done", (corr.finetune.status_label.text(), notifications)
    assert img.result.metadata["tta"] is False
    corr.finetune.revert_model_button.click()
    _idle(qtbot, corr)
    assert corr.finetune.last_outcome == "done" and img.result.metadata["tta"] is False


def test_cancel_keeps_model_and_save_load(make_napari_viewer, qtbot, model_path, tiny_cine, notifications, home,
                                          tmp_path, answers):
    viewer, run, corr = _setup(make_napari_viewer, qtbot, model_path, tiny_cine)
    seg = viewer.layers["segmentation"]
    img = get_session(viewer).state.current
    panel = corr.corrections
    _paint(seg, 1, 1, 2)
    qtbot.waitUntil(lambda: corr.corrected == [(1, 1)], timeout=5000)

    corr.steps_spin.setValue(2000)
    corr.finetune_button.click()
    qtbot.waitUntil(lambda: len(corr.finetune.loss_plot.values) >= 1, timeout=TIMEOUT_MS)
    corr.finetune.cancel_button.click()
    _idle(qtbot, corr)
    assert corr.finetune.last_outcome == "cancelled"
    assert str(img.model_path) == str(model_path)
    assert not (home / "models").exists() or not list((home / "models").glob("*.pt"))
    assert not corr.finetune.revert_model_button.isEnabled()

    # save, wipe, load
    painted = np.array(seg.data[1, 1])
    out = panel.save_corrections(tmp_path / "c.nii.gz")
    assert out is not None and out[1].exists()
    corr.select_pair(1, 1)
    corr.revert_button.click()
    assert corr.corrected == []
    assert panel.load_corrections(tmp_path / "c.nii.gz")
    assert corr.corrected == [(1, 1)]
    np.testing.assert_array_equal(seg.data[1, 1], painted)

    # loading over edits asks first; "no" keeps them
    _paint(seg, 3, 0, 3)
    qtbot.waitUntil(lambda: corr.corrected == [(1, 1), (3, 0)], timeout=5000)
    answers.append(False)
    assert not panel.load_corrections(tmp_path / "c.nii.gz")
    assert corr.corrected == [(1, 1), (3, 0)] and answers.asked

    # errors are notifications, not tracebacks
    answers.append(True)
    assert not panel.load_corrections(tmp_path / "missing.nii.gz")
    assert notifications["error"]


def test_undo_detected_without_napari_private_history(make_napari_viewer, qtbot, model_path, tiny_cine,
                                                       notifications, monkeypatch):
    """If napari drops its private undo stacks, undo/redo are still noticed (slices painted since the run)."""
    from napari_cardiac_motion.widgets import _napari_compat

    real = _napari_compat.napari_private
    monkeypatch.setattr(_napari_compat, "napari_private", lambda obj, name, default=None: default
                        if name in ("_undo_history", "_redo_history") else real(obj, name, default))
    viewer, run, corr = _setup(make_napari_viewer, qtbot, model_path, tiny_cine)
    seg = viewer.layers["segmentation"]
    _paint(seg, 3, 1, 2)
    qtbot.waitUntil(lambda: corr.corrected == [(3, 1)], timeout=5000)
    seg.undo()
    qtbot.waitUntil(lambda: corr.corrected == [], timeout=5000)
    seg.redo()
    qtbot.waitUntil(lambda: corr.corrected == [(3, 1)], timeout=5000)


def test_slices_to_check_listed_worst_first_and_clicked(make_napari_viewer, qtbot, model_path, tiny_cine,
                                                        notifications, home, monkeypatch):
    """The panel lists the flagged slices of the run (worst first); clicking one moves the sliders there."""
    from qtpy.QtCore import Qt

    from napari_cardiac_motion import qc

    monkeypatch.setattr(qc, "THRESHOLD", -1e9)  # flag every slice of the tiny model's run
    monkeypatch.setattr(qc, "MAX_FLAGGED_FRACTION", 1.0)
    viewer, run, corr = _setup(make_napari_viewer, qtbot, model_path, tiny_cine)
    panel = corr.corrections
    result = get_session(viewer).state.current.result
    n_t, n_z = tiny_cine.shape[:2]
    assert result.qc.flagged.all()
    expected = [(t, z) for t, z, _ in result.qc.worst()]
    assert panel.flagged_pairs() == expected and len(expected) == n_t * n_z
    scores = [s for _, _, s in result.qc.worst()]
    assert scores == sorted(scores, reverse=True)
    assert f"{n_t * n_z} of {n_t * n_z} flagged" in panel.qc_title.text()
    target = next(p for p in expected if p != tuple(viewer.dims.current_step[:2]))
    item = panel.qc_list.item(expected.index(target))
    assert item.text().startswith(f"frame {target[0]}, slice {target[1]} — score")
    why = result.qc.reasons[target]
    assert (why.split("; ")[0] in item.text()) and (why in item.toolTip()) if why else ":" not in item.text()
    panel.qc_list.scrollToItem(item)
    qtbot.mouseClick(panel.qc_list.viewport(), Qt.MouseButton.LeftButton,
                     pos=panel.qc_list.visualItemRect(item).center())
    assert tuple(viewer.dims.current_step[:2]) == target
    # a corrected slice says so in the list
    _paint(viewer.layers["segmentation"], target[0], target[1], 2)
    qtbot.waitUntil(lambda: "(corrected)" in panel.qc_list.item(expected.index(target)).text(), timeout=5000)


def test_nothing_flagged_says_so(make_napari_viewer, qtbot, model_path, tiny_cine, notifications, home, monkeypatch):
    from napari_cardiac_motion import qc

    monkeypatch.setattr(qc, "THRESHOLD", 1e9)
    viewer, run, corr = _setup(make_napari_viewer, qtbot, model_path, tiny_cine)
    panel = corr.corrections
    assert panel.flagged_pairs() == [] and panel.qc_list.count() == 0
    assert "none of the" in panel.qc_title.text()
