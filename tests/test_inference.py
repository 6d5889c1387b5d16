"""Whole-cine inference, devices and checkpoints."""

import numpy as np
import pytest
import torch

from napari_cardiac_motion.devices import available_devices, resolve_device
from napari_cardiac_motion.errors import CancelledError, CheckpointError, DeviceError, InputError
from napari_cardiac_motion.inference import cycle_order, predict_cine
from napari_cardiac_motion.model import JointConfig, JointMotionSegNet, load_checkpoint, save_checkpoint
from napari_cardiac_motion.preprocessing import from_network_grid, normalize_intensity, to_network_grid

TINY = JointConfig(channels=(4, 8, 8, 8, 8), head=4, gru_hidden=4, input_size=(32, 48))


def _cine(t=4, z=2, y=37, x=53, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((t, z, y, x)).astype(np.float32) * 100


def test_predict_shapes_and_types_on_odd_grid():
    cine = _cine()
    calls = []
    res = predict_cine(cine, JointMotionSegNet(TINY), device="cpu", progress=lambda d, t, m: calls.append((d, t)))
    assert res.labels.shape == cine.shape and res.labels.dtype == np.uint8
    assert res.motion.shape == cine.shape + (2,) and res.motion.dtype == np.float32
    assert set(np.unique(res.labels)) <= {0, 1, 2, 3}
    assert np.all(res.motion[res.ed_frame] == 0)
    assert calls[-1] == (4, 4) and len(calls) == 4  # two passes (auto ED) x two slices
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


def test_crop_pad_round_trip():
    a = np.arange(2 * 37 * 53, dtype=np.float32).reshape(2, 37, 53)
    net = to_network_grid(a, (32, 64))
    back = from_network_grid(net, (37, 53), fill=-1)
    inside = back != -1
    assert np.array_equal(back[inside], a[inside]) and inside[:, 2:34, :].all()
    vec = np.stack([a, -a], -1)
    vnet = to_network_grid(np.moveaxis(vec, -1, 0), (32, 64))
    assert np.array_equal(from_network_grid(np.moveaxis(vnet, 0, -1), (37, 53), spatial_axes=(-3, -2))[..., 1][inside], -a[inside])


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
    given = predict_cine(_cine(), model, device="cpu", ed_frame=auto.ed_frame, progress=lambda d, t, m: calls.append(t))
    assert calls == [2, 2]
    assert np.array_equal(auto.labels, given.labels)
    assert np.allclose(auto.motion, given.motion, atol=1e-5)
