"""A model says what it segments: the description in checkpoint metadata and where its names are used."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_net
from napari_cardiac_motion.conventions import LABEL_COLORS, LABEL_NAMES, STRUCTURE_KEYS
from napari_cardiac_motion.errors import CheckpointError
from napari_cardiac_motion.layers import segmentation_layer_data
from napari_cardiac_motion.model.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, save_checkpoint
from napari_cardiac_motion.model_description import MR_DEFAULT, ModelDescription, describe, with_description

#: an echo-like model: the third class is the left atrium, not the RV
ECHO_CLASSES = [
    {"value": 1, "name": "LV cavity", "key": "LV", "color": [1.0, 0.0, 0.0, 1.0]},
    {"value": 2, "name": "LV wall", "key": "Myo", "color": [0.0, 1.0, 0.0, 1.0]},
    {"value": 3, "name": "left atrium", "key": "LA", "color": [1.0, 1.0, 0.0, 1.0]},
]


def test_mr_default_is_todays_conventions():
    assert MR_DEFAULT.modality == "MR"
    assert MR_DEFAULT.names() == LABEL_NAMES
    assert MR_DEFAULT.keys() == STRUCTURE_KEYS
    assert MR_DEFAULT.colors() == {k: pytest.approx(v) for k, v in LABEL_COLORS.items()}
    assert MR_DEFAULT.geometry["policy"] == "short-axis stack"
    assert describe(None) == MR_DEFAULT and describe({"name": "old"}) == MR_DEFAULT


def test_saved_checkpoint_carries_the_description(tmp_path):
    path = save_checkpoint(tiny_net(), tmp_path / "m.pt", {"name": "m"})
    meta = torch.load(path, map_location="cpu", weights_only=True)["metadata"]
    assert meta["name"] == "m" and meta["modality"] == "MR"
    assert [c["name"] for c in meta["classes"]] == ["LV blood pool", "LV myocardium", "RV blood pool"]
    assert meta["geometry"] == MR_DEFAULT.geometry


def test_old_checkpoint_loads_with_mr_defaults(tmp_path):
    net = tiny_net()
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": net.config.to_dict(),
               "state_dict": net.state_dict(), "metadata": {"name": "old", "version": "1"}}
    torch.save(payload, tmp_path / "old.pt")  # as written before the description existed
    _, meta = load_checkpoint(tmp_path / "old.pt")
    assert meta["name"] == "old" and meta["modality"] == "MR"
    assert describe(meta) == MR_DEFAULT


def test_custom_classes_name_the_labels_layer(tmp_path):
    path = save_checkpoint(tiny_net(), tmp_path / "echo.pt", {"name": "echo", "modality": "US",
                                                              "classes": ECHO_CLASSES})
    _, meta = load_checkpoint(path)
    d = describe(meta)
    assert d.modality == "US" and d.value_of("LA") == 3 and d.by_key("RV") is None
    _, kwargs, _ = segmentation_layer_data(np.zeros((1, 1, 4, 4), np.uint8), description=d)
    assert kwargs["features"]["name"] == ["background", "LV cavity", "LV wall", "left atrium"]
    assert kwargs["features"]["index"] == [0, 1, 2, 3]
    assert kwargs["colormap"][3] == pytest.approx((1.0, 1.0, 0.0, 1.0))
    assert kwargs["colormap"][0][3] == 0
    # without a description: today's MR names
    _, mr, _ = segmentation_layer_data(np.zeros((1, 1, 4, 4), np.uint8))
    assert mr["features"]["name"] == ["background", "LV blood pool", "LV myocardium", "RV blood pool"]


def test_classes_must_fit_the_network(tmp_path):
    with pytest.raises(ValueError, match="outputs 4 classes"):
        save_checkpoint(tiny_net(), tmp_path / "bad.pt",
                        {"classes": ECHO_CLASSES + [{"value": 4, "name": "RA", "color": [0, 0, 1]}]})
    assert not (tmp_path / "bad.pt").exists()


def test_malformed_description_is_a_checkpoint_error(tmp_path):
    net = tiny_net()
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": net.config.to_dict(),
               "state_dict": net.state_dict(), "metadata": {"classes": [{"value": 1, "name": "a"},
                                                                        {"value": 1, "name": "b"}]}}
    torch.save(payload, tmp_path / "dup.pt")
    with pytest.raises(CheckpointError, match="model description"):
        load_checkpoint(tmp_path / "dup.pt")


def test_with_description_keeps_present_keys():
    echo = describe({"modality": "US", "classes": ECHO_CLASSES})
    meta = with_description({"modality": "CT"}, echo)
    assert meta["modality"] == "CT" and meta["classes"] == echo.to_metadata()["classes"]
    assert ModelDescription.from_metadata(echo.to_metadata()) == echo


def test_finetuned_models_inherit_the_description(tmp_path):
    from napari_cardiac_motion.model_store import save_finetuned, save_model_to

    echo = describe({"modality": "US", "classes": ECHO_CLASSES})
    p1 = save_finetuned(tiny_net(), {"parent": "echo"}, folder=tmp_path, description=echo)
    p2 = save_model_to(tiny_net(), tmp_path / "out.pt", {"parent": "echo"}, echo)
    p3 = save_finetuned(tiny_net(), {"parent": "mr"}, folder=tmp_path)
    assert describe(load_checkpoint(p1)[1]) == echo
    assert describe(load_checkpoint(p2)[1]) == echo
    assert describe(load_checkpoint(p3)[1]) == MR_DEFAULT


def test_read_out_finds_structures_by_key():
    from napari_cardiac_motion.analysis import compute_measurements
    from napari_cardiac_motion.analysis.report import plot_volumes

    labels = np.zeros((3, 1, 8, 8), np.uint8)
    labels[:, 0, :2, :] = 3  # the third class: RV for MR, left atrium for the echo model
    for t in range(3):
        labels[t, 0, 4:, : 3 + t] = 1
    mr = compute_measurements(labels, (1.0, 1.0, 1.0))
    assert mr["rv_edv_ml"] > 0 and mr.description == MR_DEFAULT
    echo = describe({"modality": "US", "classes": ECHO_CLASSES})
    m = compute_measurements(labels, (1.0, 1.0, 1.0), description=echo)
    assert m["rv_edv_ml"] == 0 and m["lv_edv_ml"] == mr["lv_edv_ml"]  # no RV in an echo model
    assert "description" not in m.to_dict()  # measurements.json is unchanged

    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    plot_volumes(ax, m)
    assert ax.get_lines()[0].get_color() == "#ff0000"  # the echo model's LV colour
    ax = Figure().add_subplot()
    plot_volumes(ax, mr)
    assert [ln.get_color() for ln in ax.get_lines()[:2]] == ["#e63333", "#4073f2"]  # today's MR colours
