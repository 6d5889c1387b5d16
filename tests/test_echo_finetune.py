"""Corrections and fine-tuning on echo clips, as on MR: the echo model's classes, geometry and description carry
through :func:`~napari_cardiac_motion.training.finetune.finetune` and ``finetune --model echo``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_net
from napari_cardiac_motion.cine import Cine
from napari_cardiac_motion.conventions import UNLABELLED
from napari_cardiac_motion.errors import InputError
from napari_cardiac_motion.metrics import dice
from napari_cardiac_motion.model_description import ECHO_DEFAULT, describe
from napari_cardiac_motion.training.finetune import FinetuneSettings, finetune
from napari_cardiac_motion.training.finetune_loop import LoopInputs

ROOT = Path(__file__).resolve().parents[1]
CAMUS = ROOT.parent / "shared" / "data" / "echo" / "camus_fullres"
ECHO_CKPT = ROOT / "napari_cardiac_motion" / "checkpoints" / "echo.pt"
FAST = FinetuneSettings(seq_len=3, batch=1, jitter=4, steps=2)


def _clip(t_n: int = 5) -> tuple[Cine, np.ndarray]:
    """A synthetic apical clip ``(T, 1, 96, 80)`` at 0.5 mm with its labels (1 cavity, 2 wall, 3 atrium)."""
    yy, xx = np.mgrid[:96, :80].astype(np.float32)
    img, lab = np.zeros((t_n, 1, 96, 80), np.float32), np.zeros((t_n, 1, 96, 80), np.uint8)
    for t in range(t_n):
        r = np.hypot((yy - 40) / (26 - 2 * t), (xx - 40) / 12)
        lab[t, 0] = np.where(r < 1, 1, np.where(r < 1.4, 2, 0))
        lab[t, 0][(yy > 75) & (abs(xx - 40) < 10)] = 3
        img[t, 0] = np.choose(lab[t, 0], [60.0, 20.0, 200.0, 30.0])
    return Cine(img, spacing=(1.0, 0.5, 0.5), name="clip_4CH", modality="US"), lab


def test_finetune_an_echo_model_uses_its_classes_and_the_whole_frame():
    cine, lab = _clip()
    corr = np.full(lab.shape, UNLABELLED, np.uint8)
    corr[[0, 2, 4]] = lab[[0, 2, 4]]
    torch.manual_seed(0)
    net = tiny_net(pixel_mm=1.0, input_size=(48, 48)).eval()
    _, hist = finetune(net, cine, corr, ed_frame=0, device="cpu", description=ECHO_DEFAULT, settings=FAST)
    assert hist["modality"] == "US" and hist["classes"] == {"1": "LV", "2": "Myo", "3": "LA"}
    scored = hist["check"]["held_out"]["original"]
    assert set(scored) == {"LV", "Myo", "LA"}  # not the MR structures (RV)
    # echo inference's geometry: the whole frame (96×80 at 0.5 mm → 48×40 at 1 mm, padded to 48×48) from (0, 0)
    assert hist["region"]["whole_slice"] and hist["region"]["input_box_yx"][:2] == [0, 96]
    bad = corr.copy()
    bad[0, 0, 0, 0] = 4
    with pytest.raises(InputError, match="LV cavity, LV myocardium, left atrium"):
        finetune(net, cine, bad, ed_frame=0, device="cpu", description=ECHO_DEFAULT, settings=FAST)


def test_a_half_cycle_is_not_wrapped_round():
    """An ES→ED clip (ED the last frame, as CAMUS patient0015 4CH): sequences run back from ED, not to frame 0."""
    z = np.zeros((6, 1, 4, 4))
    assert LoopInputs(z, z, np.zeros((6, 1), bool), 5, (4, 4), closed_cycle=False).order == [5, 4, 3, 2, 1, 0]
    assert LoopInputs(z, z, np.zeros((6, 1), bool), 5, (4, 4)).order == [5, 0, 1, 2, 3, 4]  # MR: a closed cycle


def _frame_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean Dice over the three echo structures of one frame ``(Y, X)``."""
    return float(np.mean([dice(pred, gt, c) for c in (1, 2, 3)]))


@pytest.mark.skipif(not CAMUS.is_dir(), reason="shared CAMUS data not found beside the repository")
@pytest.mark.skipif(not ECHO_CKPT.exists(), reason="the shipped echo checkpoint is not in this checkout")
def test_correct_and_finetune_the_echo_model_on_a_real_camus_clip(tmp_path, capsys):
    """Validation patient0015 2CH (20 frames, never trained on): predict, correct its worst frame and ED with the
    expert labels, ``finetune --model echo`` a few steps; the new model is still an echo model and is not worse
    on the corrected frames."""
    from napari_cardiac_motion.cli import main
    from napari_cardiac_motion.inference import predict_cine
    from napari_cardiac_motion.io import read_cine
    from napari_cardiac_motion.io.echo_nifti import read_nifti_label_frames, write_clip_labels
    from napari_cardiac_motion.model import load_checkpoint
    from napari_cardiac_motion.model_store import load_model
    from napari_cardiac_motion.motion_refine import RefineSettings

    src = CAMUS / "patient0015" / "patient0015_2CH_seq.nii.gz"
    gt = read_nifti_label_frames(CAMUS / "patient0015" / "patient0015_2CH_seq_gt.nii.gz").data  # (T, Y, X)
    cine = read_cine(src, layout="2d+t")
    model, meta = load_model("echo")
    fast = {"device": "cpu", "ed_frame": 0, "refine": RefineSettings(steps=0)}  # labels only: no motion refinement
    before = predict_cine(cine, model, description=describe(meta), **fast).labels[:, 0]
    scores = [_frame_dice(p, g) for p, g in zip(before, gt)]
    frames = sorted({0, int(np.argmin(scores))})  # ED and the worst frame
    corr = np.full(cine.shape, UNLABELLED, np.uint8)
    for t in frames:
        corr[t, 0] = gt[t]
    write_clip_labels(tmp_path / "corr.nii.gz", corr, cine.affine, cine.spacing[1:])
    out = tmp_path / "ft.pt"
    assert main(["finetune", str(src), "--labels", str(tmp_path / "corr.nii.gz"), "--out", str(out), "--model", "echo",
                 "--steps", "3", "--ed-frame", "0", "--device", "cpu"]) == 0, capsys.readouterr().err
    new, new_meta = load_checkpoint(out)
    desc = describe(new_meta)
    assert desc == describe(meta) and desc.modality == "US"
    assert [c.name for c in desc.classes] == ["LV cavity", "LV myocardium", "left atrium"]
    assert new_meta["corrected_slices"] == [[t, 0] for t in frames] and new_meta["parent_name"] == "echo-joint-v1"
    assert set(new_meta["check"]["held_out" if len(frames) > 1 else "propagated"]["original"]) == {"LV", "Myo", "LA"}
    after = predict_cine(cine, new, description=desc, **fast).labels[:, 0]
    for t in frames:  # the held-out check keeps the result from getting worse on the user's own labels
        assert _frame_dice(after[t], gt[t]) >= scores[t] - 0.01, (t, scores[t], _frame_dice(after[t], gt[t]))
    assert np.mean([_frame_dice(after[t], gt[t]) for t in frames]) >= np.mean([scores[t] for t in frames]) - 0.005


def test_finetune_cli_refuses_echo_labels_on_another_grid(tmp_path, capsys):
    import nibabel as nib

    from napari_cardiac_motion.cli import main
    from napari_cardiac_motion.model import save_checkpoint

    from test_echo_predict import write_clip

    write_clip(tmp_path / "clip.nii.gz")  # (80, 96, 5)
    nib.save(nib.Nifti1Image(np.zeros((80, 90, 5), np.uint8), np.eye(4)), str(tmp_path / "bad.nii.gz"))
    ckpt = save_checkpoint(tiny_net(pixel_mm=1.0), tmp_path / "e.pt", {"name": "e", **ECHO_DEFAULT.to_metadata()})
    assert main(["finetune", str(tmp_path / "clip.nii.gz"), "--labels", str(tmp_path / "bad.nii.gz"), "--out",
                 str(tmp_path / "o.pt"), "--model", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "80×90×5 (X×Y×T)" in err and "80×96×5" in err
