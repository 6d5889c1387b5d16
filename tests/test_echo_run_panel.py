"""The Run panel picks the shipped echo model for an echo clip until the user chooses a model (headless, Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")

from napari_cardiac_motion import model_store  # noqa: E402
from napari_cardiac_motion._reader import get_nifti_reader  # noqa: E402
from napari_cardiac_motion.widgets import run_widget as rw  # noqa: E402

from test_echo_predict import write_clip  # noqa: E402


def _open(viewer, path):
    """Open ``path`` through the plugin's reader, as File › Open does: the reader marks echo layers."""
    layers = []
    for data, kwargs, _ in get_nifti_reader(str(path))(str(path)):
        layers.append(viewer.add_image(data, **kwargs))
    return layers[0]


@pytest.fixture
def panel(make_napari_viewer, qtbot, monkeypatch, tmp_path, tiny_cine):
    """A viewer with an MR cine and an echo clip (read by the reader), the echo model "installed"."""
    monkeypatch.setattr(model_store, "shipped_model_path", lambda name: tmp_path / f"{name}.pt")
    (tmp_path / "echo.pt").write_bytes(b"x")
    viewer = make_napari_viewer()
    mr = viewer.add_image(tiny_cine.data, name="mr cine", scale=tiny_cine.napari_scale())
    write_clip(tmp_path / "clip_4CH.nii.gz")
    echo = _open(viewer, tmp_path / "clip_4CH.nii.gz")
    widget = rw.RunWidget(viewer)
    qtbot.waitUntil(lambda: widget.warmed_up, timeout=60_000)  # its warm-up worker, before the viewer closes
    return widget, mr, echo


def test_run_panel_chooses_the_echo_model_for_an_echo_clip(panel):
    widget, mr, echo = panel
    assert rw.is_echo_layer(echo) and not rw.is_echo_layer(mr)
    widget.set_layer(echo)
    assert widget.model_path() == "echo"
    assert widget.model_combo.currentText() == rw.ECHO_MODEL_LABEL
    # the mirror-image switch: greyed out and unticked (echo reads one pass), the MR choice back afterwards
    assert not widget.tta_check.isEnabled() and not widget.tta_check.isChecked()
    widget.set_layer(mr)
    assert widget.model_path() is None  # the shipped MR model again
    assert widget.tta_check.isEnabled() and widget.tta_check.isChecked() and widget.tta() is None
    widget.tta_check.setChecked(False)
    widget.set_layer(echo)
    widget.set_layer(mr)
    assert widget.tta_check.isEnabled() and not widget.tta_check.isChecked()  # the user's one-pass choice stays
    widget.set_layer(echo)
    assert widget.model_path() == "echo"


def test_a_model_the_user_chose_stays(panel):
    widget, mr, echo = panel
    widget.set_layer(mr)
    index = widget.model_combo.findData("")
    widget.model_combo.setCurrentIndex(index)
    widget.model_combo.activated.emit(index)  # the user picks the MR model in the combobox
    widget.set_layer(echo)
    assert widget.model_path() is None
    widget.set_model_path("echo")  # an explicit choice (the Models panel, a script) stays too
    widget.set_layer(mr)
    assert widget.model_path() == "echo"


def test_no_echo_model_installed_keeps_the_default(panel, tmp_path):
    widget, mr, echo = panel
    (tmp_path / "echo.pt").unlink()
    widget.refresh_models()
    widget.set_layer(mr)
    widget.set_layer(echo)
    assert widget.model_path() is None and widget.model_combo.findData("echo") < 0


def test_run_on_an_echo_clip_names_the_echo_structures(make_napari_viewer, qtbot, notifications):
    """A real Run of the shipped echo model on a real CAMUS clip opened by the reader (a validation patient):
    the layers made while it works are filled, on the clip's grid, with the echo model's classes (a left
    atrium, no RV) and the motion's arrows."""
    from test_echo_predict import CAMUS

    src = CAMUS / "patient0015" / "patient0015_2CH_seq.nii.gz"
    if not model_store.shipped_model_path("echo").is_file() or not src.is_file():
        pytest.skip("the shipped echo model or the shared CAMUS data is not here")
    viewer = make_napari_viewer()
    echo = _open(viewer, src)
    widget = rw.RunWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.device_combo.setCurrentText("cpu")
    widget.set_layer(echo)
    assert widget.model_path() == "echo"
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=120_000)
    assert widget.last_outcome == "done", (widget.status_label.text(), notifications)
    seg, mot = viewer.layers["segmentation"], viewer.layers["motion"]
    names = [n.lower() for n in seg.features["name"]]
    assert "left atrium" in names and not any("rv" in n for n in names), names
    n_t = echo.data.shape[0]
    assert seg.editable and seg.data.shape[0] == n_t and seg.data.shape[-2:] == echo.data.shape[-2:]
    assert set(np.unique(seg.data)) >= {0, 1, 2, 3} and len(mot.data) > 0
    # arrows about 6 mm apart on the 0.308 mm clip (every 19th pixel), not every 4th pixel as on MR
    xs = np.unique(np.round(mot.data[:, 0, -1] + mot.data[:, 1, -1], 3))  # arrow ends: the grid points
    assert np.diff(xs).min() >= 19 - 1e-6 and len(mot.data) < 150 * n_t, (np.diff(xs)[:5], len(mot.data))


def test_the_run_panel_passes_on_that_a_clip_has_no_pixel_size():
    """The reader marks a video (no physical pixel size) ``spacing_known`` False; the Run panel's snapshot of
    the layer carries it into the cine the model reads (it was dropped: a video was taken as 1 mm pixels)."""
    from napari.layers import Image

    from napari_cardiac_motion.widgets._jobs import snapshot_to_cine
    from napari_cardiac_motion.widgets._session import layer_snapshot

    data = np.random.default_rng(0).random((3, 1, 40, 50)).astype(np.float32)
    video = Image(data, name="video", metadata={"spacing": (1.0, 1.0, 1.0), "spacing_known": False})
    scan = Image(data, name="scan", metadata={"spacing": (1.0, 0.3, 0.3)})
    assert snapshot_to_cine(layer_snapshot(video)).spacing_known is False
    assert snapshot_to_cine(layer_snapshot(scan)).spacing_known is True
