"""Clinical read-out of the model vs ACDC expert labels (volumes, EF, LV mass): MAE and Bland–Altman bias.

For every validation patient (default: the 20 ACDC patients kept out of training, four per disease group:
001, 005, 011, 015, …, 091, 095) the ED and ES stacks form a two-frame cine (ED, ES) run through
``predict_cine`` with ``ed_frame=0``; the measures are computed by ``analysis.compute_measurements`` with
ED = frame 0 and ES = frame 1 from the model's labels (the slices counted by the clinical slice rules,
``analysis.slices``) and from the expert labels (every labelled slice: the experts drew only what they
count), with the true voxel spacing of ``../shared/data/acdc``. Printed: a per-patient table, then per
measure the mean absolute error, the bias (mean of model − expert), the SD of the differences and the
95 % limits of agreement, and the targets; then the same MAE with every labelled slice counted
(``SliceRules.none()``), to show what the slice rules change.

    python benchmarks/function_validation.py [--data ../shared/data/acdc] [--model CKPT] [--device cpu]
        [--patients 001 011 ...] [--tta] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_cardiac_motion.analysis import compute_measurements  # noqa: E402
from napari_cardiac_motion.cine import Cine  # noqa: E402
from napari_cardiac_motion.analysis.slices import SliceRules  # noqa: E402

#: the 20 validation patients (four per disease group) the issue keeps out of training
VALIDATION_PATIENTS = tuple(f"patient{n:03d}" for start in range(1, 100, 10) for n in (start, start + 4))

MEASURES = [("lv_edv_ml", "LV EDV", "ml"), ("lv_esv_ml", "LV ESV", "ml"), ("lv_ef_percent", "LV EF", "%"),
            ("lv_mass_g", "LV mass", "g"), ("rv_edv_ml", "RV EDV", "ml"), ("rv_esv_ml", "RV ESV", "ml"),
            ("rv_ef_percent", "RV EF", "%")]
#: targets of the read-out (mean absolute error)
TARGETS = {"lv_ef_percent": 3.5, "lv_edv_ml": 7.0, "lv_mass_g": 8.0, "rv_edv_ml": 8.0, "rv_ef_percent": 6.0}


def _read(path: Path):
    import nibabel as nib

    img = nib.load(str(path))
    arr = np.asanyarray(img.dataobj)
    zooms = img.header.get_zooms()[:3]
    return np.ascontiguousarray(arr.transpose(2, 1, 0)), (float(zooms[2]), float(zooms[1]), float(zooms[0])), img.affine


def run_patient(folder: Path, model, device: str, tta: bool | None = None) -> dict:
    import inspect

    from napari_cardiac_motion.inference import predict_cine

    ed, spacing, affine = _read(folder / "ED.nii.gz")
    es, _, _ = _read(folder / "ES.nii.gz")
    gt = np.stack([_read(folder / "ED_gt.nii.gz")[0], _read(folder / "ES_gt.nii.gz")[0]]).astype(np.uint8)
    info = json.loads((folder / "info.json").read_text()) if (folder / "info.json").exists() else {}
    cine = Cine(np.stack([ed, es]).astype(np.float32), spacing, 0.0, affine, folder.name)
    t0 = time.perf_counter()
    extra = {"tta": tta} if tta is not None and "tta" in inspect.signature(predict_cine).parameters else {}
    if tta and not extra:
        raise SystemExit("--tta: this predict_cine has no test-time augmentation")
    res = predict_cine(cine, model, device=device, ed_frame=0, **extra)
    sec = time.perf_counter() - t0
    kw = dict(ed_frame=0, es_frame=1, height_cm=info.get("height_cm"), weight_kg=info.get("weight_kg"), affine=affine)
    pred = compute_measurements(res.labels, spacing, motion=res.motion, motion_reference_frame=0, **kw)
    every = compute_measurements(res.labels, spacing, slice_rules=SliceRules.none(), **kw)
    ref = compute_measurements(gt, spacing, slice_rules=SliceRules.none(), **kw)
    out = {"patient": folder.name, "group": info.get("group"), "spacing_mm": spacing, "seconds": sec,
           "bsa_m2": ref["bsa_m2"],
           "info_spacing_matches_header": (None if "spacing_mm" not in info else
                                           bool(np.allclose(info["spacing_mm"], spacing[::-1], atol=1e-3)))}
    for key, _, _ in MEASURES:
        out[f"{key}_pred"], out[f"{key}_gt"], out[f"{key}_every"] = pred[key], ref[key], every[key]
    out["slices_not_counted"] = [d.to_dict() for d in pred.slices if not d.included]
    out["lv_edv_index_gt"] = ref["lv_edv_index_ml_m2"]
    out["lv_mass_index_gt"] = ref["lv_mass_index_g_m2"]
    out["peak_circumferential_strain_pred"] = pred["peak_circumferential_strain_percent"]
    out["peak_radial_strain_pred"] = pred["peak_radial_strain_percent"]
    return out


def summarise(rows: list[dict], pred: str = "pred") -> dict:
    """Per measure: n, MAE, bias, SD and limits of agreement of ``{key}_{pred}`` − ``{key}_gt``."""
    s = {}
    for key, _, _ in MEASURES:
        d = np.array([r[f"{key}_{pred}"] - r[f"{key}_gt"] for r in rows
                      if r[f"{key}_{pred}"] is not None and r[f"{key}_gt"] is not None
                      and np.isfinite(r[f"{key}_{pred}"]) and np.isfinite(r[f"{key}_gt"])], float)
        if d.size == 0:
            s[key] = {"n": 0}
            continue
        sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
        s[key] = {"n": int(d.size), "mae": float(np.abs(d).mean()), "bias": float(d.mean()), "sd": sd,
                  "loa_low": float(d.mean() - 1.96 * sd), "loa_high": float(d.mean() + 1.96 * sd)}
    return s


def main(argv: list[str] | None = None) -> int:
    import torch

    from napari_cardiac_motion.model.checkpoint import default_checkpoint_path, load_checkpoint

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "acdc"))
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--patients", nargs="*", default=None, help="patient numbers or folder names")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test-time augmentation on/off (default: inference's default, on for MR)")
    p.add_argument("--json", default=None, help="write every figure here")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    data = Path(args.data)
    names = [n if n.startswith("patient") else f"patient{int(n):03d}" for n in args.patients] if args.patients \
        else list(VALIDATION_PATIENTS)
    folders = [data / n for n in names if (data / n / "ED_gt.nii.gz").exists()]
    if not folders:
        print(f"no ACDC patients found under {data}", file=sys.stderr)
        return 2
    model, meta = load_checkpoint(args.model, device="cpu")
    model_path = args.model or str(default_checkpoint_path())
    print(f"model: {meta.get('name')} {meta.get('version')} ({model_path}); device {args.device}; "
          f"{len(folders)} patients{'; flip TTA ' + ('on' if args.tta else 'off') if args.tta is not None else ''}")
    rows = []
    hdr = f"{'patient':<11}{'grp':<5}" + "".join(f"{lab:>17}" for _, lab, _ in MEASURES)
    print(hdr + "\n" + " " * 16 + "".join(f"{'model / expert':>17}" for _ in MEASURES))
    for f in folders:
        r = run_patient(f, model, args.device, args.tta)
        rows.append(r)
        cells = "".join(f"{_fmt(r[f'{k}_pred']):>8} /{_fmt(r[f'{k}_gt']):>7}" for k, _, _ in MEASURES)
        print(f"{r['patient']:<11}{(r['group'] or ''):<5}{cells}", flush=True)
    s = summarise(rows)
    print("\nmodel − expert over", len(rows), "patients (Bland–Altman):")
    print(f"{'measure':<10}{'unit':<5}{'MAE':>8}{'bias':>8}{'SD':>8}{'95% limits of agreement':>28}{'target MAE':>12}")
    for key, lab, unit in MEASURES:
        v = s[key]
        if not v.get("n"):
            print(f"{lab:<10}{unit:<5}   (no values)")
            continue
        target = TARGETS.get(key)
        verdict = "" if target is None else f"≤ {target:g} {'met' if v['mae'] <= target else 'NOT met'}"
        loa = f"[{v['loa_low']:.1f}, {v['loa_high']:.1f}]"
        print(f"{lab:<10}{unit:<5}{v['mae']:8.1f}{v['bias']:8.1f}{v['sd']:8.1f}{loa:>28}{verdict:>14}")
    every = summarise(rows, "every")
    print("\nMAE (bias) with every labelled slice counted → with the slice rules (default):")
    for key, lab, unit in MEASURES:
        a, b = every[key], s[key]
        if a.get("n") and b.get("n"):
            print(f"{lab:<10}{unit:<5}{a['mae']:6.2f} ({a['bias']:+.2f}) → {b['mae']:6.2f} ({b['bias']:+.2f})")
    n_out = sum(len(r["slices_not_counted"]) for r in rows)
    print(f"{n_out} (frame, slice, structure) not counted by the rules over {len(rows)} patients")
    secs = [r["seconds"] for r in rows]
    print(f"\nprediction: {np.mean(secs):.1f} s per patient (ED+ES stack, {args.device})")
    mism = [r["patient"] for r in rows if r["info_spacing_matches_header"] is False]
    print("expert-label read-out (our code on the ACDC labels): LV EDV index "
          f"{np.mean([r['lv_edv_index_gt'] for r in rows if r['lv_edv_index_gt']]):.1f} ml/m², "
          f"LV EF {np.mean([r['lv_ef_percent_gt'] for r in rows]):.1f} % (mean); info.json spacing "
          + ("matches the headers for every patient" if not mism else f"differs for {', '.join(mism)}"))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": {**{k: meta.get(k) for k in ("name", "version")},
                                                         "path": model_path},
                                               "cases": rows, "summary": s, "summary_every_slice": every},
                                              indent=2, default=float))
    return 0


def _fmt(v) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:.1f}"


if __name__ == "__main__":
    sys.exit(main())
