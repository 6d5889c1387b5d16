"""Does fine-tuning from one corrected frame help the frames nobody corrected?

For each held-out cine, the ED frame's ground truth is the only "correction"; the model is fine-tuned
with :func:`napari_cardiac_motion.finetune.finetune` and the Dice at ES (never shown to the
fine-tuning) is reported before and after, per structure, with the seconds fine-tuning took.

Cases (from ``--data``, default ``../shared/data``):

* Sunnybrook SC-HF-I-4 and SC-HF-I-5 (held out of training): 20-frame cines. The ED frame is the one
  with epicardial contours in ``info.json``, ES the other contoured frame. At ED the ground truth has
  LV blood pool and myocardium on the contoured slices (other slices stay unlabelled = 255); it has no
  RV, so voxels the model predicts as RV where the ground truth says background are left unlabelled
  (255) rather than taught as background. At ES only the LV blood pool is contoured: Dice LV on the
  ES-contoured slices.
* ACDC validation patients 001, 011, …, 091: 2-frame cines ``[ED, ES]``; Dice LV, Myo, RV at ES.

The ES segmentation is computed exactly as pass 1 of :func:`~napari_cardiac_motion.inference.predict_cine`
(whole-cine intensity normalisation, centre crop to the network's input size).

Usage::

    python benchmarks/finetune_benchmark.py [--model CKPT] [--steps N] [--guards teacher,l2sp,none]
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
from napari_cardiac_motion.finetune import FinetuneSettings, finetune  # noqa: E402
from napari_cardiac_motion.io import read_nifti, read_nifti_labels  # noqa: E402
from napari_cardiac_motion.model import load_checkpoint  # noqa: E402
from napari_cardiac_motion.preprocessing import from_network_grid, normalize_intensity, to_network_grid  # noqa: E402

SUNNYBROOK = ("SC-HF-I-4", "SC-HF-I-5")
ACDC = tuple(f"patient{n:03d}" for n in (1, 11, 21, 31, 41, 51, 61, 71, 81, 91))


def segment_frame(model, data: np.ndarray, frame: int) -> np.ndarray:
    """Labels ``(Z, Y, X)`` of one frame, as predict_cine's segmentation pass computes them."""
    n_t, n_z, h, w = data.shape
    size = tuple(min(int(s), n) for s, n in zip(model.config.input_size, (h, w)))
    image = to_network_grid(normalize_intensity(data), size)
    model.eval()
    with torch.inference_mode():
        x = torch.from_numpy(image[frame]).unsqueeze(1)
        lab = model.segment(x).argmax(1).to(torch.uint8).numpy()
    return from_network_grid(lab, (h, w))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / s) if s else float("nan")


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
    gt = case["gt"][case["es"]][zs]
    pr = labels_es[zs]
    return {STRUCTURE_KEYS[c]: dice(pr == c, gt == c) for c in case["structures"]}


def run_case(case: dict, model, settings: FinetuneSettings, guard) -> dict:
    data = case["cine"].data
    pred_ed = segment_frame(model, data, case["ed"])
    before = es_dice(case, segment_frame(model, data, case["es"]))
    corr = corrections_for(case, pred_ed)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    new, hist = finetune(model, case["cine"], corr, ed_frame=case["ed"], settings=settings, guard=guard,
                         device="cpu")
    seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    after = es_dice(case, segment_frame(new, data, case["es"]))
    return {"case": case["name"], "shape_TZYX": list(data.shape), "guard": guard, "before": before,
            "after": after, "seconds": seconds, "cpu_seconds": cpu, "loss_first": hist["losses"][0]["total"],
            "loss_last": hist["losses"][-1]["total"]}


def _cpu_seconds() -> float:
    """CPU time of this process (all threads): on a busy shared machine, CPU s / threads estimates the
    wall time the same work takes when the cores are free."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fmt(v: float) -> str:
    return "  n/a" if v != v else f"{v:.3f}"


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(f"{'case':<12} {'T×Z':>6} {'struct':>6} {'ES before':>9} {'ES after':>9} {'Δ':>7} {'wall s':>7} {'CPU s':>6}")
    for r in rows:
        tz = f"{r['shape_TZYX'][0]}×{r['shape_TZYX'][1]}"
        for k in r["before"]:
            b, a = r["before"][k], r["after"][k]
            print(f"{r['case']:<12} {tz:>6} {k:>6} {fmt(b):>9} {fmt(a):>9} {a - b:+7.3f} {r['seconds']:7.1f} {r['cpu_seconds']:6.1f}")
    by = {}
    for r in rows:
        for k in r["before"]:
            by.setdefault(k, []).append((r["before"][k], r["after"][k]))
    for k, v in by.items():
        v = np.array(v, float)
        ok = ~np.isnan(v).any(1)
        d = v[ok, 1] - v[ok, 0]
        print(f"{'mean':<12} {'':>6} {k:>6} {v[ok, 0].mean():9.3f} {v[ok, 1].mean():9.3f} {d.mean():+7.3f}"
              f"   (worst Δ {d.min():+.3f}, n={ok.sum()})")
    print(f"mean fine-tuning seconds: wall {np.mean([r['seconds'] for r in rows]):.1f}, "
          f"CPU {np.mean([r['cpu_seconds'] for r in rows]):.1f} (machine load average now "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default=None, help="starting checkpoint (default: the shipped model)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--guards", default=None,
                   help="comma-separated guards to compare (teacher,l2sp,none); default: the default guard")
    p.add_argument("--freeze-bn", choices=("yes", "no"), default=None)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a FinetuneSettings field, e.g. --set prop_weight=0 (repeatable)")
    p.add_argument("--cases", default="sunnybrook,acdc", help="sunnybrook, acdc, or case names")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write all rows to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    settings = FinetuneSettings()
    if args.steps is not None:
        settings.steps = args.steps
    if args.lr is not None:
        settings.lr = args.lr
    if args.freeze_bn is not None:
        settings.freeze_bn = args.freeze_bn == "yes"
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in FinetuneSettings.__dataclass_fields__:
            p.error(f"unknown setting {key!r}")
        cur = getattr(settings, key)
        if isinstance(cur, bool):
            value = value.lower() in ("1", "true", "yes")
        elif cur is not None and not isinstance(cur, str):
            value = type(cur)(value)
        setattr(settings, key, value)
    guards = [settings.guard] if args.guards is None else [
        None if g.strip() == "none" else g.strip() for g in args.guards.split(",")]
    model, meta = load_checkpoint(args.model)
    names = []
    for c in args.cases.split(","):
        names += list(SUNNYBROOK) if c == "sunnybrook" else list(ACDC) if c == "acdc" else [c]
    print(f"model {meta.get('path')} ({meta.get('name')}); steps {settings.steps}, lr {settings.lr:g}, "
          f"freeze_bn {settings.freeze_bn}, crop {settings.crop}, seq_len {settings.seq_len}, "
          f"batch {settings.batch}, torch threads {torch.get_num_threads()}; guards compared: {guards}; "
          f"weights motion {settings.motion_weight}, joint {settings.joint_weight}, prop {settings.prop_weight}, "
          f"teacher {settings.teacher_weight}, l2sp {settings.l2sp_weight}", flush=True)
    all_rows = {}
    for guard in guards:
        rows = []
        for name in names:
            case = load_sunnybrook(data, name) if name.startswith("SC-") else load_acdc(data, name)
            r = run_case(case, model, settings, guard)
            rows.append(r)
            print(f"  {name}: {json.dumps({'before': r['before'], 'after': r['after']})} "
                  f"{r['seconds']:.1f} s", flush=True)
        print_table(rows, f"guard = {guard}")
        all_rows[str(guard)] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(all_rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
