"""Which cases a training run learns from and is validated on (no Qt).

``dataset="mr"`` (default): ACDC ED/ES pairs minus the 20 validation patients, plus the Sunnybrook cines
(whole cycles) minus their validation cines. ``dataset="echo"``: CAMUS apical views (:mod:`.echo_data`):
every view's ED/ES pair, and the full-resolution ED→ES half cycles as cine sequences (half cycles: the
closed temporal term does not apply). Either way :func:`load_cases` returns
``(pairs, cines, validation)`` lists of :class:`~.data.Case`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..model_description import MR_DEFAULT, ModelDescription
from .data import (ACDC_LICENCE, ACDC_VAL_PATIENTS, SUNNYBROOK_LICENCE, SUNNYBROOK_VAL_PATIENTS, Case, load_acdc,
                   load_sunnybrook)
from .echo_data import CAMUS_LICENCE, ECHO_VAL_FULLRES, EDES224_VAL_EVERY, load_echo

if TYPE_CHECKING:  # pragma: no cover
    from .train import TrainConfig

DATASETS = ("mr", "echo")
#: pixel size (mm) of echo models: CAMUS full-resolution clips (0.308 mm) re-sampled to about the scale of
#: its 224×224 files (about 1 mm per pixel for a 15–20 cm sector)
ECHO_PIXEL_MM = 1.0


def description_for(dataset: str) -> ModelDescription:
    """What a model trained on ``dataset`` segments (class names, colours, geometry)."""
    if dataset == "echo":
        from ..model_description import ECHO_DEFAULT

        return ECHO_DEFAULT
    return MR_DEFAULT


def load_cases(cfg: "TrainConfig", pixel_mm: float | None) -> tuple[list[Case], list[Case], list[Case]]:
    """``(pairs, cines, validation)`` of ``cfg.dataset`` under ``cfg.data``, re-sampled to ``pixel_mm``."""
    if cfg.dataset not in DATASETS:
        raise InputError(f"Unknown dataset '{cfg.dataset}'; use one of {', '.join(DATASETS)}.")
    root = Path(cfg.data)
    if cfg.dataset == "echo":
        return _load_echo(cfg, root, pixel_mm)
    acdc_root = root / "acdc" if (root / "acdc").is_dir() else root
    sunny_root = root / "sunnybrook"
    pairs = load_acdc(acdc_root, exclude=ACDC_VAL_PATIENTS, limit=cfg.acdc_limit, pixel_mm=pixel_mm)
    val = load_acdc(acdc_root, names=list(ACDC_VAL_PATIENTS), pixel_mm=pixel_mm) if cfg.validate else []
    cines = load_sunnybrook(sunny_root, exclude=SUNNYBROOK_VAL_PATIENTS, pixel_mm=pixel_mm) \
        if cfg.use_sunnybrook and sunny_root.is_dir() else []
    if not pairs:
        raise InputError(f"No ACDC-like training patients (folders with ED.nii.gz and ED_gt.nii.gz) under "
                         f"'{cfg.data}'. Point --data at the shared data folder or an ACDC-like folder.")
    return pairs, cines, val[:cfg.val_limit] if cfg.val_limit is not None else val


def _load_echo(cfg: "TrainConfig", root: Path, pixel_mm: float | None) -> tuple[list[Case], list[Case], list[Case]]:
    echo_root = root / "echo" if (root / "echo").is_dir() else root
    if not ((echo_root / "camus_fullres").is_dir() or (echo_root / "camus_edes224").is_dir()):
        raise InputError(f"No CAMUS data (camus_fullres/ or camus_edes224/) under '{echo_root}'. Point --data at "
                         "the shared data folder or its echo/ folder.")
    pairs = load_echo(echo_root, "train", pixel_mm=pixel_mm, limit=cfg.acdc_limit)
    val = load_echo(echo_root, "val", pixel_mm=pixel_mm) if cfg.validate else []
    cines = [c for c in pairs if c.n_frames > 2]
    if not pairs:
        raise InputError(f"No CAMUS training views under '{echo_root}'.")
    return pairs, cines, val[:cfg.val_limit] if cfg.val_limit is not None else val


def data_metadata(pairs: list[Case], cines: list[Case], val: list[Case]) -> dict[str, Any]:
    """The ``training_data`` and ``validation_split`` entries of a checkpoint's metadata."""
    licences = {"acdc": ("ACDC", ACDC_LICENCE), "sunnybrook": ("Sunnybrook", SUNNYBROOK_LICENCE),
                "camus": ("CAMUS", CAMUS_LICENCE), "camus224": ("CAMUS (224x224)", CAMUS_LICENCE)}
    data: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for c in pairs + cines:
        if c.name in seen:
            continue
        seen.add(c.name)
        name, licence = licences.get(c.source, (c.source, ""))
        data.setdefault(name, {"dataset": name, "patients": [], "licence": licence})["patients"].append(c.name)
    split: dict[str, Any] = {"used_for_scores": [c.name for c in val]}
    if any(c.source == "acdc" for c in pairs):
        split.update({"acdc": list(ACDC_VAL_PATIENTS), "sunnybrook": list(SUNNYBROOK_VAL_PATIENTS)})
    if any(c.source in ("camus", "camus224") for c in pairs):  # recorded also when validation was skipped
        split["camus"] = (f"camus_fullres {', '.join(ECHO_VAL_FULLRES)} and every {EDES224_VAL_EVERY}th "
                          "camus_edes224 patient (training.echo_data.echo_split)")
    return {"training_data": list(data.values()), "validation_split": split}
