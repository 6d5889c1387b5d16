"""Training: a few steps lower the loss, checkpoints round-trip and resume, augmentation is consistent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from synthetic import synthetic_acdc_like
from napari_cardiac_motion.model.checkpoint import load_checkpoint
from napari_cardiac_motion.model.losses import IGNORE_INDEX, NOT_LV, NOT_LV_MYO, allowed_table, partial_nll_logits
from napari_cardiac_motion.model.network import JointConfig, JointMotionSegNet
from napari_cardiac_motion.training.augment import augment_batch, crop_centered
from napari_cardiac_motion.training.sampling import Sampler
from napari_cardiac_motion.training.train import TrainConfig, batch_losses, combine, train

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

@pytest.fixture(autouse=True)
def _restore_threads():
    """train() sets torch's thread count (1 here: 2 threads on 2 shared cores are far slower)."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


TINY = tiny_config(head=8, input_size=(96, 96)).to_dict()


def _tiny_cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(out=str(tmp_path / "m.pt"), epochs=1, steps_per_epoch=25, batch_size=4, crop=64, lr=3e-3,
                seed=0, device="cpu", model=TINY, sunnybrook_every=0, num_threads=1, adaptive_threads=False)
    base.update(kw)
    return TrainConfig(**base)


def _cases(source: str):
    if source == "synthetic":
        return synthetic_acdc_like(2, size=80, n_slices=2)
    if not (SHARED_DATA / "acdc" / "patient002").is_dir():
        pytest.skip("shared ACDC data not found")
    from napari_cardiac_motion.training.data import load_acdc

    cases = load_acdc(SHARED_DATA / "acdc", names=["patient002", "patient022"])
    for c in cases:  # keep the test fast: 2 mid-ventricular slices
        mid = c.n_slices // 2
        c.image, c.codes, c.center = c.image[:, mid:mid + 2], c.codes[:, mid:mid + 2], c.center[mid:mid + 2]
    return cases


def _fixed_batch_loss(model, cases, cfg) -> float:
    sampler = Sampler(cases, [], cfg, np.random.default_rng(123))
    torch.manual_seed(0)
    imgs, codes = [], []
    for case in cases:
        for z in range(case.n_slices):
            cy, cx = case.center[z]
            imgs.append(crop_centered(case.image[[0, 1], z], cy, cx, sampler.pre, 0))
            codes.append(crop_centered(case.codes[[0, 1], z], cy, cx, sampler.pre, IGNORE_INDEX))
    im, co = augment_batch(np.stack(imgs), np.stack(codes), cfg.crop, np.random.default_rng(0),
                           geometric=False, intensity=False)
    model.train()
    with torch.no_grad():
        return float(combine(batch_losses(model, im, co, cfg, allowed_table(torch.device("cpu")), True), cfg))


@pytest.mark.parametrize("source", ["synthetic", "acdc"])
def test_few_steps_lower_the_loss(tmp_path, source):
    cases = _cases(source)
    cfg = _tiny_cfg(tmp_path, crop=64 if source == "synthetic" else 96)
    torch.manual_seed(cfg.seed)
    before = _fixed_batch_loss(JointMotionSegNet(JointConfig.from_dict(TINY)), cases, cfg)
    lines = []
    model, meta = train(cfg, cases=(cases, [], cases[:1]), log=lines.append)
    after = _fixed_batch_loss(model, cases, cfg)
    assert after < 0.9 * before, (before, after)
    assert any("epoch 1/1" in ln and "dice_LV" in ln for ln in lines)
    assert meta["steps"] == 25 and meta["name"] == "cardiac-joint-v2"
    assert (tmp_path / "m.pt").exists()


def test_checkpoint_round_trip_and_resume(tmp_path):
    cases = synthetic_acdc_like(1, size=64, n_slices=1)
    cfg = _tiny_cfg(tmp_path, steps_per_epoch=3, validate=False)
    model, _ = train(cfg, cases=(cases, [], []), log=lambda s: None)
    loaded, meta = load_checkpoint(cfg.out)
    x = torch.rand(1, 2, 64, 64)
    model.eval()
    with torch.no_grad():
        s1, f1 = model.forward_sequence(x)
        s2, f2 = loaded.forward_sequence(x)
    assert torch.allclose(s1, s2) and torch.allclose(f1, f2)
    assert meta["provisional"] is False and meta["seed"] == 0
    assert "optimizer_all" in torch.load(cfg.out, weights_only=True)["extra"]
    # the resumed run keeps the checkpoint's architecture and pixel size, whatever --model-like settings say
    cfg2 = _tiny_cfg(tmp_path, steps_per_epoch=3, epochs=2, validate=False, resume=cfg.out,
                     out=str(tmp_path / "m2.pt"), model={**TINY, "pixel_mm": 0.7})
    _, meta2 = train(cfg2, cases=(cases, [], []), log=lambda s: None)
    assert meta2["steps"] == 6 and len(meta2["history"]) == 2
    assert torch.load(cfg2.out, weights_only=True)["config"]["pixel_mm"] == \
        torch.load(cfg.out, weights_only=True)["config"]["pixel_mm"]


def test_time_budget_stops_cleanly(tmp_path):
    cases = synthetic_acdc_like(1, size=64, n_slices=1)
    cfg = _tiny_cfg(tmp_path, steps_per_epoch=10_000, validate=False, time_budget_min=0.05)
    _, meta = train(cfg, cases=(cases, [], []), log=lambda s: None)
    assert meta["stop_reason"] == "time budget" and 0 < meta["steps"] < 10_000


def test_augmentation_moves_images_and_labels_together():
    rng = np.random.default_rng(0)
    codes = np.zeros((2, 2, 96, 96), np.uint8)
    codes[:, :, 30:60, 40:70] = 1
    codes[:, 1, 45:50, 45:50] = 3
    images = codes.astype(np.float32)
    im, co = augment_batch(images, codes, 64, rng, intensity=False)
    assert im.shape == co.shape == (2, 2, 64, 64)
    inside = co != IGNORE_INDEX
    agree = (im.round().long() == co)[inside].float().mean()
    assert agree > 0.97


def test_partial_label_loss_ignores_unknown_classes():
    table = allowed_table(torch.device("cpu"))
    logits = torch.zeros(1, 4, 2, 2)
    logits[:, 3] = 5.0  # confident RV everywhere
    not_lv_myo = torch.full((1, 2, 2), NOT_LV_MYO)
    assert float(partial_nll_logits(logits, not_lv_myo, table)) < 0.05  # RV allowed there
    assert float(partial_nll_logits(logits, torch.zeros(1, 2, 2, dtype=torch.long), table)) > 4.0
    not_lv = torch.full((1, 2, 2), NOT_LV)
    assert float(partial_nll_logits(logits, not_lv, table)) < 0.05
    assert float(partial_nll_logits(logits, torch.full((1, 2, 2), IGNORE_INDEX), table)) == 0.0


def test_sunnybrook_codes_mark_uncontoured_voxels_unknown():
    folder = SHARED_DATA / "sunnybrook" / "SC-HF-I-1"
    if not folder.is_dir():
        pytest.skip("shared Sunnybrook data not found")
    from napari_cardiac_motion.training.data import load_sunnybrook_case

    case = load_sunnybrook_case(folder)
    assert (case.ed, case.es) == (18, 7)
    assert set(np.unique(case.codes)) <= {1, 2, NOT_LV_MYO, NOT_LV, IGNORE_INDEX}
    assert not (case.codes == 0).any()  # a Sunnybrook "0" is never taught as background
    assert (case.codes[0] == IGNORE_INDEX).all()  # frame 0 is not contoured
    assert (case.codes[case.es] == 2).sum() == 0  # no myocardium known at ES


def _write_acdc_like(folder: Path, spacing=(0.75, 0.75, 10.0)) -> None:
    """One synthetic ACDC-like patient folder (ED/ES images and labels, X×Y×Z) with a true spacing."""
    import nibabel as nib

    case = synthetic_acdc_like(1, size=96, n_slices=2, seed=3)[0]
    folder.mkdir(parents=True)
    aff = np.diag(list(spacing) + [1.0])
    for t, name in ((0, "ED"), (1, "ES")):
        img = (case.image[t].astype(np.float32) * 1000).transpose(2, 1, 0)
        lab = case.codes[t].transpose(2, 1, 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(img, aff), str(folder / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(folder / f"{name}_gt.nii.gz"))


def test_training_data_are_resampled_to_the_model_pixel_size(tmp_path):
    from napari_cardiac_motion.training.data import load_acdc_case

    _write_acdc_like(tmp_path / "patient500", spacing=(0.75, 0.75, 10.0))
    native = load_acdc_case(tmp_path / "patient500")
    at_model = load_acdc_case(tmp_path / "patient500", pixel_mm=1.5)
    assert native.image.shape[-2:] == (96, 96) and at_model.image.shape[-2:] == (48, 48)
    assert at_model.spacing == (10.0, 0.75, 0.75)
    for c in (1, 2, 3):  # areas in mm² are kept (within the rasterisation of a 0.75 → 1.5 mm grid)
        a0 = (native.codes == c).sum() * 0.75 ** 2
        a1 = (at_model.codes == c).sum() * 1.5 ** 2
        assert abs(a1 - a0) / a0 < 0.12, (c, a0, a1)
    assert abs(at_model.center[0][0] * 2 - native.center[0][0]) < 2.0


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    from napari_cardiac_motion.training.sampling import epoch_batches

    cases = synthetic_acdc_like(2, size=80, n_slices=2)
    sunny = synthetic_acdc_like(1, size=80, n_slices=2, seed=5)
    cfg0 = _tiny_cfg(tmp_path, workers=0, sunnybrook_every=3, sb_batch=2, sb_frames=2)
    cfg1 = _tiny_cfg(tmp_path, workers=1, sunnybrook_every=3, sb_batch=2, sb_frames=2)
    b0 = list(epoch_batches(cases, sunny, cfg0, 0, 5, [0, 0]))
    b1 = list(epoch_batches(cases, sunny, cfg1, 0, 5, [0, 0]))
    assert [bool(x[2]) for x in b0] == [False, False, True, False, False] == [bool(x[2]) for x in b1]
    for (i0, c0, _), (i1, c1, _) in zip(b0, b1):
        assert torch.equal(i0, i1) and torch.equal(c0, c1)
    cfg2 = _tiny_cfg(tmp_path, workers=2, sunnybrook_every=3, sb_batch=2, sb_frames=2)
    b2 = list(epoch_batches(cases, sunny, cfg2, 0, 5, [0, 0]))
    assert [x[2] for x in b2] == [x[2] for x in b0]  # same schedule with two workers


def test_motion_only_training_keeps_the_segmentation_and_init_loads_weights(tmp_path):
    cases = synthetic_acdc_like(2, size=64, n_slices=1)
    start = JointMotionSegNet(JointConfig.from_dict(TINY))
    from napari_cardiac_motion.model.checkpoint import save_checkpoint

    save_checkpoint(start, tmp_path / "start.pt", {"name": "start"})
    cfg = _tiny_cfg(tmp_path, steps_per_epoch=4, validate=False, init=str(tmp_path / "start.pt"),
                    train_parts="motion", crop=48)
    model, _ = train(cfg, cases=(cases, [], []), log=lambda s: None)
    before, after = start.state_dict(), model.state_dict()
    frozen = [k for k in before if k.startswith(("encoder.", "seg_fuse.", "seg_head."))]
    learnt = [k for k in before if k.startswith(("motion_", "gru.", "flow_out."))]
    assert frozen and learnt
    assert all(torch.equal(before[k], after[k]) for k in frozen)  # weights and BatchNorm statistics
    assert any(not torch.equal(before[k], after[k]) for k in learnt)


def test_train_command_line_end_to_end(tmp_path):
    """``napari-cardiac-motion train`` on an ACDC-like folder writes a checkpoint that records the
    command, the model's pixel size and the steps; ``--resume`` continues it."""
    from napari_cardiac_motion.cli import main

    data = tmp_path / "data"
    _write_acdc_like(data / "patient500", spacing=(1.0, 1.25, 10.0))
    out = tmp_path / "m.pt"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2",
            "--batch-size", "2", "--crop", "48", "--no-sunnybrook", "--threads", "1", "--seed", "4"]
    assert main(args) == 0
    _, meta = load_checkpoint(out)
    assert meta["steps"] == 2 and meta["seed"] == 4 and "--steps-per-epoch 2" in meta["command"]
    assert meta["train_config"]["train_parts"] == "all"
    payload = torch.load(out, weights_only=True)
    assert payload["config"]["pixel_mm"] == 1.5
    assert main(args[:2] + [str(data), "--out", str(tmp_path / "m2.pt"), "--epochs", "2", "--steps-per-epoch", "2",
                            "--batch-size", "2", "--crop", "48", "--no-sunnybrook", "--threads", "1",
                            "--resume", str(out), "--no-validate", "--cine-batch", "3"]) == 0
    _, meta2 = load_checkpoint(tmp_path / "m2.pt")
    assert meta2["steps"] == 4 and len(meta2["history"]) == 2
    assert meta["train_config"]["validate"] is True and meta2["train_config"]["validate"] is False
    assert meta["train_config"]["sb_batch"] == 2 and meta2["train_config"]["sb_batch"] == 3
    # a finer model grid from the same weights: the checkpoint works at the new pixel size
    fine = args[:4] + [str(tmp_path / "fine.pt")] + args[5:] + ["--init", str(out), "--pixel-mm", "1.25"]
    assert main(fine) == 0
    assert torch.load(tmp_path / "fine.pt", weights_only=True)["config"]["pixel_mm"] == 1.25


def test_train_refuses_a_pixel_size_out_of_range(tmp_path, capsys):
    from napari_cardiac_motion.cli import main

    code = main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--pixel-mm", "0"])
    assert code != 0 and "--pixel-mm" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_flips_off_for_echo_apical_views(monkeypatch):
    """Random flips mirror the heart (det < 0); echo training (apex always on top) goes without them."""
    import numpy as np

    from napari_cardiac_motion.training.augment import random_affine
    from napari_cardiac_motion.training.sampling import Sampler
    from napari_cardiac_motion.training.train import TrainConfig

    rng = np.random.default_rng(0)
    det = lambda th: np.linalg.det(th[:, :, :2].numpy())  # noqa: E731
    assert (det(random_affine(64, 160, 128, rng, flip=False)) > 0).all()
    assert (det(random_affine(64, 160, 128, rng, flip=True)) < 0).any()
    seen = {}

    def fake_augment(images, codes, size, rng, wide=None, flip=True):
        seen["flip"] = flip
        return images, codes

    import napari_cardiac_motion.training.sampling as sampling

    monkeypatch.setattr(sampling, "augment_batch", fake_augment)
    for dataset, flips, expected in (("mr", None, True), ("echo", None, False), ("echo", True, True),
                                     ("mr", False, False)):
        cfg = TrainConfig(dataset=dataset, flips=flips)
        Sampler([], [], cfg, rng)._finish([np.zeros((2, 4, 4))], [np.zeros((2, 4, 4))], [False])
        assert seen["flip"] is expected, (dataset, flips)
