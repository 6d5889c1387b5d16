"""Layer data built from a prediction: labels tuple and motion arrows (pure numpy, no viewer)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cardiac_motion.conventions import LABEL_COLORS
from napari_cardiac_motion.layers import (
    dilate_mask,
    arrow_step,
    motion_vectors,
    sample_bilinear,
    segmentation_layer_data,
)


def _square_labels(n_t=3, n_z=2, h=32, w=40, box=(8, 24, 10, 30)):
    labels = np.zeros((n_t, n_z, h, w), np.uint8)
    y0, y1, x0, x1 = box
    labels[:, :, y0:y1, x0:x1] = 2
    labels[:, :, y0 + 4:y1 - 4, x0 + 4:x1 - 4] = 1
    return labels


def test_segmentation_layer_data():
    labels = _square_labels().astype(np.int64)
    data, kwargs, kind = segmentation_layer_data(labels, scale=(1, 8, 1.5, 1.5), translate=(0, 0, 2, 3),
                                                 metadata={"ed_frame": 0})
    assert kind == "labels"
    assert data.dtype == np.uint8 and data.shape == labels.shape
    np.testing.assert_array_equal(data, labels)
    assert kwargs["name"] == "segmentation"
    assert kwargs["scale"] == (1.0, 8.0, 1.5, 1.5)
    assert kwargs["translate"] == (0.0, 0.0, 2.0, 3.0)
    assert kwargs["metadata"] == {"ed_frame": 0}
    for value in (1, 2, 3):
        assert kwargs["colormap"][value] == pytest.approx(LABEL_COLORS[value])
    assert kwargs["colormap"][0][3] == 0  # background transparent
    assert kwargs["features"]["index"] == [0, 1, 2, 3]


def test_dilate_mask_disc():
    m = np.zeros((1, 11, 11), bool)
    m[0, 5, 5] = True
    d = dilate_mask(m, 2)
    assert d.sum() == 13  # disc of radius 2
    assert d[0, 3, 5] and d[0, 5, 7] and not d[0, 3, 3]
    np.testing.assert_array_equal(dilate_mask(m, 0), m)


def test_sample_bilinear():
    yy, xx = np.mgrid[:5, :6].astype(np.float64)
    field = np.stack([yy * 2.0, xx + 1.0], axis=-1)  # linear: bilinear is exact
    v = sample_bilinear(field, np.array([1.5, 3.25]), np.array([2.5, 0.75]))
    np.testing.assert_allclose(v, [[3.0, 3.5], [6.5, 1.75]])
    # clamped at the border
    np.testing.assert_allclose(sample_bilinear(field, np.array([10.0]), np.array([-3.0])), [[8.0, 1.0]])


def test_from_ed_constant_translation():
    labels = _square_labels()
    n_t, n_z, h, w = labels.shape
    motion = np.zeros(labels.shape + (2,), np.float32)
    motion[1:] = (1.0, -2.0)  # u_t = (dy, dx) for t > 0; u_ED = 0
    vec, mag = motion_vectors(motion, labels, step=4, mode="from_ed", dilate=0)
    assert vec.dtype == np.float32 and vec.ndim == 3 and vec.shape[1:] == (2, 4)
    assert mag.shape == (vec.shape[0],)
    np.testing.assert_array_equal(vec[:, 1, :2], 0)  # no t/z component of the projection
    later = vec[:, 0, 0] > 0
    # start = p + u, projection = -u, so the arrow ends on the grid point p (inside the heart)
    np.testing.assert_allclose(vec[later, 1, 2:], np.tile([-1.0, 2.0], (later.sum(), 1)))
    np.testing.assert_allclose(mag[later], np.sqrt(5.0), rtol=1e-6)
    end = vec[:, 0, 2:] + vec[:, 1, 2:]
    assert np.all(end % 4 == 2)  # grid offset step // 2
    iy, ix = end.astype(int).T
    assert np.all(labels[vec[:, 0, 0].astype(int), vec[:, 0, 1].astype(int), iy, ix] > 0)
    # ED frame: zero arrows, dropped with min_magnitude
    assert np.all(mag[~later] == 0)
    vec2, _ = motion_vectors(motion, labels, step=4, dilate=0, min_magnitude=0.1)
    assert vec2.shape[0] == later.sum()
    # every frame and slice has arrows; grid 4 px inside the 16x20 box = 4*5 points per slice
    per_slice = later.sum() / ((n_t - 1) * n_z)
    assert per_slice == 20


def test_mask_follows_each_frame_and_dilation():
    labels = np.zeros((2, 1, 40, 40), np.uint8)
    labels[0, 0, 4:12, 4:12] = 1
    labels[1, 0, 24:36, 24:36] = 3
    motion = np.zeros(labels.shape + (2,), np.float32)
    vec, _ = motion_vectors(motion, labels, step=2, dilate=0)
    ends = vec[:, 0, 2:] + vec[:, 1, 2:]
    f0 = vec[:, 0, 0] == 0
    assert np.all((ends[f0] >= 4) & (ends[f0] < 12))
    assert np.all((ends[~f0] >= 24) & (ends[~f0] < 36))
    vec_d, _ = motion_vectors(motion, labels, step=2, dilate=3)
    assert vec_d.shape[0] > vec.shape[0]


def test_no_heart_gives_empty():
    labels = np.zeros((2, 1, 20, 20), np.uint8)
    vec, mag = motion_vectors(np.zeros(labels.shape + (2,), np.float32), labels)
    assert vec.shape == (0, 2, 4) and mag.shape == (0,)


def test_frame_to_frame_linear_in_time():
    # u_t = t * v: tissue at ED point q sits at q - t*v at frame t, so it moves by -v per frame
    labels = _square_labels(n_t=4)
    v = np.array([0.5, 1.5], np.float32)
    motion = np.zeros(labels.shape + (2,), np.float32)
    for t in range(4):
        motion[t] = t * v
    vec, mag = motion_vectors(motion, labels, step=4, mode="frame_to_frame", dilate=0)
    t_idx = vec[:, 0, 0].astype(int)
    mid = t_idx > 0
    np.testing.assert_allclose(vec[mid, 1, 2:], np.tile(-v, (mid.sum(), 1)), atol=1e-5)
    np.testing.assert_allclose(mag[mid], np.hypot(*v), rtol=1e-5)
    # frame 0 (ED) wraps to the last frame: from q - 3v to q, i.e. +3v
    np.testing.assert_allclose(vec[~mid, 1, 2:], np.tile(3 * v, ((~mid).sum(), 1)), atol=1e-5)


def test_frame_to_frame_inverts_nonuniform_field():
    # a smooth contraction about the centre: u_t(p) = a_t * (p - c)
    n_t, h, w = 3, 48, 48
    labels = np.zeros((n_t, 1, h, w), np.uint8)
    labels[:, :, 8:40, 8:40] = 1
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    c = 24.0
    motion = np.zeros((n_t, 1, h, w, 2), np.float32)
    for t, a in enumerate([0.0, 0.08, 0.15]):
        motion[t, 0, ..., 0] = a * (yy - c)
        motion[t, 0, ..., 1] = a * (xx - c)
    vec, _ = motion_vectors(motion, labels, step=4, mode="frame_to_frame", dilate=0, fixed_point_iterations=3)
    sel = vec[:, 0, 0] == 2
    start = vec[sel, 0, 2:].astype(np.float64)
    p = start + vec[sel, 1, 2:]
    q = p + 0.15 * (p - c)
    # the arrow's start is where the same ED point sat at frame 1: start + u_1(start) = q
    resid = start + 0.08 * (start - c) - q
    assert np.abs(resid).max() < 0.02
    # the one-step approximation q - u_{t-1}(q) is close but less exact
    vec1, _ = motion_vectors(motion, labels, step=4, mode="frame_to_frame", dilate=0, fixed_point_iterations=1)
    s1 = vec1[vec1[:, 0, 0] == 2, 0, 2:].astype(np.float64)
    resid1 = s1 + 0.08 * (s1 - c) - q
    assert np.abs(resid1).max() > np.abs(resid).max()


def test_vector_count_is_bounded():
    labels = np.ones((20, 12, 128, 128), np.uint8)  # worst case: everything is "heart"
    motion = np.zeros(labels.shape + (2,), np.float32)
    vec, _ = motion_vectors(motion, labels, step=4)
    assert vec.shape[0] == 20 * 12 * 32 * 32  # ~1000 per frame and slice, not one per pixel


def test_bad_arguments():
    labels = _square_labels()
    with pytest.raises(ValueError):
        motion_vectors(np.zeros(labels.shape + (3,)), labels)
    with pytest.raises(ValueError):
        motion_vectors(np.zeros(labels.shape + (2,)), labels, mode="sideways")


def test_arrows_are_spaced_in_millimetres():
    """The arrows' grid is about 6 mm whatever the pixel size: 4 px at MR's 1.5 mm, 19 px on a 0.308 mm echo
    clip (a fixed 4 px drew 25 times as many arrows there); placeholder pixels of 1 give 6 px."""
    assert arrow_step((1.5, 1.5)) == 4 and arrow_step((0.308, 0.308)) == 19 and arrow_step((1.0, 1.0)) == 6
    assert arrow_step((0.7, 0.7)) == 9 and arrow_step((20.0, 20.0)) == 1
    assert arrow_step((float("nan"), 0.0)) == 4  # nothing usable: the MR default
    assert arrow_step(None, (388, 388)) == 10 and arrow_step(None, (112, 112)) == 4  # no pixel size: ~40 across
