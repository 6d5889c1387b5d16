"""Shared fixtures for the test suite (runs headless under Xvfb: ``make test``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

try:  # keep the suite polite on the 2-core machines it runs on
    import torch

    torch.set_num_threads(2)
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` (Sunnybrook NIfTI/DICOM, ACDC); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (it lies beside the repository)")
    return SHARED_DATA


def make_tiny_cine():
    """A small synthetic cine: T=4, Z=2, 40×48, a bright disc in a dim ring moving +1 px/frame in x.

    Spacing ``(dz, dy, dx) = (8, 1.5, 1.5)`` mm, 40 ms between frames.
    """
    from napari_cardiac_motion.cine import Cine

    t_n, z_n, y_n, x_n = 4, 2, 40, 48
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:y_n, :x_n].astype(np.float32)
    data = np.empty((t_n, z_n, y_n, x_n), np.float32)
    for t in range(t_n):
        for z in range(z_n):
            r = np.hypot(yy - 20.0, xx - (20.0 + t))
            radius = 8.0 - z  # apical slice is smaller
            img = np.where(r < radius, 1.0, np.where(r < radius + 3.0, 0.4, 0.1)).astype(np.float32)
            data[t, z] = img + 0.02 * rng.standard_normal((y_n, x_n), dtype=np.float32)
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    return Cine(data=data, spacing=(8.0, 1.5, 1.5), frame_interval_ms=40.0, affine=affine, name="tiny")


@pytest.fixture
def tiny_cine():
    """:func:`make_tiny_cine`, fresh for each test."""
    return make_tiny_cine()


@pytest.fixture(scope="module")
def tiny_cine_module():
    """:func:`make_tiny_cine`, shared by a module's tests (for module-scoped fixtures)."""
    return make_tiny_cine()


@pytest.fixture(scope="session")
def sample_cine_path() -> Path:
    """The bundled sample cine (Sunnybrook SC-HF-I-1, CC0), as installed with the package."""
    from napari_cardiac_motion._sample_data import sample_cine_path as _path

    return Path(_path())


#: the tiny network of the tests (seconds on a CPU); tests override single fields
TINY_NET = {"channels": (4, 8, 8, 8, 8), "head": 4, "gru_hidden": 4}


def tiny_config(**overrides):
    """A :class:`~napari_cardiac_motion.model.JointConfig` of the tiny test network (``overrides`` replace fields)."""
    from napari_cardiac_motion.model import JointConfig

    return JointConfig(**{**TINY_NET, **overrides})


def tiny_net(**overrides):
    """A freshly initialised tiny :class:`~napari_cardiac_motion.model.JointMotionSegNet` (see :func:`tiny_config`)."""
    from napari_cardiac_motion.model import JointMotionSegNet

    return JointMotionSegNet(tiny_config(**overrides))


@pytest.fixture
def notifications(monkeypatch):
    """Capture napari's ``show_error`` / ``show_info`` / ``show_warning`` calls instead of showing them:
    ``{"error": [...], "info": [...], "warning": [...]}``."""
    import napari.utils.notifications as nt

    seen: dict[str, list[str]] = {"error": [], "info": [], "warning": []}
    for kind in seen:
        monkeypatch.setattr(nt, f"show_{kind}", lambda msg, *a, _k=kind, **k: seen[_k].append(str(msg)))
    return seen


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny joint network saved as a checkpoint, for GUI tests: it predicts LV blood pool almost
    everywhere and a small non-zero motion."""
    import torch

    from napari_cardiac_motion.model import save_checkpoint

    torch.manual_seed(0)
    net = tiny_net(max_flow=4.0)
    with torch.no_grad():
        net.seg_head[-1].bias.copy_(torch.tensor([0.0, 3.0, 0.0, 0.0]))
        net.flow_out.weight.normal_(std=0.05)
        net.flow_out.bias.fill_(0.05)
    return save_checkpoint(net, tmp_path_factory.mktemp("models") / "tiny.pt", {"name": "tiny", "version": "0"})
