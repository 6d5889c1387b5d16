"""Evaluate an echo model on CAMUS views (``evaluate --data ECHO --model echo``; no Qt, no napari).

Each view (:mod:`.echo_cases`) runs through the real predict path (:func:`..inference.predict_cine` with the
model's description, labels on the input grid, the echo clean-up; ED/ES chosen by the model as the largest /
smallest LV cavity) and is scored against CAMUS's manual labels:

* Dice per structure at the ED and ES frames of the manual labels (structures and their names from the model's
  description, matched to the CAMUS values by key: LV, Myo, LA);
* Dice on every labelled frame of the views whose whole half cycle is labelled (``_seq_gt``, full resolution);
* HD95 (mm) at ED and ES where the pixel size is known (full resolution; the 224×224 files have none);
* EF: single plane per view and biplane per patient with both views, from the predicted labels, against the
  CAMUS reference EF where the patient has one, and against the same read-out on the manual labels.

:func:`score_view` is shared with ``benchmarks/echo_benchmark.py`` (which adds the raw, un-cleaned labels).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..analysis.echo import EchoView, measure_echo
from ..errors import InputError
from ..metrics import dice, hd95
from ..model_description import ModelDescription
from .echo_cases import CAMUS_VALUES, EchoEvalView, echo_root, iter_echo_views


@dataclass(frozen=True)
class Structure:
    """A scored structure: short ``key``, display ``name`` (the model's), ``pred`` value (the model's label) and
    ``gt`` value (CAMUS's)."""

    key: str
    name: str
    pred: int
    gt: int


@dataclass
class EchoPrediction:
    """Predicted labels ``(T, Y, X)`` with the echo clean-up (``labels``) and without (``raw``), motion
    ``(T, Y, X, 2)`` (pull, frame t → ED, pixels), the model's ED/ES frames and seconds."""

    labels: np.ndarray
    raw: np.ndarray
    motion: np.ndarray
    ed: int
    es: int
    seconds: float


def structures(description: ModelDescription) -> list[Structure]:
    """The model's classes that CAMUS labels (by key), in the model's order; raises when there is none."""
    out = [Structure(c.key, c.name, c.value, CAMUS_VALUES[c.key]) for c in description.classes if c.key in CAMUS_VALUES]
    if not out:
        raise InputError(f"The model's classes ({', '.join(c.name for c in description.classes)}) include none of "
                         "the CAMUS structures (keys LV, Myo, LA); an echo evaluation needs an echo model.")
    return out


def _value(description: ModelDescription, key: str, default: int) -> int:
    v = description.value_of(key)
    return default if v is None else v


def predict_view(view: EchoEvalView, model, description: ModelDescription, device: str = "cpu",
                 tta: bool | None = None, **predict_kwargs: Any) -> EchoPrediction:
    """Run the predict path on one view (its own pixel size; a placeholder 1.0 when unknown);
    ``predict_kwargs`` (``motion_mode``, ``refine``, ``fuse``) go to :func:`..inference.predict_cine`."""
    from ..cine import Cine
    from ..inference import predict_cine
    from ..postprocess import clean_echo_labels

    cine = Cine(view.image[:, None].astype(np.float32), spacing=(1.0, *view.spacing), name=view.name,
                spacing_known=view.spacing_known, modality="US")
    r = predict_cine(cine, model, device=device, description=description, largest_component=False, tta=tta,
                     **predict_kwargs)
    lv, myo = _value(description, "LV", 1), _value(description, "Myo", 2)
    la = description.value_of("LA")
    clean = clean_echo_labels(r.labels, lv, myo, others=(myo,) if la is None else (myo, la))[:, 0]
    area = np.array([(f == lv).sum() for f in clean])  # ED/ES as the shipped path picks them (after clean-up)
    return EchoPrediction(clean, r.labels[:, 0], r.motion[:, 0], int(np.argmax(area)), int(np.argmin(area)), r.seconds)


def _dice_rows(row: dict[str, Any], tag: str, labels: np.ndarray, view: EchoEvalView,
               structs: list[Structure]) -> None:
    for phase, idx, gt in (("ED", view.ed, view.gt_ed), ("ES", view.es, view.gt_es)):
        for s in structs:
            row[f"{tag}dice_{phase}_{s.key}"] = dice(labels[idx] == s.pred, gt == s.gt)


def _ef_rows(row: dict[str, Any], view: EchoEvalView, pred: EchoPrediction, description: ModelDescription) -> None:
    """Single-plane EF (%) from the predicted and the manual labels, and GLS (%) from the motion."""
    from ..analysis.echo_strain import gls_readout

    keys = {k: _value(description, key, d) for k, key, d in (("lv", "LV", 1), ("myo", "Myo", 2), ("la", "LA", 3))}
    row["_pred_view"] = EchoView(view.view, pred.labels, view.spacing, pred.ed, pred.es, view.spacing_known)
    row["_gt_view"] = EchoView(view.view, np.stack([view.gt_ed, view.gt_es]), view.spacing, 0, 1, view.spacing_known)
    row["_keys"] = keys
    try:
        row["ef_single"] = measure_echo(a4c=row["_pred_view"], **keys)["lv_ef_percent"]
        row["ef_single_manual"] = measure_echo(a4c=row["_gt_view"])["lv_ef_percent"]
        row["gls"] = gls_readout(pred.labels, pred.motion, view.spacing, pred.es, pred.ed, **keys)["gls_percent"]
    except InputError as exc:  # no LV cavity in a frame, no border to track
        row["error"] = str(exc)


def score_view(view: EchoEvalView, pred: EchoPrediction, description: ModelDescription,
               raw: bool = False) -> dict[str, Any]:
    """The figures of one view (module docstring) as a row; ``raw`` adds ``raw_dice_*`` of the un-cleaned
    labels. Keys starting with ``_`` hold objects for :func:`biplane_rows` (not JSON)."""
    structs = structures(description)
    row: dict[str, Any] = {"name": view.name, "source": view.source, "patient": view.patient, "view": view.view,
                           "val": view.val, "n_frames": int(view.image.shape[0]), "ed_frame": view.ed,
                           "es_frame": view.es, "pred_ed_frame": pred.ed, "pred_es_frame": pred.es,
                           "spacing_mm": list(view.spacing) if view.spacing_known else None,
                           "seconds_model": pred.seconds, "ref_ef": view.ref_ef}
    _dice_rows(row, "", pred.labels, view, structs)
    if raw:
        _dice_rows(row, "raw_", pred.raw, view, structs)
    if view.spacing_known:
        for phase, idx, gt in (("ED", view.ed, view.gt_ed), ("ES", view.es, view.gt_es)):
            for s in structs:
                row[f"hd95_{phase}_{s.key}"] = hd95(pred.labels[idx] == s.pred, gt == s.gt, view.spacing)
    if view.gt_seq is not None:
        row["seq_dice"] = {s.key: [dice(p == s.pred, g == s.gt) for p, g in zip(pred.labels, view.gt_seq)]
                           for s in structs}
    _ef_rows(row, view, pred, description)
    return row


def biplane_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per patient with both views: biplane EF (%) from the predicted and from the manual labels, the
    reference EF and the absolute errors (points)."""
    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        if "_pred_view" in r:
            by.setdefault(r["patient"], {})[r["view"]] = r
    out = []
    for pid, views in sorted(by.items()):
        if set(views) != {"2CH", "4CH"}:
            continue
        a2c, a4c = views["2CH"], views["4CH"]
        try:
            ef = measure_echo(a2c=a2c["_pred_view"], a4c=a4c["_pred_view"], **a2c["_keys"])["lv_ef_percent"]
            ef_gt = measure_echo(a2c=a2c["_gt_view"], a4c=a4c["_gt_view"])["lv_ef_percent"]
        except InputError:
            continue
        ref = a2c["ref_ef"]
        out.append({"patient": pid, "source": a2c["source"], "val": a2c["val"], "ef": ef, "ef_manual": ef_gt,
                    "ref_ef": ref, "ef_abs_error": None if ref is None or ef is None else abs(ef - ref),
                    "ef_abs_error_manual": None if ef is None or ef_gt is None else abs(ef - ef_gt)})
    return out


def stats(values) -> dict[str, float | None]:
    """``{"mean", "sd", "min", "n"}`` of the finite values (None when there is none)."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": None, "sd": None, "min": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std()), "min": float(v.min()), "n": int(v.size)}


def summarise(cases: list[dict[str, Any]], patients: list[dict[str, Any]], structs: list[Structure]) -> dict[str, Any]:
    """Means over views (Dice, HD95, seconds), over labelled frames (``seq_dice_*``) and EF errors (points)."""
    keys = [k for c in cases for k, v in c.items() if isinstance(v, float) and not k.startswith("_")]
    out: dict[str, Any] = {k: stats([c.get(k) for c in cases]) for k in dict.fromkeys(keys)}
    for s in structs:
        out[f"seq_dice_{s.key}"] = stats([d for c in cases for d in c.get("seq_dice", {}).get(s.key, [])])
    single = [abs(c["ef_single"] - c["ref_ef"]) for c in cases
              if c.get("ef_single") is not None and c["ref_ef"] is not None]
    out["ef_single_abs_error"] = stats(single)
    out["ef_single_abs_error_manual"] = stats([abs(c["ef_single"] - c["ef_single_manual"]) for c in cases
                                               if c.get("ef_single") is not None and c.get("ef_single_manual") is not None])
    out["ef_biplane_abs_error"] = stats([p["ef_abs_error"] for p in patients])
    out["ef_biplane_abs_error_manual"] = stats([p["ef_abs_error_manual"] for p in patients])
    return out


def evaluate_echo(data: str | Path, model, meta: dict[str, Any], description: ModelDescription, split: str = "val",
                  patients: list[str] | None = None, limit: int | None = None, device: str = "cpu",
                  progress: Callable[[int, int, str], None] | None = None, tta: bool | None = None,
                  **predict_kwargs: Any) -> dict[str, Any]:
    """Evaluate ``model`` on the CAMUS views of ``split`` under ``data``; returns ``{"model", "cases",
    "patients", "summary", ...}`` (JSON-ready once :func:`.evaluate.write_json` drops NaN)."""
    import torch

    root = echo_root(data)
    if root is None:
        raise InputError(f"No CAMUS echo data (camus_fullres/ or camus_edes224/index.json) under '{data}'.")
    structs = structures(description)
    views = list(iter_echo_views(root, split, patients, limit))
    if not views:
        raise InputError(f"No {split} views under '{root}'" + (f" for patients {', '.join(patients)}" if patients
                                                                else "") + ".")
    cases = []
    for i, view in enumerate(views):
        cases.append(score_view(view, predict_view(view, model, description, device, tta, **predict_kwargs),
                                description))
        if progress:
            progress(i + 1, len(views), view.name)
    bi = biplane_rows(cases)
    return {
        "data": str(root), "kind": "echo", "split": split,
        "model": {k: meta.get(k) for k in ("name", "version", "provisional", "path")} | {"modality": description.modality},
        "structures": [{"key": s.key, "name": s.name, "value": s.pred} for s in structs],
        "device": device, "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "tta": bool(tta), "fuse": predict_kwargs.get("fuse"),
        "hd95_note": "HD95 in mm on the full-resolution views only (the 224x224 files have no pixel size).",
        "ef_note": ("EF in % from the predicted labels (ED/ES: largest/smallest LV cavity); biplane Simpson per patient "
                    "with both views; errors in points against the CAMUS reference EF (full-resolution patients) and "
                    "against the same read-out on the manual ED/ES labels."),
        "cases": [{k: v for k, v in c.items() if not k.startswith("_")} for c in cases],
        "patients": bi,
        "summary": summarise(cases, bi, structs),
    }
