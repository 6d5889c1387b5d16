"""Models for the front-ends (no Qt, no napari): loading and caching a checkpoint (:func:`private_model`),
the shipped models by name (:func:`resolve_model`: ``"default"``, the MR model, and ``"echo"``, the
echocardiography model), the metadata of a fine-tuned model (:func:`finetuned_metadata`) and the per-user
folder of fine-tuned models.

Location: ``platformdirs.user_data_dir("napari-cardiac-motion")/models``, or
``$NAPARI_CARDIAC_MOTION_HOME/models`` when that environment variable is set (tests, shared installs).

Every fine-tuned model is written atomically (:func:`~napari_cardiac_motion.model.checkpoint.save_checkpoint`)
under a new, unique name with metadata: parent model, source image name, corrected slices, steps,
losses, date, and what the model segments (its parent's description, see
:mod:`~napari_cardiac_motion.model_description`). The shipped default checkpoint is never overwritten.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import re
import threading
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .model_description import ModelDescription, with_description
from .model.checkpoint import default_checkpoint_path, load_checkpoint, read_checkpoint, save_checkpoint
from .model.network import JointMotionSegNet

APP_NAME = "napari-cardiac-motion"
HOME_ENV = "NAPARI_CARDIAC_MOTION_HOME"

#: the models shipped in the package's ``checkpoints`` folder, by the name the front-ends use
SHIPPED_MODELS: dict[str, str] = {"default": "default.pt", "echo": "echo.pt"}


def shipped_model_path(name: str) -> Path:
    """The file of the shipped model ``name`` (:data:`SHIPPED_MODELS`); it may be absent (see :func:`resolve_model`)."""
    return default_checkpoint_path().with_name(SHIPPED_MODELS[name])


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The checkpoint file of ``model``: ``None``, ``""`` or ``"default"`` = the shipped MR model, ``"echo"`` =
    the shipped echo model, anything else a path. A missing shipped model raises :class:`CheckpointError`."""
    key = "" if model is None else str(model)
    if key in ("", "default"):
        return default_checkpoint_path()
    if key in SHIPPED_MODELS:
        path = shipped_model_path(key)
        if not path.exists():
            raise CheckpointError(f"The shipped {key} model is not installed ({path} is missing); reinstall "
                                  f"napari-cardiac-motion or pass --model with a checkpoint file.")
        return path
    return Path(key)


def model_argument(model: str | os.PathLike | None) -> Path:
    """:func:`resolve_model` for a front-end's ``--model``: an existing checkpoint file, else a one-line
    :class:`CheckpointError` naming the shipped models (``default``, ``echo``) for an unknown name."""
    path = resolve_model(model)
    if not path.exists() and str(model or "default") not in SHIPPED_MODELS:  # a missing shipped file: the loader says so
        names = ", ".join(f"'{n}'" for n in SHIPPED_MODELS)
        raise CheckpointError(f"Unknown model '{model}': not a shipped model ({names}), and the checkpoint file "
                              f"{path} does not exist; give one of those names or an existing .pt file.")
    return path


def load_model(model: str | os.PathLike | None, device: str = "cpu") -> tuple[JointMotionSegNet, dict[str, Any]]:
    """``(model in eval mode, metadata)`` of a shipped model name or a checkpoint path (:func:`model_argument`);
    uncached (the CLI loads once)."""
    return load_checkpoint(model_argument(model), device=device)


_MODEL_CACHE: dict[tuple, tuple[JointMotionSegNet, dict]] = {}
_MODEL_LOCK = threading.Lock()


def cached_model(path: str | os.PathLike | None) -> tuple[JointMotionSegNet, dict[str, Any]]:
    """Load (and cache by path + mtime + size; one model at a time) a checkpoint; ``None`` = the shipped
    default, ``"echo"`` the shipped echo model (:func:`resolve_model`). The cached model is shared: callers
    that move, train or switch it use :func:`private_model`."""
    p = resolve_model(path)
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None  # load_checkpoint raises the user-facing error
    if key is not None and key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    model, meta = load_checkpoint(p)
    if key is not None:
        _MODEL_CACHE.clear()  # keep one model in memory
        _MODEL_CACHE[key] = (model, meta)
    return model, meta


def private_model(path: str | os.PathLike | None) -> tuple[JointMotionSegNet, dict[str, Any]]:
    """``(a private deep copy of the model at path, its metadata)`` — the cached model is never handed out
    (thread-safe: jobs call it from worker threads)."""
    with _MODEL_LOCK:
        model, meta = cached_model(path)
        return copy.deepcopy(model), dict(meta)


def models_dir(create: bool = True) -> Path:
    """The folder holding the user's fine-tuned models."""
    home = os.environ.get(HOME_ENV)
    if home:
        root = Path(home).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    folder = root / "models"
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-.")
    return s[:60] or "model"


def _is_default(path: Path) -> bool:
    try:
        return path.resolve() == default_checkpoint_path().resolve()
    except OSError:
        return False


def finetuned_metadata(parent: dict[str, Any], source_image: str, history: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a model fine-tuned from ``parent`` (its checkpoint metadata) on ``source_image``,
    from :func:`~napari_cardiac_motion.training.finetune.finetune`'s ``history``: parent, source image,
    corrected slices ``[[t, z]]``, ED frame, steps, learning rate, guard, losses per step, seconds (s),
    the held-out ``check`` report and ``kept_original``. One recipe for the CLI and the panels."""
    return {
        "parent": parent.get("path") or parent.get("name"),
        "parent_name": parent.get("name"),
        "source_image": source_image,
        "corrected_slices": history.get("corrected"),
        "ed_frame": history.get("ed_frame"),
        "steps": history.get("steps"),
        "lr": history.get("lr"),
        "guard": history.get("guard"),
        "losses": history.get("losses"),
        "seconds": round(float(history.get("seconds", 0.0)), 2),
        "version": parent.get("version"),
        "check": history.get("check"),
        "kept_original": bool(history.get("kept_original", False)),
    }


def save_finetuned(model: JointMotionSegNet, metadata: dict[str, Any], name: str | None = None,
                   folder: str | os.PathLike | None = None, description: ModelDescription | None = None) -> Path:
    """Save ``model`` in the model folder under a new name; returns the path.

    ``metadata`` should hold ``parent`` (model name/path), ``source_image``, ``corrected_slices``,
    ``steps`` and ``losses``; ``date``, ``name`` and ``kind = "finetuned"`` are added, and the model
    description keys from ``description`` (the parent's; MR defaults when ``None``) unless present.
    """
    now = _dt.datetime.now().astimezone()
    folder = Path(folder) if folder is not None else models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stem = _slug(name or f"{metadata.get('source_image') or 'cine'}-finetuned-{now:%Y%m%d-%H%M%S}")
    path = folder / f"{stem}.pt"
    k = 2
    while path.exists() or _is_default(path):
        path = folder / f"{stem}-{k}.pt"
        k += 1
    meta = with_description(metadata, description)
    meta.setdefault("date", now.isoformat(timespec="seconds"))
    meta["name"] = path.stem
    meta.setdefault("kind", "finetuned")
    return save_checkpoint(model, path, metadata=meta)


def save_model_to(model: JointMotionSegNet, path: str | os.PathLike, metadata: dict[str, Any],
                  description: ModelDescription | None = None) -> Path:
    """Save to an explicit path (CLI ``--out``); refuses to overwrite the shipped default model.

    The model description keys come from ``description`` (the parent's; MR defaults when ``None``)
    unless ``metadata`` has them.
    """
    path = Path(path)
    if _is_default(path):
        raise CheckpointError(
            f"Refusing to overwrite the shipped default model {path}; choose another --out file."
        )
    meta = with_description(metadata, description)
    meta.setdefault("date", _dt.datetime.now().astimezone().isoformat(timespec="seconds"))
    meta.setdefault("name", path.stem)
    meta.setdefault("kind", "finetuned")
    return save_checkpoint(model, path, metadata=meta)


def list_models(folder: str | os.PathLike | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """``(path, metadata)`` of every readable checkpoint in the model folder, newest first."""
    folder = Path(folder) if folder is not None else models_dir(create=False)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.glob("*.pt"):
        try:
            meta = dict(read_checkpoint(p).get("metadata", {}))
        except CheckpointError:
            continue
        meta.setdefault("name", p.stem)
        out.append((p, meta))
    out.sort(key=lambda pm: (str(pm[1].get("date", "")), pm[0].name), reverse=True)
    return out


def delete_model(path: str | os.PathLike, folder: str | os.PathLike | None = None) -> None:
    """Delete a fine-tuned model from the model folder.

    Refuses (:class:`CheckpointError`) the shipped default and any file outside the model folder.
    """
    p = Path(path)
    root = Path(folder) if folder is not None else models_dir(create=False)
    try:
        inside = p.resolve().parent == root.resolve()
    except OSError:
        inside = False
    if _is_default(p) or not inside or p.suffix != ".pt":
        raise CheckpointError(f"{p.name} is not one of your saved models (in {root}); it was not deleted.")
    try:
        p.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CheckpointError(f"Could not delete {p.name}: {exc.strerror or exc}.") from None
