"""Choosing a torch device: ``auto`` = CUDA if available, else Apple MPS, else CPU."""

from __future__ import annotations

import torch

from .errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Names of the devices usable here, always including ``cpu``."""
    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    if _mps_available():
        out.append("mps")
    out.append("cpu")
    return out


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a :class:`torch.device`, or raise :class:`DeviceError`."""
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"Device '{name}' was requested but CUDA is not available on this machine "
                "(no NVIDIA GPU or a CPU-only torch build). Use --device auto or --device cpu."
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"Device '{name}' does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)."
            )
        return dev
    if name == "mps":
        if not _mps_available():
            raise DeviceError(
                "Device 'mps' was requested but Apple MPS is not available on this machine. "
                "Use --device auto or --device cpu."
            )
        return torch.device("mps")
    raise DeviceError(f"Unknown device '{name}'. Choose one of: {', '.join(DEVICE_CHOICES)}.")
