"""Whole-cine inference, devices and checkpoints."""

import numpy as np
import pytest
import torch

from napari_cardiac_motion.conventions import cycle_order
from napari_cardiac_motion.devices import available_devices, resolve_device
from napari_cardiac_motion.errors import CancelledError, CheckpointError, DeviceError, InputError
from napari_cardiac_motion.inference import predict_cine
from conftest import tiny_config
from napari_cardiac_motion.model import JointMotionSegNet, load_checkpoint, save_checkpoint
from napari_cardiac_motion.motion_refine import RefineSettings
from napari_cardiac_motion.preprocessing import normalize_intensity

TINY = tiny_config(input_size=(32, 48))


def _cine(t=4, z=2, y=37, x=53, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((t, z, y, x)).astype(np.float32) * 100


def test_predict_shapes_and_types_on_odd_grid():
    cine = _cine()
    calls = []
    res = predict_cine(cine, JointMotionSegNet(TINY), device="cpu", progress=lambda d, t, m: calls.append((d, t)),
                       batch_size=4)  # 4 frames a chunk: one slice at a time
    assert res.labels.shape == cine.shape and res.labels.dtype == np.uint8
    assert res.motion.shape == cine.shape + (2,) and res.motion.dtype == np.float32
    assert set(np.unique(res.labels)) <= {0, 1, 2, 3}
    assert np.all(res.motion[res.ed_frame] == 0)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # two passes (auto ED) x two slices
    assert res.frames_per_second > 0


def test_given_ed_frame_is_used_and_out_of_range_rejected():
    res = predict_cine(_cine(), JointMotionSegNet(TINY), device="cpu", ed_frame=2)
    assert res.ed_frame == 2 and np.all(res.motion[2] == 0)
    with pytest.raises(InputError, match="out of range"):
        predict_cine(_cine(), JointMotionSegNet(TINY), device="cpu", ed_frame=9)


def test_single_frame_volume_has_zero_motion():
    res = predict_cine(_cine(t=1), JointMotionSegNet(TINY), device="cpu")
    assert res.ed_frame == res.es_frame == 0 and not res.motion.any()


def test_cancel_between_slices():
    n = {"calls": 0}

    def cancel():
        n["calls"] += 1
        return n["calls"] > 1

    with pytest.raises(CancelledError):
        predict_cine(_cine(), JointMotionSegNet(TINY), device="cpu", cancel=cancel)


@pytest.mark.parametrize("bad", [np.zeros((3, 2, 32, 32)), np.full((3, 2, 32, 32), np.nan), np.ones((32, 32))])
def test_bad_arrays_are_rejected(bad):
    with pytest.raises(InputError):
        predict_cine(bad, JointMotionSegNet(TINY), device="cpu")


def test_cycle_order():
    assert cycle_order(5, 3) == [3, 4, 0, 1, 2]


def test_normalisation_range():
    v = normalize_intensity(np.random.default_rng(0).normal(100, 30, (2, 3, 16, 16)))
    assert v.min() == 0.0 and v.max() == 1.0 and v.dtype == np.float32


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == available_devices()[0]
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
    if "mps" not in available_devices():
        with pytest.raises(DeviceError, match="MPS is not available"):
            resolve_device("mps")
    with pytest.raises(DeviceError, match="Unknown device"):
        resolve_device("tpu")


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = JointMotionSegNet(TINY).eval()
    path = save_checkpoint(model, tmp_path / "m.pt", {"name": "tiny", "version": "0.0"})
    loaded, meta = load_checkpoint(path)
    assert meta["name"] == "tiny" and loaded.config == TINY
    x = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        assert torch.allclose(model.segment(x), loaded.segment(x))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a napari-cardiac-motion checkpoint"):
        load_checkpoint(other)


def test_given_ed_runs_one_pass_with_same_results_as_auto():
    """One pass (ED given) and two passes (auto ED, then that ED) must agree exactly."""
    model = JointMotionSegNet(TINY)
    auto = predict_cine(_cine(), model, device="cpu")
    calls = []
    given = predict_cine(_cine(), model, device="cpu", ed_frame=auto.ed_frame, progress=lambda d, t, m: calls.append(t),
                         batch_size=4)
    assert calls == [2, 2]  # one pass over two one-slice chunks
    assert np.array_equal(auto.labels, given.labels)
    assert np.allclose(auto.motion, given.motion, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# the batched loop equals the network's own sequence API

def test_inference_equals_model_forward():
    """With the whole field at the model's pixel size, predict_cine's labels and motion are exactly the
    network's ``forward`` (source = ED, frames in cycle order), mapped back to the cine's frame order."""
    from napari_cardiac_motion.geometry import whole_field_region

    torch.manual_seed(0)
    model = JointMotionSegNet(TINY).eval()
    with torch.no_grad():  # non-trivial flows: the fresh net's output layer is near zero
        model.flow_out.weight.normal_(0, 0.3)
    cine = _cine(t=5, z=3, y=32, x=48)
    ed = 2
    region = whole_field_region((32, 48), (1.0, 1.0), multiple=16)
    res = predict_cine(cine, model, device="cpu", ed_frame=ed, region=region, largest_component=False,
                       refine=RefineSettings(steps=0))
    img = torch.from_numpy(normalize_intensity(cine))
    order = cycle_order(5, ed)
    seq = img[order].permute(1, 0, 2, 3)  # (Z, T, Y, X) in cycle order
    with torch.no_grad():
        seg, flows, _ = model(seq[:, :1], seq.unsqueeze(2))
    want_labels = seg.argmax(2).permute(1, 0, 2, 3).numpy()  # (T in cycle order, Z, Y, X)
    want_motion = flows.permute(1, 0, 3, 4, 2).numpy()
    assert np.abs(want_motion).max() > 0.05  # the check below is not trivially about zeros
    for k, t in enumerate(order):
        assert np.array_equal(res.labels[t], want_labels[k])
        if t != ed:
            np.testing.assert_allclose(res.motion[t], want_motion[k], atol=1e-4)
    assert not res.motion[ed].any()


# --------------------------------------------------------------------------------------------------
# geometry: pixel size, region, mapping back

def test_region_mapping_is_exact_for_a_linear_image():
    """Bilinear sampling reproduces a linear ramp exactly, so the coordinate mapping is checked
    exactly in both directions, with anisotropic steps and a region partly outside the image."""
    from napari_cardiac_motion.geometry import region_around, to_input, to_model

    yy, xx = np.mgrid[:60, :80].astype(np.float64)
    ramp = torch.from_numpy((3.0 * yy - 2.0 * xx + 7.0)[None, None])
    region = region_around((20.0, 70.0), (24, 32), (1.25, 0.8), (60, 80))
    assert region.input_shape == (60, 80)
    m = to_model(ramp, region, antialias=False)[0, 0].numpy()
    j, i = np.mgrid[:24, :32]
    y = region.origin[0] + j * 1.25
    x = region.origin[1] + i * 0.8
    inside = (y <= 59) & (x <= 79) & (y >= 0) & (x >= 0)
    np.testing.assert_allclose(m[inside], (3.0 * y - 2.0 * x + 7.0)[inside], atol=1e-4)
    back = to_input(torch.from_numpy((3.0 * y - 2.0 * x + 7.0)[None, None]), region)[0, 0].numpy()
    y0, y1, x0, x1 = region.input_box()
    assert back.shape == (y1 - y0, x1 - x0) and y1 - y0 > 20 and x1 - x0 > 10
    np.testing.assert_allclose(back, (3.0 * yy - 2.0 * xx + 7.0)[y0:y1, x0:x1], atol=1e-4)


def _blur_then_grid_sample(x: torch.Tensor, region, fill: float) -> torch.Tensor:
    """Reference for to_model when shrinking: a separable Gaussian blur of the whole input (mirror
    padding) by convolution, then grid_sample at the model grid's input coordinates."""
    import math

    import torch.nn.functional as F

    from napari_cardiac_motion.geometry import antialias_sigma

    for axis, sigma in zip((2, 3), antialias_sigma(region.step)):
        if sigma < 0.2:
            continue
        r = int(math.ceil(3 * sigma))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
        k = (k / k.sum()).to(x.dtype)
        shape, pad = ((1, 1, -1, 1), (0, 0, r, r)) if axis == 2 else ((1, 1, 1, -1), (r, r, 0, 0))
        x = F.conv2d(F.pad(x, pad, mode="reflect"), k.view(*shape))
    (oy, ox), (sy, sx), (h, w), (ny, nx) = region.origin, region.step, region.size, region.input_shape
    ys = (oy + sy * torch.arange(h, dtype=torch.float64)) * 2 / (ny - 1) - 1
    xs = (ox + sx * torch.arange(w, dtype=torch.float64)) * 2 / (nx - 1) - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack((gx, gy), -1).to(x.dtype)[None].expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=True) + fill


@pytest.mark.parametrize("origin, step, size, shape", [
    ((0.0, 0.0), (3.25, 3.1), (130, 139), (422, 451)),     # an echo clip, 0.308 mm → 1 mm, whole field
    ((-20.3, 15.7), (2.2, 1.6), (112, 112), (256, 230)),   # anisotropic, partly outside the image
    ((-3.0, -7.0), (1.1, 2.5), (50, 60), (64, 200)),        # blurred along x only
])
def test_shrinking_to_model_equals_blur_then_sampling(origin, step, size, shape):
    """to_model's matrix form (blur and bilinear sampling in one separable product) gives what blurring
    the whole input and then sampling it gives, inside, at the rim and outside the image (fill)."""
    from napari_cardiac_motion.geometry import Region, to_model

    region = Region(origin, step, size, shape)
    x = torch.rand(3, 1, *shape, generator=torch.Generator().manual_seed(1)) * 100.0
    for fill in (0.0, -3.0):
        got = to_model(x, region, fill=fill)
        want = _blur_then_grid_sample(x.double(), region, fill).float()
        assert got.shape == (3, 1, *size)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-3)
        if origin[0] < 0:  # rows wholly above the image are the fill value
            assert float(got[:, :, 0].sub(fill).abs().max()) < 1e-4


def test_labels_on_input_take_the_arg_max_of_the_resampled_scores():
    """labels_on_input equals to_input followed by the arg-max over classes."""
    from napari_cardiac_motion.geometry import labels_on_input, region_around, to_input

    region = region_around((30.0, 40.0), (24, 20), (1.3, 0.9), (64, 72))
    scores = torch.rand(5, 4, 24, 20, generator=torch.Generator().manual_seed(2))
    got = labels_on_input(scores, region)
    assert got.dtype == torch.uint8
    assert torch.equal(got.long(), to_input(scores, region).argmax(1))


def test_motion_is_returned_in_input_voxels(monkeypatch):
    """A constant flow of (1, 1) model pixels must come back as (step_y, step_x) input voxels inside the
    processed region and 0 outside it (anisotropic pixels: 0.75 × 1.2 mm, model 1.5 mm)."""
    model = JointMotionSegNet(TINY).eval()

    def const_flows(motion_feats, size, first=None):
        return torch.ones(*motion_feats.shape[:2], 2, *size)

    monkeypatch.setattr(model, "pairwise_flows", const_flows)
    cine = _cine(t=3, z=1, y=40, x=30)
    res = predict_cine(cine, model, device="cpu", ed_frame=0, spacing=(8.0, 0.75, 1.2),
                       refine=RefineSettings(steps=0))
    reg = res.metadata["region"]
    assert reg["input_pixels_per_model_pixel_yx"] == [2.0, 1.25]
    y0, y1, x0, x1 = reg["input_box_yx"]
    inside = res.motion[1, 0, y0:y1, x0:x1]
    np.testing.assert_allclose(inside[..., 0], 2.0, atol=1e-5)
    np.testing.assert_allclose(inside[..., 1], 1.25, atol=1e-5)
    assert not res.motion[0].any()


def test_single_slice_cine_and_anisotropic_pixels():
    res = predict_cine(_cine(t=3, z=1, y=50, x=36), JointMotionSegNet(TINY), device="cpu", spacing=(10.0, 1.0, 2.2))
    assert res.labels.shape == (3, 1, 50, 36) and res.motion.shape == (3, 1, 50, 36, 2)
    reg = res.metadata["region"]
    assert reg["model_pixel_mm_yx"] == [1.5, 1.5] and reg["input_box_yx"] == [0, 50, 0, 36]


def test_region_for_heart_holds_the_heart_and_the_minimum_size():
    from napari_cardiac_motion.geometry import region_for_heart

    step = (1.5 / 0.7, 1.5 / 0.7)  # 0.7 mm pixels, 1.5 mm model
    r = region_for_heart((300, 380, 40, 130), step, (512, 512), pixel_mm=1.5, min_size=112)
    y0, y1, x0, x1 = r.input_box()
    assert y0 <= 300 and y1 >= 380 and x0 <= 40 and x1 >= 130  # the heart is inside
    assert r.size == (112, 112)  # small heart: the minimum region
    big = region_for_heart((0, 500, 0, 500), step, (512, 512), pixel_mm=1.5, min_size=112)
    assert big.covers_whole_slice()
    assert region_for_heart(None, step, (512, 512), pixel_mm=1.5).covers_whole_slice()


def test_largest_component_removes_stray_blobs():
    from napari_cardiac_motion.postprocess import keep_largest_components

    lab = np.zeros((2, 3, 40, 40), np.uint8)
    lab[:, :, 10:20, 10:20] = 2
    lab[:, :, 12:18, 12:18] = 1  # the LV blood pool, enclosed by myocardium
    lab[:, :, 10:20, 20:28] = 3  # the RV beside the septum
    lab[:, :, 25:39, 25:39] = 1  # a larger false "LV" far away
    lab[:, 1, 2:5, 30:33] = 2  # stray myocardium
    lab[:, 1, 30:38, 2:12] = 3  # stray RV, same size as the real one in that slice
    out = keep_largest_components(lab)
    assert (out[:, :, 12:18, 12:18] == 1).all() and not (out[:, :, 25:39, 25:39] == 1).any()
    assert not (out[:, 1, 2:5, 30:33] == 2).any() and (out[:, :, 10:12, 10:20] == 2).all()
    assert (out[:, :, 10:20, 20:28] == 3).all() and not (out[:, 1, 30:38, 2:12] == 3).any()


@pytest.fixture(scope="module")
def shipped():
    model, meta = load_checkpoint(None)
    return model


def _sample_cine():
    from napari_cardiac_motion._sample_data import sample_cine_path
    from napari_cardiac_motion.io import read_cine

    return read_cine(sample_cine_path())


def _dice(a, b):
    s = a.sum() + b.sum()
    return 2.0 * np.logical_and(a, b).sum() / s if s else 1.0


def test_heart_found_off_centre_in_a_large_field(shipped):
    """The sample padded into a 320×320 field with the heart in a corner: the model runs on a located
    region (not the centre, not the whole field) and labels match the unpadded run."""
    from napari_cardiac_motion.cine import Cine

    c = _sample_cine()
    ref = predict_cine(c, shipped, device="cpu", ed_frame=18)
    big = np.zeros(c.shape[:2] + (320, 320), np.float32)
    big[..., 180:308, 10:138] = c.data
    res = predict_cine(Cine(big, c.spacing, c.frame_interval_ms), shipped, device="cpu", ed_frame=18)
    reg = res.metadata["region"]
    assert reg["found"] == "located" and not reg["whole_slice"]
    y0, y1, x0, x1 = reg["input_box_yx"]
    assert y0 < 240 < y1 and x0 < 74 < x1 and (y1 - y0) < 320
    crop = res.labels[..., 180:308, 10:138]
    assert res.labels.sum() == crop.sum()  # nothing labelled outside the heart's field
    for c_ in (1, 2):
        assert _dice(crop == c_, ref.labels == c_) > 0.9, c_


def test_finer_pixels_give_the_same_heart(shipped):
    """The sample re-sampled to pixels 0.6× smaller (truthful spacing): LV blood pool and myocardium,
    brought back to the original grid, agree with the original run."""
    import torch.nn.functional as F

    from napari_cardiac_motion.cine import Cine

    c = _sample_cine()
    ref = predict_cine(c, shipped, device="cpu", ed_frame=18)
    t, z, h, w = c.shape
    n = int(round(h / 0.6))
    fine = F.interpolate(torch.from_numpy(c.data).reshape(t * z, 1, h, w), size=(n, n), mode="bilinear",
                         align_corners=False).reshape(t, z, n, n).numpy()
    sp = (c.spacing[0], c.spacing[1] * h / n, c.spacing[2] * w / n)
    res = predict_cine(Cine(fine, sp, c.frame_interval_ms), shipped, device="cpu", ed_frame=18)
    back = F.interpolate(torch.from_numpy(res.labels.astype(np.float32)).reshape(t * z, 1, n, n), size=(h, w),
                         mode="nearest").reshape(t, z, h, w).numpy()
    for c_ in (1, 2):
        assert _dice(back == c_, ref.labels == c_) > 0.85, c_
    u_ref = ref.motion[ref.labels > 0]
    assert np.abs(u_ref).max() > 1.0  # the heart moves: the motion check below is meaningful


def test_progress_and_cancel_are_per_slice_within_one_chunk():
    """All slices share one chunk (the default on a CPU), yet progress comes after every slice and
    Cancel takes effect before the next slice, not at the end of the pass."""
    calls, asked = [], {"n": 0}

    def cancel():
        asked["n"] += 1
        return asked["n"] > 2  # allow two slices, then stop

    with pytest.raises(CancelledError):
        predict_cine(_cine(t=3, z=4), JointMotionSegNet(TINY), device="cpu", ed_frame=0,
                     progress=lambda d, t, m: calls.append((d, t)), cancel=cancel)
    assert calls == [(1, 4), (2, 4)]


def test_fusion_makes_labels_follow_the_carried_ed_labels(shipped):
    """``fuse``: each frame's labels blend in the ED labels carried by the motion, so they agree with them
    more than without; the ED frame is unchanged; a weight outside [0, 1) is refused."""
    from napari_cardiac_motion.cine import Cine
    from napari_cardiac_motion.model.transformer import warp_array

    sample = _sample_cine()
    cine = Cine(sample.data[:6, 4:8].copy(), sample.spacing, name="part")
    runs = {w: predict_cine(cine, shipped, device="cpu", ed_frame=0, fuse=w, qc=False) for w in (0.0, 0.6)}
    np.testing.assert_array_equal(runs[0.0].labels[0], runs[0.6].labels[0])
    np.testing.assert_array_equal(runs[0.0].motion, runs[0.6].motion)  # the motion is not touched
    assert runs[0.6].metadata["fuse"] == 0.6 and runs[0.0].metadata["fuse"] == 0.0

    def agreement(res) -> float:
        ed = res.labels[0].astype(np.float32)  # (Z, Y, X)
        scores = []
        for t in range(1, res.labels.shape[0]):
            carried = warp_array(ed[:, None], res.motion[t], mode="nearest")[:, 0].round().astype(np.uint8)
            scores.append(np.mean([_dice(res.labels[t] == c, carried == c) for c in (1, 2, 3)]))
        return float(np.mean(scores))

    plain, fused = agreement(runs[0.0]), agreement(runs[0.6])
    assert fused > plain + 0.005, (plain, fused)  # 2.4.0 with flip TTA: 0.966 → 0.975
    with pytest.raises(InputError, match="fusion weight"):
        predict_cine(cine, shipped, device="cpu", ed_frame=0, fuse=1.5)


def test_flip_tta_is_on_by_default_for_mr_and_off_for_echo():
    """MR: ``tta=None`` is flip TTA (the same result as ``tta=True``, a different soft-max than one pass);
    echo: off by default and refused when asked for."""
    from napari_cardiac_motion.model_description import ECHO_DEFAULT

    torch.manual_seed(0)
    model = JointMotionSegNet(TINY)
    data = _cine(t=3, z=2)
    default = predict_cine(data, model, device="cpu", ed_frame=0)
    on = predict_cine(data, model, device="cpu", ed_frame=0, tta=True)
    off = predict_cine(data, model, device="cpu", ed_frame=0, tta=False)
    assert default.metadata["tta"] is True and on.metadata["tta"] is True and off.metadata["tta"] is False
    np.testing.assert_array_equal(default.labels, on.labels)
    np.testing.assert_array_equal(default.qc.evidence, on.qc.evidence)
    assert not np.array_equal(on.qc.evidence, off.qc.evidence)  # the flipped pass changes the soft-max sums
    echo = predict_cine(data[:, :1], model, device="cpu", ed_frame=0, description=ECHO_DEFAULT)
    assert echo.metadata["tta"] is False
    with pytest.raises(InputError, match="mirror-symmetric"):
        predict_cine(data[:, :1], model, device="cpu", ed_frame=0, description=ECHO_DEFAULT, tta=True)
