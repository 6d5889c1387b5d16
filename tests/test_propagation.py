"""Label propagation through the motion (label_t(p) = label_ED(p + u_t(p)))."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cardiac_motion.errors import InputError
from napari_cardiac_motion.propagation import invert_displacement, propagate_labels


def _square():
    lab = np.zeros((40, 48), np.uint8)
    lab[15:25, 10:20] = 1
    lab[17:20, 12:15] = 2
    return lab


def _translations():
    mot = np.zeros((3, 40, 48, 2), np.float32)
    mot[1, ..., 1] = -3.0  # frame 1 = ED shifted by +3 px in x
    mot[2, ..., 0] = 2.0  # frame 2 = ED shifted by -2 px in y
    return mot


def test_known_translation_moves_mask_from_ed():
    lab, mot = _square(), _translations()
    out = propagate_labels(lab, mot, source_frame=0)
    assert out.shape == (3, 40, 48) and out.dtype == np.uint8
    assert np.array_equal(out[0], lab)
    assert np.array_equal(out[1], np.roll(lab, 3, axis=1))
    assert np.array_equal(out[2], np.roll(lab, -2, axis=0))


def test_from_non_ed_frame_goes_through_ed():
    lab, mot = _square(), _translations()
    at1 = np.roll(lab, 3, axis=1)
    out = propagate_labels(at1, mot, source_frame=1)
    assert np.array_equal(out[1], at1)
    assert np.array_equal(out[0], lab)
    assert np.array_equal(out[2], np.roll(lab, -2, axis=0))


def test_inverse_of_translation():
    u = np.zeros((10, 12, 2), np.float32)
    u[..., 0] = 1.5
    v = invert_displacement(u)
    assert np.allclose(v[..., 0], -1.5, atol=1e-4) and np.allclose(v[..., 1], 0.0, atol=1e-4)


def test_shape_mismatch():
    with pytest.raises(InputError):
        propagate_labels(np.zeros((10, 10), np.uint8), np.zeros((3, 10, 12, 2)), 0)
    with pytest.raises(InputError):
        propagate_labels(np.zeros((10, 12), np.uint8), np.zeros((3, 10, 12, 2)), 5)
