"""Corrections tracking: per-(frame, slice) diffing (undo included), revert, merge, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cardiac_motion.conventions import UNLABELLED
from napari_cardiac_motion.corrections import CorrectionTracker, labelled_pairs, sidecar_path
from napari_cardiac_motion.errors import InputError


@pytest.fixture
def pred():
    p = np.zeros((4, 3, 20, 24), np.uint8)
    p[:, :, 5:12, 6:14] = 1
    return p


def test_edits_detected_per_slice_including_undo(pred):
    tr = CorrectionTracker(pred)
    layer = pred.copy()  # the napari layer's array, edited in place
    assert tr.update_from_labels(layer) == set()
    layer[2, 1, 0:3, 0:3] = 2  # paint
    layer[0, 0, 8, 8] = 0  # erase one voxel
    assert tr.update_from_labels(layer) == {(2, 1), (0, 0)}
    layer[0, 0, 8, 8] = 1  # undo the erase
    assert tr.update_from_labels(layer, pairs=[(0, 0)]) == {(2, 1)}
    assert tr.changed_slices(layer) == {(2, 1)}
    # the tracker's prediction is a copy, not a view of the layer
    assert tr.prediction[2, 1, 0, 0] == 0


def test_revert_returns_prediction_slice(pred):
    tr = CorrectionTracker(pred)
    layer = pred.copy()
    layer[1, 2] = 3
    tr.update_from_labels(layer)
    layer[1, 2] = tr.revert(1, 2)
    assert tr.corrected == set()
    assert np.array_equal(layer, pred)


def test_merge_keeps_corrected_slices(pred):
    tr = CorrectionTracker(pred)
    layer = pred.copy()
    layer[3, 0, :2, :2] = 2
    tr.update_from_labels(layer)
    new = np.full_like(pred, 3)
    merged = tr.merge_new_prediction(new, layer)
    assert np.array_equal(merged[3, 0], layer[3, 0])
    assert (merged[0] == 3).all() and (merged[3, 1:] == 3).all()
    assert tr.corrected == {(3, 0)}
    assert np.array_equal(tr.prediction, new)
    merged2 = tr.merge_new_prediction(new, merged, overwrite=True)
    assert (merged2 == 3).all() and tr.corrected == set()


def test_corrections_array_format(pred):
    tr = CorrectionTracker(pred)
    layer = pred.copy()
    layer[1, 1, 0, 0] = 2
    tr.update_from_labels(layer)
    arr = tr.corrections_array(layer)
    assert labelled_pairs(arr) == [(1, 1)]
    assert (arr[0] == UNLABELLED).all()
    assert np.array_equal(arr[1, 1], layer[1, 1])


def test_save_load_roundtrip(tmp_path, pred):
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    affine[:3, 3] = [10, -20, 5]
    tr = CorrectionTracker(pred)
    layer = pred.copy()
    layer[2, 0, 0:4, 0:4] = 3
    layer[0, 2, 10, 10] = 0
    tr.update_from_labels(layer)
    out, side = tr.save(tmp_path / "corr.nii.gz", layer, affine=affine, source="tiny")
    assert side == sidecar_path(out) and side.name == "corr.corrections.json"
    assert json.loads(side.read_text())["corrected"] == [[0, 2], [2, 0]]
    import nibabel as nib

    img = nib.load(str(out))
    assert img.shape == (24, 20, 3, 4)  # (X, Y, Z, T)
    assert np.allclose(img.affine, affine)

    tr2 = CorrectionTracker(pred)
    loaded = tr2.load(out)
    assert tr2.corrected == {(0, 2), (2, 0)}
    assert np.array_equal(loaded, layer)


def test_load_cli_format_without_sidecar(tmp_path, pred):
    from napari_cardiac_motion.io import write_nifti_labels

    corr = np.full(pred.shape, UNLABELLED, np.uint8)
    corr[1, 1] = 2
    write_nifti_labels(tmp_path / "c.nii.gz", corr)
    tr = CorrectionTracker(pred)
    shown = tr.load(tmp_path / "c.nii.gz")
    assert tr.corrected == {(1, 1)}
    assert (shown[1, 1] == 2).all() and np.array_equal(shown[0], pred[0])


def test_shape_mismatch_is_clear(pred):
    tr = CorrectionTracker(pred)
    with pytest.raises(InputError, match=r"\(4, 3, 20, 24\)"):
        tr.update_from_labels(np.zeros((4, 3, 20, 20), np.uint8))


def test_corrections_survive_rerun_that_overwrote_the_layer(pred):
    tr = CorrectionTracker(pred)
    layer = pred.copy()
    layer[1, 0, :3, :3] = 2
    tr.update_from_labels(layer)
    painted = layer[1, 0].copy()
    new = np.full_like(pred, 3)
    layer[...] = new  # a re-run replaced the layer's data before we were told
    merged = tr.merge_new_prediction(new)  # restores from the tracker's snapshot
    assert np.array_equal(merged[1, 0], painted) and (merged[0] == 3).all()
    # the kept slice stays corrected even though it is now compared with the new prediction
    assert tr.update_from_labels(merged) == {(1, 0)}
    # a corrected slice that happens to equal the new prediction stays corrected too
    layer = merged.copy()
    layer[2, 2, 0, 0] = 1
    tr.update_from_labels(layer)
    merged2 = tr.merge_new_prediction(layer.copy(), layer)
    assert tr.update_from_labels(merged2) == {(1, 0), (2, 2)}
    merged2[2, 2] = tr.revert(2, 2)
    assert tr.update_from_labels(merged2) == {(1, 0)}


def test_provenance_hand_propagated_accepted(pred):
    tr = CorrectionTracker(pred)
    layer = pred.copy()
    layer[0, 1, :2, :2] = 2  # painted
    tr.update_from_labels(layer, [(0, 1)])
    proposal = np.full(pred.shape[2:], 3, np.uint8)
    for t in (1, 2, 3):
        layer[t, 1] = proposal
    tr.set_propagated({(t, 1): proposal for t in (1, 2, 3)})
    assert tr.corrected == {(0, 1)} and tr.propagated == {(1, 1), (2, 1), (3, 1)}
    # a full diff keeps proposals as proposals (they are not corrections)
    assert tr.update_from_labels(layer) == {(0, 1)}
    # proposals never reach fine-tuning
    assert labelled_pairs(tr.corrections_array(layer)) == [(0, 1)]
    # painting over a proposal makes it the annotator's
    layer[1, 1, 5, 5] = 0
    tr.update_from_labels(layer, [(1, 1)])
    assert tr.kind(1, 1) == "hand"
    # undoing a proposal (back to the prediction) drops it
    layer[2, 1] = pred[2, 1]
    tr.update_from_labels(layer, [(2, 1)])
    assert tr.kind(2, 1) is None
    # accepting makes a correction, kept even where it equals the prediction
    assert tr.accept() == [(3, 1)]
    assert tr.corrected == {(0, 1), (1, 1), (3, 1)} and tr.propagated == set()
    with pytest.raises(ValueError):
        tr.set_propagated({(0, 1): proposal})  # a correction is never overwritten by a proposal


def test_merge_replaces_proposals_keeps_accepted(pred):
    tr = CorrectionTracker(pred)
    layer = pred.copy()
    prop = np.full(pred.shape[2:], 2, np.uint8)
    layer[1, 0] = prop
    layer[2, 0] = prop
    tr.set_propagated({(1, 0): prop, (2, 0): prop})
    tr.accept([(2, 0)])
    new = np.zeros_like(pred)
    merged = tr.merge_new_prediction(new, layer)
    assert (merged[1, 0] == 0).all()  # the unaccepted proposal is replaced
    assert (merged[2, 0] == 2).all() and tr.kind(2, 0) == "accepted"
    assert tr.corrected == {(2, 0)} and tr.propagated == set()


def test_stale_sidecar_is_not_trusted(tmp_path, pred):
    from napari_cardiac_motion.io import write_nifti_labels

    tr = CorrectionTracker(pred)
    layer = pred.copy()
    layer[1, 1, :3, :3] = 3
    layer[2, 2, :3, :3] = 3
    tr.update_from_labels(layer)
    out, side = tr.save(tmp_path / "c.nii.gz", layer)
    assert json.loads(side.read_text())["labels_sha256"]
    # the sidecar belongs to its file: trusted
    tr2 = CorrectionTracker(pred)
    tr2.load(out)
    assert tr2.corrected == {(1, 1), (2, 2)} and tr2.load_warning is None
    # the NIfTI is re-saved by another program (slice (2, 2) undone, (0, 0) edited); the old sidecar stays
    other = pred.copy()
    other[1, 1] = layer[1, 1]
    other[0, 0, 0, 0] = 2
    write_nifti_labels(out, other)
    tr3 = CorrectionTracker(pred)
    shown = tr3.load(out)
    assert tr3.load_warning and "does not belong" in tr3.load_warning
    assert tr3.corrected == {(1, 1), (0, 0)}  # from the file itself, not the stale list
    assert np.array_equal(shown, other)
