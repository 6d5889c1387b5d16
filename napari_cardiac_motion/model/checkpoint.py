"""Checkpoint files: architecture config + weights + metadata, saved atomically.

A checkpoint is a ``torch.save`` dict::

    {"format": "napari-cardiac-motion", "format_version": 1,
     "config": JointConfig.to_dict(), "state_dict": ..., "metadata": {"name", "version", ...}}

The metadata also says what the model segments (``modality``, ``classes``, ``geometry``; see
:mod:`..model_description`): :func:`save_checkpoint` fills in today's MR defaults when they are not given,
and :func:`load_checkpoint` does the same for checkpoints written before these keys existed.

It is loaded with ``weights_only=True`` (no arbitrary code runs when a file is opened).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write
from ..errors import CheckpointError
from ..model_description import describe, with_description
from .network import JointConfig, JointMotionSegNet

FORMAT = "napari-cardiac-motion"
FORMAT_VERSION = 1
DEFAULT_CHECKPOINT_NAME = "default.pt"


def default_checkpoint_path() -> Path:
    """Path of the model shipped inside the package."""
    return Path(str(resources.files("napari_cardiac_motion") / "checkpoints" / DEFAULT_CHECKPOINT_NAME))


def save_checkpoint(model: JointMotionSegNet, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically (temp file in the same folder, then rename).

    ``extra`` holds additional tensors/values (e.g. optimiser state for resuming training).
    ``metadata`` gets the model description keys (MR defaults for those missing); a class value the
    network cannot output raises ``ValueError``.
    """
    path = Path(path)
    metadata = with_description(metadata)
    top = describe(metadata).max_value
    if top >= model.config.num_classes:
        raise ValueError(f"the model description lists label value {top} but the network outputs "
                         f"{model.config.num_classes} classes (0–{model.config.num_classes - 1})")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    if extra:
        payload["extra"] = extra
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint dict (see module docstring); raise :class:`CheckpointError`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"Model checkpoint '{path}' does not exist. Choose an existing .pt file, or leave the model "
            "empty to use the shipped default model."
        )
    if path.is_dir() or path.stat().st_size == 0:
        raise CheckpointError(f"Model checkpoint '{path}' is empty or a folder; choose a .pt checkpoint file.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle of arbitrary objects, truncated file...
        raise CheckpointError(
            f"Model checkpoint '{path}' cannot be read ({type(exc).__name__}); the file is corrupt or not a "
            "napari-cardiac-motion checkpoint. Use the shipped default model or re-save the checkpoint."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"'{path}' is a torch file but not a napari-cardiac-motion checkpoint (no architecture config). "
            "Checkpoints are written by 'napari-cardiac-motion train' or 'finetune'."
        )
    if int(payload.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint '{path}' has format version {payload.get('format_version')}, newer than this plugin "
            f"understands ({FORMAT_VERSION}). Upgrade napari-cardiac-motion."
        )
    return payload


def load_checkpoint(path: str | os.PathLike | None = None, device: torch.device | str = "cpu"
                    ) -> tuple[JointMotionSegNet, dict[str, Any]]:
    """Build the network from a checkpoint (default: the shipped one); returns ``(model in eval mode, metadata)``.

    The metadata always holds the model description keys (see :mod:`..model_description`): a checkpoint
    without them is today's MR model.
    """
    path = default_checkpoint_path() if path is None or str(path) == "" else Path(path)
    payload = read_checkpoint(path)
    try:
        model = JointMotionSegNet(JointConfig.from_dict(payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:
        raise CheckpointError(
            f"Checkpoint '{path}' does not match the network architecture ({exc}). It may come from another "
            "version of the plugin; use the shipped default model."
        ) from None
    try:
        metadata = with_description(payload.get("metadata", {}))
        describe(metadata)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"Checkpoint '{path}' has an invalid model description ({exc}).") from None
    metadata.setdefault("name", path.stem)
    metadata["path"] = str(path)
    model.to(device).eval()
    return model, metadata


def _network(config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> JointMotionSegNet:
    """The network of a checkpoint's ``config`` holding ``state_dict``."""
    model = JointMotionSegNet(JointConfig.from_dict(config))
    model.load_state_dict(state_dict)
    return model


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a training checkpoint without its optimiser state (what ships in the package)."""
    payload = read_checkpoint(src)
    return save_checkpoint(_network(payload["config"], payload["state_dict"]), dst, payload.get("metadata", {}))


def average_checkpoints(srcs: list[str | os.PathLike], dst: str | os.PathLike,
                        metadata: dict[str, Any] | None = None) -> Path:
    """Write the weight average of checkpoints of one architecture (a "model soup", Wortsman et al. 2022).

    Every floating-point tensor (weights, biases, BatchNorm running statistics) is the mean over ``srcs``;
    integer buffers (BatchNorm's batch counters) come from the first. Meant for runs fine-tuned from one
    start (their weights lie in one basin); the average runs as fast as any one of them. ``metadata``
    defaults to the first checkpoint's, with ``averaged_from`` listing the sources. Raises
    :class:`CheckpointError` when fewer than two are given or their architectures differ.
    """
    if len(srcs) < 2:
        raise CheckpointError("Averaging needs at least two checkpoints.")
    payloads = [read_checkpoint(s) for s in srcs]
    first = payloads[0]
    for src, p in zip(srcs[1:], payloads[1:]):
        differ = sorted(k for k in set(p["config"]) | set(first["config"])
                        if p["config"].get(k) != first["config"].get(k))
        if differ or p["state_dict"].keys() != first["state_dict"].keys():
            what = f" (config {', '.join(differ)})" if differ else ""
            raise CheckpointError(f"'{src}' has another architecture than '{srcs[0]}'{what}; only checkpoints of "
                                  "one network (one config, pixel size included) can be averaged.")
    state = {}
    for k, v in first["state_dict"].items():
        state[k] = (torch.stack([p["state_dict"][k].double() for p in payloads]).mean(0).to(v.dtype)
                    if v.is_floating_point() else v.clone())
    meta = dict(first.get("metadata", {}) if metadata is None else metadata)
    meta["averaged_from"] = [str(s) for s in srcs]
    return save_checkpoint(_network(first["config"], state), dst, meta)
