"""Evaluate the joint model (and optionally the demons baseline) on ED/ES pairs with ground truth.

Layout: a folder of patient folders, or one patient folder, each holding ``ED.nii.gz``, ``ES.nii.gz``,
``ED_gt.nii.gz``, ``ES_gt.nii.gz`` (as ``../shared/data/acdc``). Each pair becomes a two-frame cine
``(T=2: ED, ES)`` run through :func:`inference.predict_cine` with ``ed_frame=0``.

Per patient: 3D Dice of LV / Myo / RV at ED and ES; HD95 in mm where the voxel spacing is known
(skipped — reported as null — where the header says 1×1×1 mm, as in the ACDC files here whose spacing
was lost); Dice of the ED ground truth propagated to ES through the predicted motion
(``label_ES(p) = label_ED(p + u_ES(p))``, nearest neighbour) against the ES ground truth; LV ejection
fraction from the predicted vs ground-truth blood pool; seconds per pair for the model (segmentation of
both frames + motion) and the baseline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..atomic import atomic_write_json
from ..conventions import STRUCTURE_KEYS
from ..errors import InputError
from .demons import warp_labels
from ..metrics import dice, ejection_fraction, hd95, volume

STRUCTS = [(c, k) for c, k in STRUCTURE_KEYS.items()]  # (1, LV), (2, Myo), (3, RV)


def find_pairs(data: str | Path, patients: list[str] | None = None) -> list[Path]:
    """Patient folders with ED/ES images and labels under ``data`` (or ``data`` itself)."""
    data = Path(data)
    need = ("ED.nii.gz", "ES.nii.gz", "ED_gt.nii.gz", "ES_gt.nii.gz")
    if not data.is_dir():
        raise InputError(f"--data '{data}' is not a folder. Give a folder of patient folders (each with "
                         "ED.nii.gz, ES.nii.gz, ED_gt.nii.gz, ES_gt.nii.gz) or one such patient folder.")
    if all((data / n).exists() for n in need):
        folders = [data]
    else:
        folders = sorted(p for p in data.iterdir() if p.is_dir() and all((p / n).exists() for n in need))
    if patients:
        wanted = set(patients)
        folders = [p for p in folders if p.name in wanted or p.name.removeprefix("patient") in wanted]
    if not folders:
        raise InputError(f"No ED/ES pairs found under '{data}'"
                         + (f" for patients {', '.join(patients)}" if patients else "")
                         + ": each patient folder needs ED.nii.gz, ES.nii.gz, ED_gt.nii.gz and ES_gt.nii.gz.")
    return folders


def _read(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """NIfTI (X, Y, Z) → ``(Z, Y, X)`` and spacing ``(dz, dy, dx)`` mm (the package's one NIfTI reader)."""
    from ..io.nifti import read_nifti_volume

    v = read_nifti_volume(path)
    return np.ascontiguousarray(v.data[0]), tuple(float(s) for s in v.spacing)  # type: ignore[return-value]


def _summary(values: list[float]) -> dict[str, float | None]:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std()), "n": int(v.size)}


def evaluate_pair(folder: Path, model, device: str = "auto", baseline: str | None = None,
                  transform: str | None = None, tta: bool | None = None, **motion_kw: Any) -> dict[str, Any]:
    """All metrics for one patient folder (see module docstring).

    ``transform`` re-samples image and labels first with truthful spacing (see
    :func:`.transforms.apply_transform`: ``scale:F`` pixels F× larger, ``offcentre:N`` padded into an
    N×N field with the heart off-centre) to test robustness to how a scan was acquired.
    """
    from ..cine import Cine
    from ..inference import predict_cine

    ed, spacing = _read(folder / "ED.nii.gz")
    es, _ = _read(folder / "ES.nii.gz")
    ed_gt = _read(folder / "ED_gt.nii.gz")[0].astype(np.uint8)
    es_gt = _read(folder / "ES_gt.nii.gz")[0].astype(np.uint8)
    if ed.shape != es.shape or ed.shape != ed_gt.shape or es.shape != es_gt.shape:
        raise InputError(f"{folder.name}: ED, ES and their labels must have the same shape.")
    image = np.stack([ed, es]).astype(np.float32)  # (T=2, Z, Y, X)
    gt = np.stack([ed_gt, es_gt])
    if transform:
        from .transforms import apply_transform

        image, gt, spacing = apply_transform(image, gt, spacing, transform, seed=int.from_bytes(folder.name.encode()[-2:], "big"))
        ed, es = image[0], image[1]
        ed_gt, es_gt = gt[0], gt[1]
    spacing_known = not np.allclose(spacing, 1.0)
    res = predict_cine(Cine(image, spacing, name=folder.name), model, device=device, ed_frame=0, tta=tta,
                       **motion_kw)
    pred_ed, pred_es = res.labels[0], res.labels[1]
    out: dict[str, Any] = {"patient": folder.name, "shape_ZYX": list(ed.shape), "transform": transform,
                           "region": res.metadata.get("region", {}).get("input_box_yx"),
                           "spacing_mm": list(spacing) if spacing_known else None,
                           "seconds_model": res.seconds}
    for c, k in STRUCTS:
        out[f"dice_ED_{k}"] = dice(pred_ed, ed_gt, c)
        out[f"dice_ES_{k}"] = dice(pred_es, es_gt, c)
        out[f"dice_{k}"] = 0.5 * (out[f"dice_ED_{k}"] + out[f"dice_ES_{k}"])
        if spacing_known:
            out[f"hd95_ED_{k}"] = hd95(pred_ed, ed_gt, spacing, c)
            out[f"hd95_ES_{k}"] = hd95(pred_es, es_gt, spacing, c)
    prop = warp_labels(ed_gt, res.motion[1])
    for c, k in STRUCTS:
        out[f"prop_{k}"] = dice(prop, es_gt, c)
    info = folder / "info.json"
    if info.exists():
        out["group"] = json.loads(info.read_text()).get("group")
    if spacing_known:  # global strain at ES relative to ED (%), from the model's own labels and motion
        from ..analysis.strain import strain_curves

        st = strain_curves(res.motion, res.labels, spacing, 0)
        out["gcs_ES"] = float(st.circumferential_percent[1])
        out["grs_ES"] = float(st.radial_percent[1])
    vs = spacing if spacing_known else None
    ef_pred = ejection_fraction(volume(pred_ed, 1, vs), volume(pred_es, 1, vs))
    ef_gt = ejection_fraction(volume(ed_gt, 1, vs), volume(es_gt, 1, vs))
    out.update({"ef_pred": ef_pred, "ef_gt": ef_gt, "ef_abs_error": abs(ef_pred - ef_gt)})
    if spacing_known:
        out["edv_ml_pred"] = volume(pred_ed, 1, vs) / 1000.0
        out["edv_ml_gt"] = volume(ed_gt, 1, vs) / 1000.0
    if baseline == "demons":
        from .demons import demons_propagate

        prop_d, _, sec = demons_propagate(ed, es, ed_gt)
        out["seconds_demons"] = sec
        for c, k in STRUCTS:
            out[f"demons_prop_{k}"] = dice(prop_d, es_gt, c)
    return out


def evaluate(data: str | Path, model_path: str | None = None, baseline: str | None = None,
             patients: list[str] | None = None, device: str = "auto",
             progress: Callable[[int, int, str], None] | None = None, transform: str | None = None,
             tta: bool | None = None, **motion_kw: Any) -> dict[str, Any]:
    """Evaluate every pair under ``data``; returns ``{"model", "cases", "summary"}``.

    ``tta``: flip test-time augmentation (``None``: the model's default, on for MR).

    ``motion_kw`` (``motion_mode``, ``refine``) go to :func:`~napari_cardiac_motion.inference.predict_cine`."""
    import torch

    from ..inference import tta_default
    from ..model import load_checkpoint
    from ..model_description import describe

    folders = find_pairs(data, patients)
    model, meta = load_checkpoint(model_path, device="cpu")
    cases = []
    for i, folder in enumerate(folders):
        cases.append(evaluate_pair(folder, model, device=device, baseline=baseline, transform=transform, tta=tta,
                                   **motion_kw))
        if progress:
            progress(i + 1, len(folders), folder.name)
    keys = [k for k in cases[0] if isinstance(cases[0][k], float)]
    for c in cases[1:]:
        keys += [k for k in c if isinstance(c[k], float) and k not in keys]
    summary = {k: _summary([c.get(k) for c in cases]) for k in keys}
    if baseline == "demons":
        ratio = summary["seconds_demons"]["mean"] / summary["seconds_model"]["mean"]
        summary["speedup_vs_demons"] = {"mean": ratio, "sd": None, "n": len(cases)}
    return {
        "data": str(data),
        "model": {k: meta.get(k) for k in ("name", "version", "provisional", "path")},
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "baseline": baseline,
        "transform": transform,
        "tta": tta_default(tta, describe(meta)),
        "hd95_note": "HD95 in mm only where the NIfTI spacing is known; files with 1×1×1 mm headers "
                     "(the ACDC copies here, whose spacing was lost) get no HD95.",
        "ef_note": "EF = (EDV-ESV)/EDV of the LV blood pool, a ratio (voxel counts when spacing is unknown).",
        "cases": cases,
        "summary": summary,
    }


def _fmt(s: dict | None, pct: bool = False) -> str:
    if not s or s.get("mean") is None:
        return "—"
    if pct:
        return f"{s['mean']:.3f} ± {s['sd']:.3f}"
    return f"{s['mean']:.2f} ± {s['sd']:.2f}"


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table (markdown-compatible) of the summary: model vs demons."""
    s = result["summary"]
    n = len(result["cases"])
    demons = result.get("baseline") == "demons"
    lines = [f"model {result['model'].get('name')} {result['model'].get('version')} on {n} ED/ES pair(s) "
             f"from {result['data']} (mean ± sd over patients)", ""]
    hdr = "| structure | Dice ED | Dice ES | Dice mean | propagated Dice (model) |"
    sep = "|---|---|---|---|---|"
    if demons:
        hdr += " propagated Dice (demons) |"
        sep += "---|"
    has_hd = any(f"hd95_ED_{k}" in s for _, k in STRUCTS)
    if has_hd:
        hdr += " HD95 ED mm | HD95 ES mm |"
        sep += "---|---|"
    lines += [hdr, sep]
    for _, k in STRUCTS:
        row = (f"| {k} | {_fmt(s.get(f'dice_ED_{k}'), True)} | {_fmt(s.get(f'dice_ES_{k}'), True)} | "
               f"{_fmt(s.get(f'dice_{k}'), True)} | {_fmt(s.get(f'prop_{k}'), True)} |")
        if demons:
            row += f" {_fmt(s.get(f'demons_prop_{k}'), True)} |"
        if has_hd:
            row += f" {_fmt(s.get(f'hd95_ED_{k}'))} | {_fmt(s.get(f'hd95_ES_{k}'))} |"
        lines.append(row)
    lines.append("")
    lines.append(f"LV ejection fraction: |EF_pred − EF_gt| = {_fmt(s.get('ef_abs_error'), True)} (ratio)")
    t = f"seconds per ED/ES pair: model {_fmt(s.get('seconds_model'))}"
    if demons:
        t += f", demons {_fmt(s.get('seconds_demons'))}; demons/model time ratio {s['speedup_vs_demons']['mean']:.1f}×"
    lines.append(t + f" (device {result['device']}, {result['torch_threads']} torch threads)")
    if not has_hd:
        lines.append("HD95: not reported (voxel spacing unknown for these files).")
    lines += format_groups(result["cases"], demons)
    return "\n".join(lines)


def format_groups(cases: list[dict[str, Any]], demons: bool = False) -> list[str]:
    """Per disease group (``info.json``'s ``group``): Dice, propagation (and demons') and ED→ES global
    circumferential / radial strain (%), means over the group's patients."""
    groups = sorted({c["group"] for c in cases if c.get("group")})
    if not groups:
        return []

    def m(rows, key, fmt=".3f"):
        v = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
        return f"{np.mean(v):{fmt}}" if v else "—"

    hdr = "| group | n | Dice LV | Dice Myo | Dice RV | prop LV | prop Myo | prop RV |"
    sep = "|---|---|---|---|---|---|---|---|"
    if demons:
        hdr += " demons LV | demons Myo | demons RV |"
        sep += "---|---|---|"
    hdr += " GCS ES % | GRS ES % |"
    sep += "---|---|"
    lines = ["", "Per group (means):", hdr, sep]
    for g in groups:
        rows = [c for c in cases if c.get("group") == g]
        line = f"| {g} | {len(rows)} | " + " | ".join(m(rows, f"dice_{k}") for _, k in STRUCTS) + " | "
        line += " | ".join(m(rows, f"prop_{k}") for _, k in STRUCTS) + " |"
        if demons:
            line += " " + " | ".join(m(rows, f"demons_prop_{k}") for _, k in STRUCTS) + " |"
        line += f" {m(rows, 'gcs_ES', '.1f')} | {m(rows, 'grs_ES', '.1f')} |"
        lines.append(line)
    return lines


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(o):
        if isinstance(o, float) and not np.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list):
            return [clean(v) for v in o]
        if isinstance(o, (np.floating, np.integer)):
            return clean(o.item())
        return o

    atomic_write_json(path, clean(result))
    return path
