"""The echo model on the CAMUS validation split, through the real predict path (``read_cine`` + ``predict_cine``
with the model's description, labels on the input grid).

    python benchmarks/echo_benchmark.py [--model echo|PATH] [--data ../shared/data/echo] [--threads 1]
                                        [--speed-threads 2] [--limit N] [--json OUT.json]

Validation split (:func:`napari_cardiac_motion.training.echo_data.echo_split`, never trained on):
camus_fullres patient0008 and patient0015 and every 5th camus_edes224 patient (67). Prints:

* Dice LV / Myo / LA at ED and ES (CAMUS manual labels) per source, mean and lowest, with the echo
  clean-up (shipped) and without it (raw network labels): what the clean-up buys;
* Dice over every labelled frame of the full-resolution half cycles (``_seq_gt``);
* EF: single plane (per view) and biplane from the predicted labels (automatic ED/ES: largest / smallest
  LV cavity) against the CAMUS reference EF (camus_fullres patients with one; the training patients are
  listed apart, marked "trained on") and against the same read-out on the manual labels (camus_edes224:
  no reference EF, and its pixel size is unknown, so EF there is in pixel units of an anisotropically
  resized image: a like-for-like comparison of labels only);
* GLS from the model's motion per view (mean, SD, range) and next to the label-based proxy (the length
  change of the manual ED and ES endocardial borders, not tracked: a plausibility check, not a reference);
* seconds for a 20-frame full-resolution clip (patient0015 2CH) with ``--speed-threads`` torch threads,
  median of 3 warm runs (the machine's load is printed with it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from napari_cardiac_motion.analysis.echo_strain import border_length_mm, endocardial_border
from napari_cardiac_motion.errors import InputError, InputWarning
from napari_cardiac_motion.evaluation.echo import biplane_rows, predict_view, score_view
from napari_cardiac_motion.evaluation.echo_cases import EchoEvalView, iter_echo_views
from napari_cardiac_motion.inference import predict_cine
from napari_cardiac_motion.io import read_cine
from napari_cardiac_motion.model_description import describe
from napari_cardiac_motion.model_store import load_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "echo"
CLASSES = {1: "LV", 2: "Myo", 3: "LA"}


def view_cases(root: Path, limit: int | None) -> list[EchoEvalView]:
    """Every camus_fullres view (validation and training patients: the EF rows list both) and the validation
    camus_edes224 views (at most ``limit``), read by the core (:mod:`napari_cardiac_motion.evaluation.echo_cases`)."""
    return (list(iter_echo_views(root, "all", sources=("fullres",)))
            + list(iter_echo_views(root, "val", limit=limit, sources=("edes224",))))


def run_case(v: EchoEvalView, model, description) -> dict:
    """Predict one view and gather its figures: the core's row (:func:`score_view`, with the raw labels' Dice)
    plus the length change of the manual ED and ES endocardial borders (a GLS plausibility proxy)."""
    row = score_view(v, predict_view(v, model, description), description, raw=True)
    try:
        b0, b1 = (endocardial_border(g, v.spacing) for g in (v.gt_ed, v.gt_es))
        row["gls_label_proxy"] = 100 * (border_length_mm(b1, v.spacing) / border_length_mm(b0, v.spacing) - 1)
    except InputError as exc:
        row.setdefault("error", str(exc))
    return row


def stat(values) -> str:
    v = [x for x in values if x is not None and np.isfinite(x)]
    if not v:
        return "n/a"
    return f"{np.mean(v):.3f} (min {np.min(v):.3f}, n={len(v)})"


def mae(pairs) -> str:
    d = [abs(a - b) for a, b in pairs if a is not None and b is not None]
    return "n/a" if not d else f"{np.mean(d):.1f} points (n={len(d)})"


def print_tables(rows: list[dict], bi: list[dict]) -> None:
    """The figures (module docstring)."""
    val = [r for r in rows if r["val"]]
    print("\nDice on the validation views (predict path, input grid); clean = shipped echo clean-up, raw = without")
    for src in ("fullres", "edes224"):
        rs = [r for r in val if r["source"] == src]
        if not rs:
            continue
        print(f"  {src}: {len(rs)} views of {len({r['patient'] for r in rs})} patients")
        for tag in ("clean", "raw"):
            for phase in ("ED", "ES"):
                pre = "" if tag == "clean" else "raw_"
                print(f"    {tag:5s} {phase}: " + "  ".join(f"{k} {stat([r.get(f'{pre}dice_{phase}_{k}') for r in rs])}"
                                                       for k in CLASSES.values()))
    seq = [r for r in val if "seq_dice" in r]
    for r in seq:
        print(f"  every labelled frame, {r['name']} ({len(r['seq_dice']['LV'])} frames): "
              + "  ".join(f"{k} {stat(r['seq_dice'][k])}" for k in CLASSES.values()))
    print("\nEF (automatic ED/ES from the predicted labels)")
    for flag, tag in ((True, "validation"), (False, "trained on")):
        single = [(r.get("ef_single"), r["ref_ef"]) for r in rows if r["val"] == flag and r["source"] == "fullres"]
        b = [(x["ef"], x["ref_ef"]) for x in bi if x["val"] == flag and x["source"] == "fullres"]
        print(f"  camus_fullres {tag}: single-plane vs CAMUS reference MAE {mae(single)}; biplane vs reference "
              f"MAE {mae(b)}  " + ", ".join(f"{x['patient']} {x['ef']} vs {x['ref_ef']}" for x in bi
                                          if x["val"] == flag and x["source"] == "fullres"))
    e224 = [r for r in val if r["source"] == "edes224"]
    single = [(r.get("ef_single"), r.get("ef_single_manual")) for r in e224]
    print(f"  camus_edes224 validation: single-plane vs the manual labels' MAE {mae(single)}; "
          f"biplane vs manual MAE {mae([(x['ef'], x['ef_manual']) for x in bi if x['source'] == 'edes224'])}")
    g = [r["gls"] for r in val if r.get("gls") is not None]
    gp = [(a, b) for a, b in ((r.get("gls"), r.get("gls_label_proxy")) for r in val) if a is not None and b is not None]
    r_gp = np.corrcoef([a for a, _ in gp], [b for _, b in gp])[0, 1] if len(gp) > 2 else float("nan")
    print(f"\nGLS from the motion (validation views): mean {np.mean(g):.1f} %, SD {np.std(g):.1f}, range "
          f"{np.min(g):.1f} to {np.max(g):.1f} (n={len(g)}); vs the manual-border length change: MAE {mae(gp)}, "
          f"r = {r_gp:.2f}")
    for r in val:
        if r["source"] == "fullres":
            proxy = r.get("gls_label_proxy", float("nan"))
            print(f"  {r['name']}: GLS {r.get('gls')} % (manual-border proxy {proxy:.1f} %)")
    errs = [r for r in rows if "error" in r]
    if errs:
        print(f"\n{len(errs)} views without a read-out: " + "; ".join(f"{r['name']}: {r['error']}" for r in errs[:5]))


def speed(root: Path, model, description, threads: int) -> None:
    """Seconds of predict_cine on the 20-frame full-resolution patient0015 2CH clip (warm, median of 3)."""
    path = root / "camus_fullres" / "patient0015" / "patient0015_2CH_seq.nii.gz"
    if not path.exists():
        return
    torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        cine = read_cine(path, layout="2d+t")
    predict_cine(cine, model, device="cpu", description=description)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        predict_cine(cine, model, device="cpu", description=description)
        times.append(time.perf_counter() - t0)
    print(f"\nspeed: {cine.shape} (T, Z, Y, X) 0.308 mm, {threads} threads, ED chosen by the model: "
          f"{statistics.median(times):.2f} s median of 3 (load average before: {os.getloadavg()[0]:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="echo", help="'echo' (the shipped echo model) or a checkpoint path")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the Dice/EF/GLS part")
    ap.add_argument("--speed-threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="at most N camus_edes224 views (quick runs)")
    ap.add_argument("--json", default=None, help="also write the per-view rows here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, meta = load_model(args.model)
    description = describe(meta)
    print(f"model {meta.get('name')} ({meta.get('path')}), steps {meta.get('steps')}, date {meta.get('date')}")
    root = Path(args.data)
    rows = []
    t0 = time.perf_counter()
    for c in view_cases(root, args.limit):
        rows.append(run_case(c, model, description))
    print(f"{len(rows)} views in {time.perf_counter() - t0:.0f} s")
    print_tables(rows, biplane_rows(rows))
    if args.json:
        keep = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        Path(args.json).write_text(json.dumps(keep, indent=1, default=float))
    speed(root, model, description, args.speed_threads)


if __name__ == "__main__":
    main()
