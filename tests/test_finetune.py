"""Fine-tuning from corrections: it improves frames nobody corrected, the held-out check rejects a harmful
setting, cancel keeps the model, model store, CLI."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import tiny_config
from napari_cardiac_motion.conventions import UNLABELLED
from napari_cardiac_motion.errors import CancelledError, InputError
from napari_cardiac_motion.metrics import dice
from napari_cardiac_motion.training.finetune import FinetuneSettings, blend_models, finetune, split_holdout
from napari_cardiac_motion.model import JointMotionSegNet, load_checkpoint, save_checkpoint
from napari_cardiac_motion.preprocessing import normalize_intensity

TINY = tiny_config(input_size=(48, 48), max_flow=4.0)
FAST = FinetuneSettings(seq_len=3, batch=2, jitter=4)


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


def _corrections(cine, frames=(0,), slices=None):
    """The true labels of ``frames`` × ``slices`` as corrections (255 elsewhere)."""
    truth = _truth(cine)
    corr = np.full(cine.shape, UNLABELLED, np.uint8)
    for t in frames:
        for z in range(cine.shape[1]) if slices is None else slices:
            corr[t, z] = truth[t, z]
    return corr


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _dice_lv_myo(model, cine, frames, slices):
    """Mean LV/Myo Dice of ``model`` vs the construction's truth on ``frames`` × ``slices``."""
    image = torch.from_numpy(normalize_intensity(cine.data))
    truth = _truth(cine)
    x = torch.stack([image[t, z] for t in frames for z in slices]).unsqueeze(1)
    with torch.no_grad():
        pred = model.eval().segment(x).argmax(1).numpy()
    gt = np.stack([truth[t, z] for t in frames for z in slices])
    return float(np.mean([dice(pred, gt, c) for c in (1, 2)]))


@pytest.fixture(scope="module")
def improved(tiny_cine_module):
    """Frame 0 of both slices corrected (slice 1 is held out by the check), a random tiny model:
    ``(cine, start model, start weights, returned model, history, progress calls)``."""
    cine = tiny_cine_module
    torch.manual_seed(0)
    start = JointMotionSegNet(TINY).eval()
    weights = _state(start)
    seen = []
    new, hist = finetune(start, cine, _corrections(cine), steps=80, lr=1e-2, ed_frame=0, guard=None,
                         settings=replace(FAST, blends=(1.0, 0.5)), progress=lambda s, n, d: seen.append((s, n, d["total"])))
    return cine, start, weights, new, hist, seen


def test_finetune_improves_frames_nobody_corrected(improved):
    """The model returned must segment the frames nobody corrected (1–3, both slices) better than the
    starting model, and the check must have accepted it for a better held-out slice."""
    cine, start, weights, new, hist, seen = improved
    assert [s for s, _, _ in seen] == list(range(1, 81)) and seen[0][1] == 80
    assert hist["corrected"] == [[0, 0], [0, 1]] and hist["ed_frame"] == 0
    check = hist["check"]
    assert check["held_out"]["pairs"] == [[0, 1]]  # slice 1 was held out, not trained on
    assert check["kept"] > 0 and not hist["kept_original"]
    before = _dice_lv_myo(start, cine, [1, 2, 3], [0, 1])
    after = _dice_lv_myo(new, cine, [1, 2, 3], [0, 1])
    assert after > before + 0.3, (before, after)
    # the held-out slice's Dice against its correction rose (no structure lost more than the tolerance)
    held = check["held_out"]
    kept_scores = held["candidates"][f"{check['kept']:g}"]
    assert all(kept_scores[k] >= held["original"][k] - check["tolerance"] for k in kept_scores)
    assert np.mean(list(kept_scores.values())) > np.mean(list(held["original"].values()))
    # the caller's model is untouched
    assert all(torch.equal(weights[k], v) for k, v in start.state_dict().items())
    assert new is not start


def test_check_rejects_a_harmful_setting(improved):
    """A learning rate far too large ruins a good model; the held-out check must return the starting model."""
    cine, _, _, good_model, _, _ = improved
    harmful = FinetuneSettings(seq_len=3, batch=2, jitter=4, steps=6, lr=0.3, guard=None)
    corr = _corrections(cine)
    good = _dice_lv_myo(good_model, cine, [0, 1, 2, 3], [0, 1])
    ruined, _ = finetune(good_model, cine, corr, ed_frame=0, settings=replace(harmful, check=False))
    assert _dice_lv_myo(ruined, cine, [0, 1, 2, 3], [0, 1]) < good - 0.1  # the setting does harm
    kept, hist = finetune(good_model, cine, corr, ed_frame=0, settings=harmful)
    assert hist["check"]["kept"] == 0.0 and hist["kept_original"]
    assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), good_model.state_dict().values()))
    assert kept is not good_model


def test_split_holdout_holds_out_whole_slices():
    mask = np.zeros((5, 7), bool)
    mask[0, :] = True
    mask[3, 2] = True
    train, held = split_holdout(mask, 3)
    assert sorted({z for _, z in held}) == [1, 4]  # every third corrected slice from the second
    assert held == [(0, 1), (0, 4)] and not train[0, 1] and not train[0, 4] and train[3, 2] and train[0, 0]
    one = np.zeros((6, 2), bool)
    one[:, 1] = True  # one slice, six frames: every third frame from the second
    _, held = split_holdout(one, 3)
    assert held == [(1, 1), (4, 1)]
    single = np.zeros((3, 2), bool)
    single[1, 0] = True
    train, held = split_holdout(single, 3)
    assert held == [] and train[1, 0]


def test_blend_models_interpolates_weights(tiny_model):
    torch.manual_seed(1)
    other = JointMotionSegNet(TINY).eval()
    half = blend_models(tiny_model, other, 0.5)
    for k, v in half.state_dict().items():
        a, b = tiny_model.state_dict()[k], other.state_dict()[k]
        if v.is_floating_point():
            assert torch.allclose(v, 0.5 * (a + b), atol=1e-6)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in blend_models(tiny_model, other, 1.0).state_dict().items())


@pytest.mark.parametrize("guard", ["teacher", "l2sp"])
def test_regularisers_contribute_a_loss_term(tiny_cine, tiny_model, guard):
    _, hist = finetune(tiny_model, tiny_cine, _corrections(tiny_cine, slices=[0]), steps=2, lr=1e-3,
                       ed_frame=0, settings=FAST, guard=guard)
    assert all(guard in rec and rec[guard] >= 0 for rec in hist["losses"])
    assert hist["check"]["propagated"]["pairs"]  # one corrected pair: checked on its propagated labels


@pytest.mark.parametrize("params", ["seg", "head"])
def test_params_subset_leaves_encoder_and_motion_untouched(tiny_cine, tiny_model, params):
    """With ``params="seg"``/``"head"`` only the segmentation branch learns: the shared encoder and the
    motion branch keep their weights exactly, the trained part changes, and no motion loss is computed."""
    s = replace(FAST, params=params, check=False, seg_dice_weight=0.0)
    new, hist = finetune(tiny_model, tiny_cine, _corrections(tiny_cine, slices=[0]), steps=3, lr=1e-2,
                         ed_frame=0, settings=s, guard=None)
    old_sd, new_sd = tiny_model.state_dict(), new.state_dict()
    frozen = [k for k in old_sd if k.split(".")[0] in ("encoder", "motion_fuse", "motion_mix", "gru", "flow_out")]
    if params == "head":
        frozen += [k for k in old_sd if k.startswith("seg_fuse.")]
    assert frozen and all(torch.equal(old_sd[k], new_sd[k].to(old_sd[k].device)) for k in frozen)
    assert any(not torch.equal(old_sd[k], new_sd[k].to(old_sd[k].device)) for k in old_sd
               if k.startswith("seg_head.") and old_sd[k].is_floating_point())
    assert all("motion" not in rec for rec in hist["losses"])
    with pytest.raises(ValueError, match="params must be one of"):
        finetune(tiny_model, tiny_cine, _corrections(tiny_cine, slices=[0]), steps=1, ed_frame=0,
                 settings=replace(FAST, params="encoder"))


def test_sparse_corrections_use_the_sparse_settings():
    """Two corrected slices of ten in one frame are sparse: steps, teacher weight and Dice weight switch;
    a whole corrected frame is not; explicit steps win over the sparse default."""
    from napari_cardiac_motion.training.finetune import resolve_settings
    from napari_cardiac_motion.training.finetune_loop import for_corrections, is_sparse

    mask = np.zeros((2, 10), bool)
    mask[1, [0, 1]] = True
    s = FinetuneSettings()
    sparse = for_corrections(s, mask)
    assert is_sparse(mask, s.sparse_fraction)
    assert (sparse.steps, sparse.teacher_weight, sparse.seg_dice_weight) == (32, 10.0, 0.0)
    mask[0] = True
    assert not is_sparse(mask, s.sparse_fraction) and for_corrections(s, mask) == s
    mask[0] = False
    assert for_corrections(resolve_settings(None, 5, None, ...), mask).steps == 5


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
    write_nifti_labels(tmp / "corr.nii.gz", _corrections(tiny_cine, slices=[0]))
    rc = main(["finetune", str(img), "--labels", str(tmp / "corr.nii.gz"), "--out", str(tmp / "ft.pt"),
               "--model", str(ckpt), "--steps", "2", "--device", "cpu"])  # ED estimated by the model
    assert rc == 0
    _, meta = load_checkpoint(tmp / "ft.pt")
    assert meta["parent_name"] == "tiny" and meta["corrected_slices"] == [[0, 0]] and meta["steps"] == 2
    assert meta["source_image"] == "cine" and 0 <= meta["ed_frame"] < 4
