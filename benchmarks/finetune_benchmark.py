"""Does fine-tuning from one corrected frame help the frames nobody corrected, and never hurt?

For each held-out cine the ED frame's ground truth is the only "correction"; the model is fine-tuned
with :func:`napari_cardiac_motion.training.finetune.finetune` (held-out check on: see its docstring)
and the ES segmentation of :func:`~napari_cardiac_motion.inference.predict_cine` (ED given; the ES
labels are never shown to fine-tuning) is scored before and after (3D Dice per structure, one Dice:
:func:`napari_cardiac_motion.metrics.dice`). Per case it prints ES Dice before/after for
LV/Myo/RV, the worst drop, the mean gain, which model the check kept (α: 0 = the starting model,
1 = fine-tuned, between = blend) and the seconds fine-tuning took (wall, and CPU seconds of this
process: with ``--threads 1`` the CPU seconds are what the wall time would be on a quiet core).

Cases (``--data``, default ``../shared/data``):

* ACDC validation patients (:data:`training.data.ACDC_VAL_PATIENTS`): 2-frame cines ``[ED, ES]`` with the
  true spacing; Dice LV, Myo, RV at ES.
* Sunnybrook SC-HF-I-4 and SC-HF-I-5 (held out of training): full 20-frame cines (the timing target).
  The ED frame is the one with epicardial contours in ``info.json``, ES the other contoured frame. At
  ED the ground truth has LV blood pool and myocardium on the contoured slices (other slices stay
  unlabelled = 255); it has no RV, so voxels the model predicts as RV where the ground truth says
  background are left unlabelled rather than taught as background. At ES only the LV blood pool is
  contoured: Dice LV on the ES-contoured slices.

Protocols (``--protocol``):

* ``ed-frame`` (default): the ED frame's ground truth is the only correction (above).
* ``worst-es``: the annotator's protocol of the review loop: the expert labels of the two ES slices the
  starting model segmented worst (lowest mean Dice over the structures present) are the only corrections
  (255 everywhere else); ES Dice is scored on the OTHER slices (never shown), and ED Dice on every slice
  (the frame nobody touched). ACDC only. ``--hardest N`` keeps the N cases whose starting ES Dice is
  lowest (the issue's "10 hardest validation cases").

Usage::

    python benchmarks/finetune_benchmark.py [--cases acdc,sunnybrook] [--threads 1] [--steps N] \\
        [--protocol ed-frame|worst-es] [--hardest N] [--set FIELD=VALUE ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_cardiac_motion.cine import Cine  # noqa: E402
from napari_cardiac_motion.conventions import RV_BLOOD_POOL, STRUCTURE_KEYS, UNLABELLED  # noqa: E402
from napari_cardiac_motion.metrics import dice  # noqa: E402
from napari_cardiac_motion.inference import predict_cine  # noqa: E402
from napari_cardiac_motion.io import read_nifti, read_nifti_labels  # noqa: E402
from napari_cardiac_motion.model import load_checkpoint  # noqa: E402
from napari_cardiac_motion.training.data import ACDC_VAL_PATIENTS, SUNNYBROOK_VAL_PATIENTS  # noqa: E402
from napari_cardiac_motion.training.finetune import FinetuneSettings, finetune  # noqa: E402


def load_sunnybrook(data: Path, name: str) -> dict:
    folder = data / "sunnybrook" / name
    info = json.loads((folder / "info.json").read_text())
    cine = read_nifti(folder / "sa.nii.gz")
    gt = read_nifti_labels(folder / "labels.nii.gz")
    epi = {int(k): [int(z) for z in v] for k, v in info["epi_contour_frames"].items()}
    endo = {int(k): [int(z) for z in v] for k, v in info["endo_contour_frames"].items()}
    ed = next(iter(epi))  # the frame with epicardial contours is ED
    es = next(f for f in endo if f != ed)
    return {"name": name, "cine": cine, "gt": gt, "ed": ed, "es": es,
            "ed_slices": sorted(set(epi[ed]) & set(endo[ed])), "es_slices": endo[es],
            "structures": (1,), "no_rv": True}


def load_acdc(data: Path, name: str) -> dict:
    folder = data / "acdc" / name
    ed_img, es_img = read_nifti(folder / "ED.nii.gz"), read_nifti(folder / "ES.nii.gz")
    arr = np.concatenate([ed_img.data, es_img.data], 0)  # (2, Z, Y, X)
    gt = np.concatenate([read_nifti_labels(folder / "ED_gt.nii.gz"), read_nifti_labels(folder / "ES_gt.nii.gz")], 0)
    cine = Cine(data=arr, spacing=ed_img.spacing, affine=ed_img.affine, name=name)
    z = list(range(arr.shape[1]))
    return {"name": name, "cine": cine, "gt": gt, "ed": 0, "es": 1, "ed_slices": z, "es_slices": z,
            "structures": (1, 2, 3), "no_rv": False}


def corrections_for(case: dict, pred_ed: np.ndarray) -> np.ndarray:
    """The ED ground truth on its contoured slices; everything else 255 (see module docstring)."""
    corr = np.full(case["gt"].shape, UNLABELLED, np.uint8)
    ed = case["ed"]
    for z in case["ed_slices"]:
        sl = case["gt"][ed, z].copy()
        if case["no_rv"]:
            sl[(sl == 0) & (pred_ed[z] == RV_BLOOD_POOL)] = UNLABELLED
        corr[ed, z] = sl
    return corr


def es_dice(case: dict, labels_es: np.ndarray) -> dict[str, float]:
    zs = case["es_slices"]
    gt, pr = case["gt"][case["es"]][zs], labels_es[zs]
    return {STRUCTURE_KEYS[c]: dice(pr, gt, c) for c in case["structures"]}


def frame_dice(case: dict, labels: np.ndarray, frame: int, slices: list[int]) -> dict[str, float]:
    """Dice per structure of ``labels`` (one frame, ``(Z, Y, X)``) against the ground truth of ``frame``
    on ``slices``."""
    gt, pr = case["gt"][frame][slices], labels[slices]
    return {STRUCTURE_KEYS[c]: dice(pr, gt, c) for c in case["structures"]}


def worst_slices(case: dict, labels_es: np.ndarray, n: int = 2) -> list[int]:
    """The ``n`` ES slices the prediction gets most wrong: lowest mean Dice over the structures present
    in the ground truth or the prediction there (a slice with nothing in either is never chosen)."""
    gt = case["gt"][case["es"]]
    scores = []
    for z in range(gt.shape[0]):
        ds = [dice(labels_es[z], gt[z], c) for c in case["structures"]
              if (gt[z] == c).any() or (labels_es[z] == c).any()]
        if ds:
            scores.append((float(np.mean(ds)), z))
    return [z for _, z in sorted(scores)[:n]]


def worst_es_corrections(case: dict, zs: list[int]) -> np.ndarray:
    """The expert ES labels on slices ``zs``; everything else unlabelled (255)."""
    corr = np.full(case["gt"].shape, UNLABELLED, np.uint8)
    for z in zs:
        corr[case["es"], z] = case["gt"][case["es"], z]
    return corr


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_case(case: dict, model, settings: FinetuneSettings) -> dict:
    cine = case["cine"]
    res = predict_cine(cine, model, device="cpu", ed_frame=case["ed"])
    before = es_dice(case, res.labels[case["es"]])
    corr = corrections_for(case, res.labels[case["ed"]])
    t0, c0 = time.perf_counter(), _cpu_seconds()
    new, hist = finetune(model, cine, corr, ed_frame=case["ed"], settings=settings, device="cpu")
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    after = es_dice(case, predict_cine(cine, new, device="cpu", ed_frame=case["ed"]).labels[case["es"]])
    check = hist["check"] or {}
    return {"case": case["name"], "shape_TZYX": list(cine.shape), "before": before, "after": after,
            "kept": check.get("kept", 1.0), "check": check, "seconds": seconds, "cpu_seconds": cpu,
            "seconds_parts": hist.get("seconds_parts"),
            "loss_first": hist["losses"][0]["total"], "loss_last": hist["losses"][-1]["total"]}


def run_worst_es(case: dict, model, settings: FinetuneSettings, start=None) -> dict:
    """The ``worst-es`` protocol on one case (``start``: the starting prediction, when already made)."""
    cine, ed, es = case["cine"], case["ed"], case["es"]
    res = start if start is not None else predict_cine(cine, model, device="cpu", ed_frame=ed)
    zs = worst_slices(case, res.labels[es])
    others = [z for z in range(cine.shape[1]) if z not in zs]
    all_z = list(range(cine.shape[1]))
    before = frame_dice(case, res.labels[es], es, others)
    before_ed = frame_dice(case, res.labels[ed], ed, all_z)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    new, hist = finetune(model, cine, worst_es_corrections(case, zs), ed_frame=ed, settings=settings, device="cpu")
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    after_res = predict_cine(cine, new, device="cpu", ed_frame=ed)
    check = hist["check"] or {}
    return {"case": case["name"], "shape_TZYX": list(cine.shape), "corrected_slices": zs,
            "before": before, "after": frame_dice(case, after_res.labels[es], es, others),
            "before_ed": before_ed, "after_ed": frame_dice(case, after_res.labels[ed], ed, all_z),
            "kept": check.get("kept", 1.0), "check": check, "seconds": seconds, "cpu_seconds": cpu,
            "seconds_parts": hist.get("seconds_parts"),
            "loss_first": hist["losses"][0]["total"], "loss_last": hist["losses"][-1]["total"]}


def hardest(cases: list[dict], model, n: int) -> list[tuple[dict, object]]:
    """The ``n`` cases whose starting ES Dice (mean over structures) is lowest, with their predictions."""
    scored = []
    for case in cases:
        res = predict_cine(case["cine"], model, device="cpu", ed_frame=case["ed"])
        scored.append((float(np.mean(list(es_dice(case, res.labels[case["es"]]).values()))), case["name"], case, res))
    scored.sort(key=lambda r: (r[0], r[1]))
    return [(c, r) for _, _, c, r in scored[:n]]


def _fmt(v: float | None) -> str:
    return "    -" if v is None or v != v else f"{v:.3f}"


def case_line(r: dict) -> str:
    d = {k: r["after"][k] - r["before"][k] for k in r["before"]}
    cells = " ".join(f"{_fmt(r['before'].get(k))}→{_fmt(r['after'].get(k))}" for k in ("LV", "Myo", "RV"))
    tz = f"{r['shape_TZYX'][0]}×{r['shape_TZYX'][1]}"
    return (f"{r['case']:<11} {tz:>5}  {cells}  {min(d.values()):+7.3f} {np.mean(list(d.values())):+7.3f} "
            f"{r['kept']:5.2f} {r['seconds']:6.1f} {r['cpu_seconds']:6.1f}")


HEADER = (f"{'case':<11} {'T×Z':>5}  {'LV before→after':<15} {'Myo':<15} {'RV':<15} {'worst Δ':>7} "
          f"{'mean Δ':>7} {'kept':>5} {'wall s':>6} {'CPU s':>6}")


def summary(rows: list[dict]) -> str:
    lines = []
    for k in ("LV", "Myo", "RV"):
        v = np.array([(r["before"][k], r["after"][k]) for r in rows if k in r["before"]], float)
        if len(v):
            d = v[:, 1] - v[:, 0]
            lines.append(f"mean {k:<4} ES Dice {v[:, 0].mean():.3f} → {v[:, 1].mean():.3f}  (gain {d.mean():+.3f}, "
                         f"worst {d.min():+.3f}, n={len(v)})")
    drops = [min(r["after"][k] - r["before"][k] for k in r["before"]) for r in rows]
    gains = [np.mean([r["after"][k] - r["before"][k] for k in r["before"]]) for r in rows]
    lines.append(f"worst drop of any structure of any case {min(drops):+.3f}; cases with a drop > 0.01: "
                 f"{sum(d < -0.01 for d in drops)}/{len(rows)}; mean gain per case {np.mean(gains):+.3f}; "
                 f"starting model kept {sum(r['kept'] == 0 for r in rows)}/{len(rows)}")
    if rows and "before_ed" in rows[0]:
        for k in ("LV", "Myo", "RV"):
            v = np.array([(r["before_ed"][k], r["after_ed"][k]) for r in rows], float)
            d = v[:, 1] - v[:, 0]
            lines.append(f"mean {k:<4} ED Dice {v[:, 0].mean():.3f} → {v[:, 1].mean():.3f}  (gain {d.mean():+.3f}, "
                         f"worst {d.min():+.3f})")
    lines.append(f"fine-tuning seconds: wall mean {np.mean([r['seconds'] for r in rows]):.1f} "
                 f"max {np.max([r['seconds'] for r in rows]):.1f}; CPU mean "
                 f"{np.mean([r['cpu_seconds'] for r in rows]):.1f} max {np.max([r['cpu_seconds'] for r in rows]):.1f} "
                 f"(torch threads {torch.get_num_threads()}; load average now {os.getloadavg()[0]:.1f} on "
                 f"{os.cpu_count()} cores)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default=None, help="starting checkpoint (default: the shipped model)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a FinetuneSettings field, e.g. --set check=no (repeatable)")
    p.add_argument("--cases", default="acdc,sunnybrook", help="acdc, sunnybrook, or case names")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write all rows to this JSON file")
    p.add_argument("--protocol", default="ed-frame", choices=("ed-frame", "worst-es"))
    p.add_argument("--hardest", type=int, default=None, metavar="N",
                   help="only the N cases with the lowest starting ES Dice")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    s = FinetuneSettings()
    if args.steps is not None:
        s.steps = args.steps
    if args.lr is not None:
        s.lr = args.lr
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in FinetuneSettings.__dataclass_fields__:
            p.error(f"unknown setting {key!r}")
        cur = getattr(s, key)
        if isinstance(cur, bool):
            value = value.lower() in ("1", "true", "yes")
        elif isinstance(cur, tuple):
            value = tuple(float(v) for v in value.split(";") if v)
        elif key == "guard":
            value = None if value == "none" else value
        elif cur is not None:
            value = type(cur)(value)
        setattr(s, key, value)
    model, meta = load_checkpoint(args.model)
    names = []
    for c in args.cases.split(","):
        names += (list(SUNNYBROOK_VAL_PATIENTS) if c == "sunnybrook" else list(ACDC_VAL_PATIENTS) if c == "acdc"
                  else [c])
    print(f"model {meta.get('path')} ({meta.get('name')}); settings {s}", flush=True)
    print(HEADER, flush=True)
    if args.protocol == "worst-es" and any(n.startswith("SC-") for n in names):
        p.error("--protocol worst-es needs expert labels of every ES slice: ACDC cases only")
    cases = [load_sunnybrook(data, n) if n.startswith("SC-") else load_acdc(data, n) for n in names]
    chosen = hardest(cases, model, args.hardest) if args.hardest else [(c, None) for c in cases]
    if args.hardest:
        print(f"hardest {args.hardest}: {', '.join(c['name'] for c, _ in chosen)}", flush=True)
    rows = []
    for case, start in chosen:
        r = run_worst_es(case, model, s, start) if args.protocol == "worst-es" else run_case(case, model, s)
        rows.append(r)
        print(case_line(r), flush=True)
    print(summary(rows), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
