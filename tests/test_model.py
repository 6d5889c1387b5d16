"""The joint network, its spatial transformer and its losses."""

import numpy as np
import pytest
import torch

from conftest import tiny_config
from napari_cardiac_motion.model import JointMotionSegNet, warp
from napari_cardiac_motion.model.losses import (
    charbonnier_smoothness,
    motion_loss,
    one_hot_labels,
    segmentation_loss,
    warped_label_loss,
)

TINY = tiny_config()


def _smooth_image(h=40, w=48, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w), np.float32)
    for _ in range(5):
        cy, cx, s = rng.uniform(8, h - 8), rng.uniform(8, w - 8), rng.uniform(3, 7)
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return torch.from_numpy(img)[None, None]


def test_zero_flow_is_identity():
    img = _smooth_image()
    out = warp(img, torch.zeros(1, 2, *img.shape[-2:]))
    assert torch.allclose(out, img, atol=1e-6)


@pytest.mark.parametrize("dy,dx", [(3.0, -2.0), (0.5, 1.25)])
def test_known_translation_is_recovered(dy, dx):
    """warp(img, u)(p) = img(p + u): a constant flow shifts the image by exactly (dy, dx) pixels."""
    h, w = 40, 48
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    def f(y, x):  # smooth analytic image so interpolation error is small
        return np.sin(0.3 * y) * np.cos(0.2 * x) + 0.01 * y * x

    img = torch.from_numpy(f(yy, xx).astype(np.float32))[None, None]
    flow = torch.tensor([dy, dx], dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, h, w)
    out = warp(img, flow)[0, 0].numpy()
    expected = f(yy + dy, xx + dx)
    inner = (slice(5, h - 5), slice(5, w - 5))  # away from border padding
    err = np.abs(out[inner] - expected[inner]).max()
    tol = 1e-5 if float(dy).is_integer() and float(dx).is_integer() else 0.05
    assert err < tol, err
    # a half-pixel convention bug (align_corners mismatch) would leave an error near 0.1 here
    if tol == 1e-5:
        assert np.abs(out[inner] - f(yy + dy + 0.5, xx + dx + 0.5)[inner]).max() > 0.05


def test_integer_translation_moves_a_mask_exactly():
    lab = torch.zeros(1, 1, 32, 32)
    lab[..., 10:20, 12:18] = 1
    flow = torch.zeros(1, 2, 32, 32)
    flow[:, 0] = -2.0  # out(p) = lab(p + (-2, 3)) -> mask moves down by 2, left by 3
    flow[:, 1] = 3.0
    out = warp(lab, flow, mode="nearest")
    ref = torch.zeros_like(lab)
    ref[..., 12:22, 9:15] = 1
    assert torch.equal(out, ref)


@pytest.mark.parametrize("h,w", [(37, 50), (64, 64), (21, 33)])
def test_arbitrary_sizes_round_trip(h, w):
    model = JointMotionSegNet(TINY).eval()
    with torch.no_grad():
        seg, flows, seg_src = model(torch.rand(2, 1, h, w), torch.rand(2, 3, 1, h, w))
        assert seg.shape == (2, 3, 4, h, w)
        assert flows.shape == (2, 3, 2, h, w)
        assert seg_src.shape == (2, 4, h, w)
        assert model.segment(torch.rand(5, 1, h, w)).shape == (5, 4, h, w)


def _encoder_grad_norm(model):
    return sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None)


def test_motion_loss_sends_gradients_into_shared_encoder():
    model = JointMotionSegNet(TINY).train()
    src, frames = torch.rand(2, 1, 32, 32), torch.rand(2, 2, 1, 32, 32)
    _, flows, _ = model(src, frames)
    loss = motion_loss(src, frames[:, 1], flows[:, 1])
    loss.backward()
    assert _encoder_grad_norm(model) > 0
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.seg_head.parameters())


def test_segmentation_and_joint_losses_send_gradients_into_shared_encoder():
    model = JointMotionSegNet(TINY).train()
    src, frames = torch.rand(2, 1, 32, 32), torch.rand(2, 2, 1, 32, 32)
    labels = torch.randint(0, 4, (2, 32, 32))
    seg, flows, seg_src = model(src, frames)
    segmentation_loss(seg_src, labels).backward()
    assert _encoder_grad_norm(model) > 0
    model.zero_grad(set_to_none=True)
    seg, flows, seg_src = model(src, frames)
    warped_label_loss(one_hot_labels(labels, 4), flows[:, 1], labels).backward()
    assert _encoder_grad_norm(model) > 0
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.gru.parameters())


def test_segmentation_loss_ignores_unlabelled_voxels():
    logits = torch.randn(1, 4, 8, 8, requires_grad=True)
    labels = torch.full((1, 8, 8), 255)
    loss = segmentation_loss(logits, labels)
    assert float(loss) == 0.0
    labels[0, :4] = 1
    perfect = torch.zeros(1, 4, 8, 8)
    perfect[:, 1] = 20.0
    assert float(segmentation_loss(perfect, labels)) < 0.05  # only the labelled (class-1) half counts


def test_smoothness_is_zero_for_constant_flow_and_positive_otherwise():
    const = torch.ones(1, 2, 16, 16) * 3
    assert float(charbonnier_smoothness(const)) < 0.01
    assert float(charbonnier_smoothness(torch.randn(1, 2, 16, 16))) > 0.5


def test_training_sequence_forward_matches_model_forward():
    """The trainer's single-encoding forward equals ``model(frames[:, 0], frames)`` in eval mode."""
    model = JointMotionSegNet(TINY).eval()
    images = torch.rand(2, 3, 36, 40)
    with torch.no_grad():
        seg_a, flows_a = model.forward_sequence(images)
        seg_b, flows_b, _ = model(images[:, :1], images.unsqueeze(2))
    assert torch.allclose(seg_a, seg_b, atol=1e-5) and torch.allclose(flows_a, flows_b, atol=1e-5)


def test_average_checkpoints_is_the_mean_of_the_weights(tmp_path, monkeypatch):
    """A model soup: every float tensor is the mean (BatchNorm statistics included), counters come from the
    first, the sources are recorded, and checkpoints of another architecture are refused."""
    import runpy
    from pathlib import Path

    from napari_cardiac_motion.errors import CheckpointError
    from napari_cardiac_motion.model import load_checkpoint, save_checkpoint
    from napari_cardiac_motion.model.checkpoint import average_checkpoints

    paths = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        net = JointMotionSegNet(TINY)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.num_batches_tracked.fill_(seed + 5)
        paths.append(save_checkpoint(net, tmp_path / f"m{seed}.pt", {"name": "tiny", "version": f"0.{seed}"}))
    nets = [load_checkpoint(p)[0].state_dict() for p in paths]
    out = average_checkpoints(paths, tmp_path / "soup.pt")
    soup, meta = load_checkpoint(out)
    for k, v in soup.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, sum(n[k] for n in nets) / 3, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(v, nets[0][k])
    assert meta["version"] == "0.0" and meta["averaged_from"] == [str(p) for p in paths]
    other = save_checkpoint(JointMotionSegNet(tiny_config(head=TINY.head + 2)), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"another architecture.*config head"):
        average_checkpoints([paths[0], other], tmp_path / "bad.pt")
    finer = save_checkpoint(JointMotionSegNet(tiny_config(pixel_mm=1.25)), tmp_path / "finer.pt")
    with pytest.raises(CheckpointError, match="config pixel_mm"):  # the same weights' shapes, another grid
        average_checkpoints([paths[0], finer], tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints(paths[:1], tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()
    script = Path(__file__).resolve().parents[1] / "scripts" / "average_checkpoints.py"
    monkeypatch.setattr("sys.argv", ["average_checkpoints.py", str(tmp_path / "cli.pt"), str(paths[0]), str(paths[1])])
    runpy.run_path(str(script), run_name="__main__")
    assert load_checkpoint(tmp_path / "cli.pt")[1]["averaged_from"] == [str(paths[0]), str(paths[1])]
