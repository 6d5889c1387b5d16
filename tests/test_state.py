"""The viewer state (no Qt): one owner of each image's prediction, labels and provenance."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_cardiac_motion.state import Busy, EditsWouldBeLost, ViewerState


def _result(value=1, shape=(4, 2, 12, 14)):
    labels = np.full(shape, value, np.uint8)
    return SimpleNamespace(labels=labels, ed_frame=0, es_frame=2, motion=np.zeros((*shape, 2), np.float32))


def test_apply_prediction_keeps_hand_and_accepted_in_place():
    st = ViewerState()
    img = st.apply_prediction("a", _result(1), name="a")
    shown = img.labels
    shown[1, 0, :3, :3] = 3  # painted
    assert st.note_edits("a", [(1, 0)])
    prop = np.full(shown.shape[2:], 2, np.uint8)
    shown[2, 1] = prop
    shown[3, 1] = prop
    st.set_propagated("a", {(2, 1): prop, (3, 1): prop})
    st.accept("a", [(3, 1)])
    assert img.corrected == [(1, 0), (3, 1)] and img.propagated == [(2, 1)]
    img2 = st.apply_prediction("a", _result(0))
    assert img2 is img and img.labels is shown  # the Labels layer keeps its array
    assert (shown[1, 0, :3, :3] == 3).all() and (shown[1, 0, 5:] == 1).all()  # the slice as the user saw it
    assert (shown[3, 1] == 2).all()  # accepted kept
    assert (shown[2, 1] == 0).all()  # proposal replaced
    assert (shown[0] == 0).all()
    assert img.corrected == [(1, 0), (3, 1)] and img.propagated == []
    np.testing.assert_array_equal(img.predicted_labels, 0)


def test_images_keep_their_own_edits():
    st = ViewerState()
    a = st.apply_prediction("a", _result(1), name="a")
    a.labels[0, 0, 0, 0] = 3
    st.note_edits("a", [(0, 0)])
    b = st.apply_prediction("b", _result(2), name="b")
    assert st.active == "b" and a is not b and a.labels is not b.labels
    assert a.corrected == [(0, 0)] and b.corrected == []
    assert a.labels[0, 0, 0, 0] == 3 and (b.labels == 2).all()
    st.set_active("a")
    assert st.current is a


def test_discarding_edits_needs_consent():
    st = ViewerState()
    img = st.apply_prediction("a", _result(1))
    img.labels[0, 0, 0, 0] = 3
    st.note_edits("a")
    bigger = _result(1, shape=(5, 2, 12, 14))
    assert "cannot be kept" in st.loss_if_applied("a", bigger.labels.shape)
    with pytest.raises(EditsWouldBeLost):
        st.apply_prediction("a", bigger)
    assert img.corrected == [(0, 0)]  # untouched
    st.apply_prediction("a", bigger, discard=True)
    assert img.corrected == [] and img.labels.shape == (5, 2, 12, 14)


def test_incremental_check_only_looks_at_the_given_slices():
    st = ViewerState()
    img = st.apply_prediction("a", _result(1))
    img.labels[2, 1, 0, 0] = 0
    img.labels[3, 0, 0, 0] = 0
    st.note_edits("a", [(2, 1)])
    assert img.corrected == [(2, 1)]  # (3, 0) was not painted through an event: not looked at
    st.note_edits("a")
    assert img.corrected == [(2, 1), (3, 0)]


def test_one_job_per_image_and_listeners():
    st = ViewerState()
    heard = []
    st.subscribe(lambda s, key, what: heard.append((key, what)))
    st.begin_job("a", "run")
    with pytest.raises(Busy, match="busy"):
        st.begin_job("a", "fine-tune")
    st.begin_job("b", "run")  # another image may work at the same time
    assert st.busy("a") == "run" and st.busy() == "run"
    st.end_job("a")
    st.end_job("b")
    assert st.busy() is None
    assert ("a", "busy") in heard and ("b", "busy") in heard


def test_fine_tuned_models_stack_for_undo(tmp_path):
    st = ViewerState()
    st.apply_prediction("a", _result(1), model_path=None, model_metadata={"name": "default"})
    st.push_model("a", tmp_path / "m1.pt", {"name": "m1"})
    st.push_model("a", tmp_path / "m2.pt", {"name": "m2"})
    assert st.current.model_path.name == "m2.pt"
    assert st.pop_model("a")[0].name == "m1.pt"
    assert st.pop_model("a") == (None, {"name": "default"})
    assert st.pop_model("a") is None


def test_corrections_array_is_the_finetuning_input():
    st = ViewerState()
    img = st.apply_prediction("a", _result(1))
    img.labels[1, 1] = 2
    st.note_edits("a", [(1, 1)])
    prop = np.full(img.labels.shape[2:], 3, np.uint8)
    img.labels[2, 1] = prop
    st.set_propagated("a", {(2, 1): prop})
    arr = img.corrections_array()
    assert (arr[1, 1] == 2).all()
    assert (arr[2, 1] == 255).all()  # not accepted: not taught
    st.accept("a")
    assert (img.corrections_array()[2, 1] == 3).all()


def test_jobs_get_private_model_copies(tmp_path):
    pytest.importorskip("qtpy")
    import torch

    from conftest import tiny_net
    from napari_cardiac_motion.model import save_checkpoint
    from napari_cardiac_motion.widgets._jobs import private_model

    net = tiny_net()
    path = save_checkpoint(net, tmp_path / "m.pt", {"name": "m"})
    a, _ = private_model(str(path))
    b, _ = private_model(str(path))
    assert a is not b
    pa, pb = next(a.parameters()), next(b.parameters())
    assert pa.data_ptr() != pb.data_ptr()
    with torch.no_grad():
        pa.add_(1.0)
    assert not torch.equal(pa, pb)
    a.train()
    assert not b.training


def test_shown_array_prepared_off_the_gui_thread_replaces_labels():
    st = ViewerState()
    first = _result(1)
    img = st.apply_prediction("a", first, shown=first.labels.copy())
    assert img.predicted_labels is first.labels  # shared with the result, not copied
    img.labels[1, 1, 0, 0] = 3
    st.note_edits("a", [(1, 1)])
    second = _result(2)
    fresh = second.labels.copy()
    st.apply_prediction("a", second, shown=fresh)
    assert img.labels is fresh and img.predicted_labels is second.labels
    assert img.labels[1, 1, 0, 0] == 3 and img.labels[1, 1, 5, 5] == 1  # the corrected slice as it was
    assert (img.labels[0] == 2).all() and img.corrected == [(1, 1)]
    assert (second.labels == 2).all()  # the result's labels are never written


def test_state_events_are_typed_and_compare_as_strings():
    from napari_cardiac_motion.state import StateEvent

    st = ViewerState()
    seen = []
    st.subscribe(lambda state, key, what: seen.append((key, what)))
    st.apply_prediction("a", _result(1), name="a")
    st.set_active("b")
    st.notify("a", "edits")  # a plain value is accepted and typed
    st.remove("a")
    assert [w for _, w in seen] == [StateEvent.RESULT, StateEvent.ACTIVE, StateEvent.EDITS, StateEvent.REMOVED]
    assert seen[1][0] == "b"
    assert all(type(w) is StateEvent for _, w in seen)
    assert seen[0][1] == "result" and f"{seen[0][1]}" == "result"
    with pytest.raises(ValueError):
        st.notify("a", "finished")
    assert {e.value for e in StateEvent} == {"result", "edits", "busy", "model", "active", "removed"}


def test_job_progress_is_one_type_for_prediction_and_finetuning():
    pytest.importorskip("qtpy")
    from napari_cardiac_motion.widgets._jobs import JobProgress

    pred = JobProgress.of(3, 10, "motion: slice 3/10")
    tune = JobProgress.of(2, 16, {"total": 1.5, "seg": 1})
    assert (pred.done, pred.total, pred.message, pred.losses) == (3, 10, "motion: slice 3/10", None)
    assert (tune.message, tune.losses) == ("", {"total": 1.5, "seg": 1.0})
    assert JobProgress.of(1, 2).message == "" and JobProgress.of(0, 1, pred) is pred
