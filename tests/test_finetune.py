"""Fine-tuning from corrections: loss goes down, uncorrected frames change, cancel, model store, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cardiac_motion.conventions import UNLABELLED
from napari_cardiac_motion.errors import CancelledError, InputError
from napari_cardiac_motion.finetune import FinetuneSettings, finetune
from napari_cardiac_motion.model import JointConfig, JointMotionSegNet, load_checkpoint, save_checkpoint
from napari_cardiac_motion.model.losses import segmentation_loss
from napari_cardiac_motion.preprocessing import normalize_intensity

TINY = JointConfig(channels=(4, 8, 8, 8, 8), head=4, gru_hidden=4, input_size=(48, 48), max_flow=4.0)
FAST = FinetuneSettings(crop=48, seq_len=3, batch=2)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return JointMotionSegNet(TINY).eval()


def _truth(cine):
    """Disc = LV (1), ring = myocardium (2), from the tiny cine's construction."""
    t_n, z_n, y_n, x_n = cine.shape
    yy, xx = np.mgrid[:y_n, :x_n]
    lab = np.zeros(cine.shape, np.uint8)
    for t in range(t_n):
        for z in range(z_n):
            r = np.hypot(yy - 20.0, xx - (20.0 + t))
            radius = 8.0 - z
            lab[t, z] = np.where(r < radius, 1, np.where(r < radius + 3.0, 2, 0))
    return lab


def _corrections(cine):
    corr = np.full(cine.shape, UNLABELLED, np.uint8)
    corr[0, 0] = _truth(cine)[0, 0]
    return corr


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_finetune_lowers_loss_and_changes_uncorrected_frames(tiny_cine, tiny_model):
    before = _state(tiny_model)
    corr = _corrections(tiny_cine)
    image = torch.from_numpy(normalize_intensity(tiny_cine.data))
    target = torch.from_numpy(corr[0, 0].astype(np.int64))[None]

    def seg_loss(m):
        with torch.no_grad():
            return float(segmentation_loss(m.segment(image[0, 0][None, None]), target))

    def pred_uncorrected(m):
        with torch.no_grad():
            return m.segment(image[2, 1][None, None]).argmax(1).numpy()

    seen = []
    new, hist = finetune(tiny_model, tiny_cine, corr, steps=25, lr=1e-2, ed_frame=0, settings=FAST,
                         progress=lambda s, n, d: seen.append((s, n, d["total"])))
    assert [s for s, _, _ in seen] == list(range(1, 26)) and seen[0][1] == 25
    assert len(hist["losses"]) == 25 and hist["corrected"] == [[0, 0]] and hist["ed_frame"] == 0
    assert seg_loss(new) < seg_loss(tiny_model)
    assert not np.array_equal(pred_uncorrected(new), pred_uncorrected(tiny_model))
    # the caller's model is untouched
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert new is not tiny_model


@pytest.mark.parametrize("guard", [None, "l2sp"])
def test_guards_run(tiny_cine, tiny_model, guard):
    _, hist = finetune(tiny_model, tiny_cine, _corrections(tiny_cine), steps=2, lr=1e-3, ed_frame=0,
                       settings=FAST, guard=guard)
    assert hist["guard"] == guard
    if guard == "l2sp":
        assert "l2sp" in hist["losses"][-1]


def test_cancel_keeps_previous_model(tiny_cine, tiny_model):
    before = _state(tiny_model)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(CancelledError, match="previous model"):
        finetune(tiny_model, tiny_cine, _corrections(tiny_cine), steps=10, lr=1e-2, cancel=cancel,
                 ed_frame=0, settings=FAST)
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())


def test_no_correction_or_wrong_shape_rejected(tiny_cine, tiny_model):
    with pytest.raises(InputError, match="No corrected slice"):
        finetune(tiny_model, tiny_cine, np.full(tiny_cine.shape, UNLABELLED, np.uint8), steps=1)
    with pytest.raises(InputError, match=r"\(4, 2, 40, 40\).*\(4, 2, 40, 48\)"):
        finetune(tiny_model, tiny_cine, np.zeros((4, 2, 40, 40), np.uint8), steps=1)


def test_model_store_save_list_reload(tmp_path, monkeypatch, tiny_model):
    from napari_cardiac_motion import model_store

    monkeypatch.setenv(model_store.HOME_ENV, str(tmp_path))
    assert model_store.models_dir() == tmp_path / "models"
    meta = {"parent": "default", "source_image": "tiny", "corrected_slices": [[0, 0]], "steps": 3,
            "losses": [{"total": 1.0}]}
    p1 = model_store.save_finetuned(tiny_model, meta)
    p2 = model_store.save_finetuned(tiny_model, meta)
    assert p1 != p2 and p1.parent == tmp_path / "models"
    assert not list((tmp_path / "models").glob("*.tmp"))
    listed = model_store.list_models()
    assert {p for p, _ in listed} == {p1, p2}
    model, m = load_checkpoint(p1)
    assert m["parent"] == "default" and m["source_image"] == "tiny" and m["corrected_slices"] == [[0, 0]]
    assert m["steps"] == 3 and "date" in m and m["name"] == p1.stem
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny_model.state_dict().values()))


def test_model_store_never_overwrites_default(tiny_model):
    from napari_cardiac_motion import model_store
    from napari_cardiac_motion.errors import CheckpointError
    from napari_cardiac_motion.model import default_checkpoint_path

    with pytest.raises(CheckpointError, match="default"):
        model_store.save_model_to(tiny_model, default_checkpoint_path(), {})


# -- command line ----------------------------------------------------------------------------------
@pytest.fixture
def cli_files(tmp_path, tiny_cine, tiny_model):
    from napari_cardiac_motion.io import write_nifti_image

    img = write_nifti_image(tmp_path / "cine.nii.gz", tiny_cine)
    ckpt = save_checkpoint(tiny_model, tmp_path / "tiny.pt", {"name": "tiny"})
    return tmp_path, img, ckpt


def test_cli_rejects_wrong_shape(cli_files, capsys):
    from napari_cardiac_motion.cli import main
    from napari_cardiac_motion.io import write_nifti_labels

    tmp, img, ckpt = cli_files
    write_nifti_labels(tmp / "bad.nii.gz", np.zeros((4, 2, 40, 40), np.uint8))
    rc = main(["finetune", str(img), "--labels", str(tmp / "bad.nii.gz"), "--out", str(tmp / "o.pt"),
               "--model", str(ckpt), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "40×40×2×4" in err and "48×40×2×4" in err and "grid" in err
    assert not (tmp / "o.pt").exists()


def test_cli_rejects_unlabelled(cli_files, capsys):
    from napari_cardiac_motion.cli import main
    from napari_cardiac_motion.io import write_nifti_labels

    tmp, img, ckpt = cli_files
    write_nifti_labels(tmp / "none.nii.gz", np.full((4, 2, 40, 48), UNLABELLED, np.uint8))
    rc = main(["finetune", str(img), "--labels", str(tmp / "none.nii.gz"), "--out", str(tmp / "o.pt"),
               "--model", str(ckpt)])
    assert rc == 2 and "no labelled slice" in capsys.readouterr().err


def test_cli_finetune_writes_checkpoint(cli_files, tiny_cine, capsys):
    from napari_cardiac_motion.cli import main
    from napari_cardiac_motion.io import write_nifti_labels

    tmp, img, ckpt = cli_files
    write_nifti_labels(tmp / "corr.nii.gz", _corrections(tiny_cine))
    rc = main(["finetune", str(img), "--labels", str(tmp / "corr.nii.gz"), "--out", str(tmp / "ft.pt"),
               "--model", str(ckpt), "--steps", "2", "--device", "cpu"])  # ED estimated by the model
    assert rc == 0
    _, meta = load_checkpoint(tmp / "ft.pt")
    assert meta["parent_name"] == "tiny" and meta["corrected_slices"] == [[0, 0]] and meta["steps"] == 2
    assert meta["source_image"] == "cine" and 0 <= meta["ed_frame"] < 4
