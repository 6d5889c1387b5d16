"""Saved models: listed newest first, deleted only from the user's model folder (no Qt)."""

from __future__ import annotations

import pytest

from napari_cardiac_motion.errors import CheckpointError
from conftest import tiny_net
from napari_cardiac_motion.model.checkpoint import default_checkpoint_path
from napari_cardiac_motion.model_store import delete_model, list_models, save_finetuned


def test_list_and_delete(tmp_path):
    net = tiny_net()
    folder = tmp_path / "models"
    a = save_finetuned(net, {"source_image": "a", "date": "2026-01-01T00:00:00"}, folder=folder)
    b = save_finetuned(net, {"source_image": "b", "date": "2026-01-02T00:00:00"}, folder=folder)
    assert [p for p, _ in list_models(folder)] == [b, a]
    delete_model(a, folder=folder)
    assert not a.exists() and [p for p, _ in list_models(folder)] == [b]
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not one of your saved models"):
        delete_model(outside, folder=folder)
    assert outside.exists()
    with pytest.raises(CheckpointError):
        delete_model(default_checkpoint_path(), folder=folder)
    assert default_checkpoint_path().exists()


def test_finetuned_metadata_is_one_recipe():
    """The CLI and the panels record the same keys for a fine-tuned model (from the history)."""
    from napari_cardiac_motion.model_store import finetuned_metadata

    history = {"corrected": [[0, 1]], "ed_frame": 0, "steps": 4, "lr": 1e-4, "guard": "teacher",
               "losses": [{"total": 1.0}], "seconds": 1.23456, "check": {"kept": 0.5}, "kept_original": False}
    meta = finetuned_metadata({"name": "base", "path": "/m/base.pt", "version": "1"}, "cine", history)
    assert meta == {"parent": "/m/base.pt", "parent_name": "base", "source_image": "cine",
                    "corrected_slices": [[0, 1]], "ed_frame": 0, "steps": 4, "lr": 1e-4, "guard": "teacher",
                    "losses": [{"total": 1.0}], "seconds": 1.23, "version": "1", "check": {"kept": 0.5},
                    "kept_original": False}
    assert finetuned_metadata({"name": "base"}, "cine", {})["parent"] == "base"


def test_private_model_copies_share_one_cached_load(tmp_path):
    """The store loads a checkpoint once (cached by path, mtime and size) and hands out copies."""
    import torch

    from napari_cardiac_motion import model_store
    from napari_cardiac_motion.model import save_checkpoint

    path = save_checkpoint(tiny_net(), tmp_path / "m.pt", {"name": "m"})
    cached, _ = model_store.cached_model(path)
    assert model_store.cached_model(str(path))[0] is cached
    a, meta = model_store.private_model(path)
    assert a is not cached and meta["name"] == "m"
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    assert not torch.equal(next(a.parameters()), next(cached.parameters()))
