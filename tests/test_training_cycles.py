"""Training on whole cardiac cycles: cycle sampling, the temporal term, the mean teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_config
from synthetic import synthetic_acdc_like
from napari_cardiac_motion.model.losses import IGNORE_INDEX, allowed_table, carried_consistency, temporal_roughness
from napari_cardiac_motion.model.mean_teacher import MeanTeacher
from napari_cardiac_motion.model.network import JointMotionSegNet
from napari_cardiac_motion.training.data import Case
from napari_cardiac_motion.training.sampling import CYCLE, OPEN, Sampler, cycle_lengths
from napari_cardiac_motion.training.train import TrainConfig, batch_losses, combine, train

TINY = tiny_config(head=8, input_size=(96, 96)).to_dict()


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def beating_cine(n_frames: int = 20, size: int = 72, ed: int = 3, seed: int = 0) -> Case:
    """A synthetic cine slice pair whose LV contracts to ES and returns (frame value = its index in the
    image's mean, so the sampled order can be read back); labels at ED only, like a cine dataset."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    img = np.zeros((n_frames, 2, size, size), np.float32)
    codes = np.full((n_frames, 2, size, size), IGNORE_INDEX, np.uint8)
    for t in range(n_frames):
        phase = ((t - ed) % n_frames) / n_frames
        r = 12.0 - 4.0 * np.sin(np.pi * phase)
        rr = np.hypot(yy - size / 2, xx - size / 2)
        lab = np.where(rr < r, 1, np.where(rr < r + 5, 2, 0)).astype(np.uint8)
        for z in range(2):
            img[t, z] = np.choose(lab, [0.1, 0.9, 0.35]) + rng.normal(0, 0.02, (size, size))
            if t == ed:
                codes[t, z] = lab
    centre = np.full((2, 2), size / 2.0)
    return Case("beating", "sunnybrook", np.clip(img, 0, 1).astype(np.float16), codes, ed, (ed + n_frames // 3)
                % n_frames, None, centre)


def test_cycle_lengths_divide_the_cycle():
    assert cycle_lengths(20, 10) == [5, 10]
    assert cycle_lengths(12, 10) == [6]
    assert cycle_lengths(7, 5) == [5]  # nothing divides 7: an open run of 5 frames


def test_cycle_batches_sample_the_whole_cycle_from_ed():
    case = beating_cine(20, ed=3)
    cfg = TrainConfig(crop=48, sb_batch=2, sb_frames=10, wide_prob=0.0)
    sampler = Sampler([], [case], cfg, np.random.default_rng(0))
    seen = set()
    for _ in range(6):
        images, codes, kind = sampler.cycle_batch()
        n = images.shape[1]
        assert kind == CYCLE and n in (5, 10) and images.shape == codes.shape
        assert (codes[:, 0] != IGNORE_INDEX).any() and (codes[:, 1:] == IGNORE_INDEX).all()  # frame 0 = ED
        seen.add(n)
    assert seen == {5, 10}
    odd = beating_cine(7, ed=0)
    _, _, kind = Sampler([], [odd], TrainConfig(crop=48, sb_frames=5), np.random.default_rng(0)).cycle_batch()
    assert kind == OPEN


def test_temporal_roughness_sees_alternation_and_a_cycle_that_does_not_close():
    t = torch.arange(10, dtype=torch.float32)
    smooth = (torch.sin(np.pi * t / 10) * 3).view(1, 10, 1, 1, 1).expand(1, 10, 2, 4, 4)
    zigzag = smooth + 0.5 * ((-1) ** t).view(1, 10, 1, 1, 1)
    assert float(temporal_roughness(zigzag, closed=True)) > 5 * float(temporal_roughness(smooth, closed=True))
    ramp = t.view(1, 10, 1, 1, 1).expand(1, 10, 2, 4, 4) * 0.5  # drifts away and never returns
    assert float(temporal_roughness(ramp, closed=False)) < 1e-9
    assert float(temporal_roughness(ramp, closed=True)) > float(temporal_roughness(smooth, closed=True))


def test_mean_teacher_follows_the_student_and_takes_no_gradient():
    torch.manual_seed(0)
    student = JointMotionSegNet(tiny_config(head=8, input_size=(96, 96)))
    mt = MeanTeacher(student, decay=0.5)
    assert all(not p.requires_grad for p in mt.model.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in mt.model.parameters()]
    mt.update(student)
    for b, pt, ps in zip(before, mt.model.parameters(), student.parameters()):
        assert torch.allclose(pt, 0.5 * b + 0.5 * ps)
    with pytest.raises(ValueError, match="decay"):
        MeanTeacher(student, decay=1.0)


def test_cine_batches_add_the_temporal_and_teacher_terms():
    torch.manual_seed(0)
    model = JointMotionSegNet(tiny_config(head=8, input_size=(96, 96))).train()
    cfg = TrainConfig(crop=48, sb_batch=2, sb_frames=5, wide_prob=0.0)
    images, codes, kind = Sampler([], [beating_cine()], cfg, np.random.default_rng(1)).cycle_batch()
    teacher = MeanTeacher(model)
    losses = batch_losses(model, images, codes, cfg, allowed_table(torch.device("cpu")), False, kind=kind,
                          teacher=teacher)
    assert {"time", "teacher"} <= set(losses) and float(losses["teacher"]) > 0
    total = combine(losses, cfg)
    without = combine({k: v for k, v in losses.items() if k not in ("time", "teacher")}, cfg)
    assert float(total) > float(without)
    total.backward()
    assert all(p.grad is None for p in teacher.model.parameters())
    pair_losses = batch_losses(model, images[:, :2], codes[:, :2], cfg, allowed_table(torch.device("cpu")), False)
    assert "time" not in pair_losses and "teacher" not in pair_losses


def test_carried_consistency_is_zero_when_segmentation_and_motion_agree():
    """A disc that moves 3 px: with the true motion the ED segmentation carried to the frame is the frame's
    own segmentation (~0), with no motion it is not; the term is off by default and, when on, reaches
    both the segmentation logits and the flows."""
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")

    def logits(cx: float) -> torch.Tensor:  # (C=4, H, W): a confident LV disc at (24, cx)
        inside = ((yy - 24) ** 2 + (xx - cx) ** 2 <= 8.0 ** 2).float()
        out = torch.full((4, 48, 48), -10.0)
        out[0] = 10.0 * (1 - inside)
        out[1] = 10.0 * inside
        return out

    seg = torch.stack([logits(20.0), logits(23.0)]).unsqueeze(0)  # (B=1, T=2, C, H, W)
    true = torch.zeros(1, 2, 2, 48, 48)
    true[:, 1, 1] = -3.0  # pull convention: frame_1(p) = frame_0(p + u), u_x = −3 px
    agree = float(carried_consistency(seg, true))
    disagree = float(carried_consistency(seg, torch.zeros_like(true)))
    assert agree < 0.002 and disagree > 0.05  # (LV Dice ~0.76 averaged with two classes absent from both)
    seg_g, flow_g = seg.clone().requires_grad_(True), torch.zeros_like(true).requires_grad_(True)
    carried_consistency(seg_g, flow_g).backward()
    assert float(seg_g.grad.abs().sum()) > 0 and float(flow_g.grad.abs().sum()) > 0
    assert float(carried_consistency(seg[:, :1], true[:, :1])) == 0.0  # one frame: nothing to carry

    torch.manual_seed(0)
    model = JointMotionSegNet(tiny_config(head=8, input_size=(96, 96))).train()
    images, codes, kind = Sampler([], [beating_cine()], TrainConfig(crop=48, sb_frames=5, wide_prob=0.0),
                                  np.random.default_rng(1)).cycle_batch()
    table = allowed_table(torch.device("cpu"))
    assert "carry" not in batch_losses(model, images, codes, TrainConfig(crop=48), table, False, kind=kind)
    on = TrainConfig(crop=48, w_carry=0.5)
    losses = batch_losses(model, images, codes, on, table, False, kind=kind)
    assert float(losses["carry"]) > 0
    assert float(combine(losses, on)) == pytest.approx(
        float(combine({k: v for k, v in losses.items() if k != "carry"}, on)) + 0.5 * float(losses["carry"]),
        rel=1e-5)


def test_training_with_cines_logs_the_new_terms(tmp_path):
    cases = synthetic_acdc_like(2, size=72, n_slices=2)
    cfg = TrainConfig(out=str(tmp_path / "m.pt"), epochs=1, steps_per_epoch=6, batch_size=2, crop=48, lr=1e-3,
                      device="cpu", model=TINY, sunnybrook_every=2, sb_batch=1, sb_frames=5, num_threads=1,
                      adaptive_threads=False, validate=False)
    _, meta = train(cfg, cases=(cases, [beating_cine()], []), log=lambda s: None)
    terms = meta["history"][-1]["train"]
    assert terms["time"] > 0 and terms["teacher"] > 0 and meta["steps"] == 6


def test_an_echo_run_says_what_it_segments(tmp_path):
    """``dataset="echo"``: half-cycle clips are open sequences, validation scores the echo classes and the
    checkpoint describes an echo model (left atrium, not RV), at the echo pixel size."""
    from napari_cardiac_motion.model.checkpoint import load_checkpoint
    from napari_cardiac_motion.model_description import describe
    from napari_cardiac_motion.training.datasets import ECHO_PIXEL_MM

    clips = synthetic_acdc_like(2, size=72, n_slices=1)
    for c in clips:
        c.source, c.whole_cycle = "camus", False
    half = beating_cine(10, ed=0)
    half.source, half.whole_cycle = "camus", False
    half.image, half.codes, half.center = half.image[:, :1], half.codes[:, :1], half.center[:1]
    _, _, kind = Sampler([], [half], TrainConfig(crop=48, sb_frames=5), np.random.default_rng(0)).cycle_batch()
    assert kind == OPEN
    cfg = TrainConfig(out=str(tmp_path / "echo.pt"), epochs=1, steps_per_epoch=3, batch_size=2, crop=48,
                      device="cpu", sunnybrook_every=2, sb_batch=1, sb_frames=5, num_threads=1,
                      adaptive_threads=False, dataset="echo")
    _, meta = train(cfg, cases=(clips, [half], clips[:1]), log=lambda s: None)
    assert "dice_LA" in meta["val"] and "dice_RV" not in meta["val"]
    assert meta["modality"] == "US" and meta["name"] == "echo-joint-v1"
    model, meta2 = load_checkpoint(cfg.out)
    assert describe(meta2).by_key("LA") is not None and describe(meta2).by_key("RV") is None
    assert model.config.pixel_mm == ECHO_PIXEL_MM
    assert any(d["dataset"] == "CAMUS" for d in meta["training_data"])


def _stack_case(base_first: bool) -> Case:
    """Six slices; at ED slice 0 (or 5) lies above the base (nothing drawn), the LV narrows to the apex."""
    size = 32
    yy, xx = np.mgrid[:size, :size]
    rr = np.hypot(yy - size / 2, xx - size / 2)
    codes = np.zeros((2, 6, size, size), np.uint8)
    for k, r in enumerate((10.0, 8.0, 6.0, 4.0, 2.5)):  # labelled slices, base → apex
        z = k + 1 if base_first else 4 - k
        codes[0, z] = np.where(rr < r, 1, np.where(rr < r + 3, 2, 0))
    img = np.random.default_rng(0).random((2, 6, size, size)).astype(np.float16)
    return Case("stack", "acdc", img, codes, 0, 1, None, np.full((6, 2), size / 2.0))


def test_basal_slices_and_their_weight_in_sampling():
    from napari_cardiac_motion.training.sampling import basal_slices

    assert basal_slices(_stack_case(True)) == [0, 1, 2]  # above the base, then the two most basal
    assert basal_slices(_stack_case(False)) == [5, 4, 3]
    cfg = TrainConfig(crop=24, batch_size=4, wide_prob=0.0, basal_weight=4.0)
    sampler = Sampler([_stack_case(True)], [], cfg, np.random.default_rng(0))
    basal = sum(p for (i, z), p in zip(sampler.acdc_items, sampler.acdc_p) if z in (0, 1, 2))
    assert basal == pytest.approx(12 / 15)  # 3 slices × 4 against 3 × 1
    images, codes = sampler.acdc_batch()
    assert images.shape[0] == 4 and images.shape == codes.shape
    assert Sampler([_stack_case(True)], [], TrainConfig(crop=24), np.random.default_rng(0)).acdc_p is None
