"""Ways of losing the annotator's edits, tried in a real viewer (Xvfb).

Each test uses only the panels' public surface (Run panel, Corrections widget, the Labels layer's own
``paint``).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari.layers import Labels  # noqa: E402

from napari_cardiac_motion.widgets import run_widget as rw  # noqa: E402

TIMEOUT_MS = 120_000
PAINT = 3  # RV: the tiny model predicts LV (1) almost everywhere


@pytest.fixture(autouse=True)
def quiet(monkeypatch, tmp_path, notifications):
    """No message boxes (notifications are captured) and a private model folder."""
    from napari_cardiac_motion.model_store import HOME_ENV

    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))


def _viewer(make_napari_viewer, model_path):
    viewer = make_napari_viewer()
    run = rw.RunWidget(viewer)
    viewer.window.add_dock_widget(run, name="Joint motion and segmentation")
    run.set_model_path(model_path)
    run.device_combo.setCurrentText("cpu")
    return viewer, run


def _add(viewer, cine, name):
    return viewer.add_image(cine.data, name=name, scale=cine.napari_scale(),
                            metadata={"spacing": cine.spacing, "frame_interval_ms": 40.0, "affine": cine.affine})


def _run(qtbot, run, layer=None):
    if layer is not None:
        run.set_layer(layer)
    run.run_button.click()
    qtbot.waitUntil(lambda: not run.is_running, timeout=TIMEOUT_MS)
    assert run.last_outcome == "done", run.status_label.text()


def _brush(seg, t, z, y=12, x=14, size=9):
    """Paint with the Labels layer's own brush method (what a mouse stroke calls)."""
    seg.brush_size = size
    seg.n_edit_dimensions = 2
    seg.paint((t, z, y, x), PAINT)
    return np.array(seg.data[t, z] == PAINT)


def _segmentation_of(viewer, image_name):
    found = [ly for ly in viewer.layers if isinstance(ly, Labels) and ly.metadata.get("source_layer") == image_name]
    assert found, f"no segmentation layer for {image_name} in {[ly.name for ly in viewer.layers]}"
    return found[0]


def test_rerun_from_run_panel_alone_keeps_painted_voxels(make_napari_viewer, qtbot, model_path, tiny_cine):
    viewer, run = _viewer(make_napari_viewer, model_path)
    _add(viewer, tiny_cine, "tiny")
    _run(qtbot, run)
    seg = viewer.layers["segmentation"]
    painted = _brush(seg, 1, 0)
    assert painted.sum() >= 60
    _run(qtbot, run)
    seg = _segmentation_of(viewer, "tiny")
    assert int((seg.data[1, 0] == PAINT)[painted].sum()) == int(painted.sum())


def test_second_image_does_not_take_the_first_images_edits(make_napari_viewer, qtbot, model_path, tiny_cine):
    viewer, run = _viewer(make_napari_viewer, model_path)
    first = _add(viewer, tiny_cine, "first")
    _run(qtbot, run, first)
    painted = _brush(viewer.layers["segmentation"], 2, 1)
    second = _add(viewer, tiny_cine, "second")
    _run(qtbot, run, second)
    seg_first = _segmentation_of(viewer, "first")
    assert int((seg_first.data[2, 1] == PAINT)[painted].sum()) == int(painted.sum())
    # and back on the first image: a re-run there keeps them too
    _run(qtbot, run, first)
    seg_first = _segmentation_of(viewer, "first")
    assert int((seg_first.data[2, 1] == PAINT)[painted].sum()) == int(painted.sum())


def test_paint_while_run_is_working_is_kept(make_napari_viewer, qtbot, model_path, tiny_cine, monkeypatch):
    import napari_cardiac_motion.inference as inference

    viewer, run = _viewer(make_napari_viewer, model_path)
    _add(viewer, tiny_cine, "tiny")
    _run(qtbot, run)
    seg = viewer.layers["segmentation"]
    gate = threading.Event()
    real = inference.predict_cine

    def held(*args, **kwargs):
        gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "predict_cine", held)  # the job looks it up on the module at call time
    run.run_button.click()
    assert run.is_running
    painted = _brush(seg, 3, 1)  # the annotator keeps working while the model runs
    gate.set()
    qtbot.waitUntil(lambda: not run.is_running, timeout=TIMEOUT_MS)
    assert run.last_outcome == "done"
    seg = _segmentation_of(viewer, "tiny")
    assert int((seg.data[3, 1] == PAINT)[painted].sum()) == int(painted.sum())


def _with_corrections(make_napari_viewer, qtbot, model_path, tiny_cine):
    from napari_cardiac_motion.widgets.corrections_widget import CorrectionsWidget

    viewer, run = _viewer(make_napari_viewer, model_path)
    corr = CorrectionsWidget(viewer)
    viewer.window.add_dock_widget(corr, name="Corrections and fine-tuning")
    _add(viewer, tiny_cine, "tiny")
    _run(qtbot, run)
    return viewer, run, corr


def test_propagated_frames_are_not_corrections(make_napari_viewer, qtbot, model_path, tiny_cine):
    viewer, run, corr = _with_corrections(make_napari_viewer, qtbot, model_path, tiny_cine)
    seg = viewer.layers["segmentation"]
    _brush(seg, 0, 0, size=15)
    qtbot.waitUntil(lambda: list(corr.corrected) == [(0, 0)], timeout=5000)
    corr.select_pair(0, 0)
    corr.propagate_button.click()
    qtbot.waitUntil(lambda: not corr.is_running, timeout=TIMEOUT_MS)
    qtbot.wait(300)
    changed = [f for f in range(1, tiny_cine.shape[0]) if (seg.data[f, 0] == PAINT).any()]
    assert changed, "propagation proposed nothing"
    assert list(corr.corrected) == [(0, 0)]  # proposals are not corrections until accepted
    # a re-run replaces unaccepted proposals (they are not protected), keeps the hand correction
    _run(qtbot, run)
    qtbot.wait(300)
    seg = _segmentation_of(viewer, "tiny")
    assert (seg.data[0, 0] == PAINT).any()
    for f in changed:
        assert not (seg.data[f, 0] == PAINT).any(), f"frame {f}: an unaccepted proposal was kept as a correction"


def test_run_refused_while_finetuning_the_same_image(make_napari_viewer, qtbot, model_path, tiny_cine):
    viewer, run, corr = _with_corrections(make_napari_viewer, qtbot, model_path, tiny_cine)
    painted = _brush(viewer.layers["segmentation"], 1, 1)
    qtbot.waitUntil(lambda: list(corr.corrected) == [(1, 1)], timeout=5000)
    corr.steps_spin.setValue(2)
    corr.finetune_button.click()
    assert corr.is_running
    run.run_button.click()  # a second job on the same image
    started_twice = run.is_running
    qtbot.waitUntil(lambda: not corr.is_running and not run.is_running, timeout=TIMEOUT_MS)
    assert not started_twice, "Run started while fine-tuning worked on the same image"
    seg = _segmentation_of(viewer, "tiny")
    assert int((seg.data[1, 1] == PAINT)[painted].sum()) == int(painted.sum())
