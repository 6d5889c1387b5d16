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

from napari_cardiac_motion.analysis.echo import EchoView, measure_echo
from napari_cardiac_motion.analysis.echo_strain import border_length_mm, endocardial_border, gls_readout
from napari_cardiac_motion.errors import InputError, InputWarning
from napari_cardiac_motion.inference import predict_cine
from napari_cardiac_motion.io import read_cine
from napari_cardiac_motion.io.echo_nifti import read_nifti_frames
from napari_cardiac_motion.model_description import describe
from napari_cardiac_motion.model_store import load_model
from napari_cardiac_motion.postprocess import clean_echo_labels
from napari_cardiac_motion.training.echo_data import echo_split

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "echo"
CLASSES = {1: "LV", 2: "Myo", 3: "LA"}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float("nan") if s == 0 else float(2 * (a & b).sum() / s)


def frames(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """``(T, Y, X)`` frames and pixel size of a CAMUS NIfTI."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        fr = read_nifti_frames(path)
    return fr.data, fr.spacing


def predict(path_or_frames, model, description, spacing=None):
    """Raw (no clean-up) and cleaned labels ``(T, Y, X)``, motion ``(T, Y, X, 2)``, ED, ES, seconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputWarning)
        if isinstance(path_or_frames, Path):
            cine = read_cine(path_or_frames, layout="2d+t")
            data, spacing = cine, None
        else:
            data = path_or_frames[:, None].astype(np.float32)
        r = predict_cine(data, model, device="cpu", description=description, largest_component=False,
                         spacing=spacing)
    raw = r.labels[:, 0]
    clean = clean_echo_labels(r.labels)[:, 0]
    lv = np.array([(f == 1).sum() for f in clean])  # ED/ES as the shipped path picks them (after clean-up)
    return raw, clean, r.motion[:, 0], int(np.argmax(lv)), int(np.argmin(lv)), r.seconds


def view_cases(root: Path, limit: int | None):
    """``(name, source, input, gt (T, Y, X), ed, es, spacing, known, ref_ef, patient, view, seq)`` of the
    validation views; ``input`` a file path or frames ``(T, Y, X)``."""
    val = set(echo_split(root)["val"])
    full = root / "camus_fullres"
    for folder in sorted(full.iterdir()) if full.is_dir() else []:
        info_path = folder / "info.json"
        if not info_path.exists():
            continue
        info = json.loads(info_path.read_text())
        for view in ("2CH", "4CH"):
            v = info["views"][view]
            stem = folder / f"{folder.name}_{view}"
            ed_gt, sp = frames(Path(f"{stem}_ED_gt.nii.gz"))
            es_gt, _ = frames(Path(f"{stem}_ES_gt.nii.gz"))
            seq = Path(f"{stem}_seq.nii.gz")
            if v.get("sequence_available") and seq.exists():
                img, _ = frames(seq)
                ed, es = int(v["ed_index"]), int(v["es_index"])
                gt_seq = frames(Path(f"{stem}_seq_gt.nii.gz"))[0] if Path(f"{stem}_seq_gt.nii.gz").exists() else None
            elif Path(f"{stem}_ED.nii.gz").exists() and Path(f"{stem}_ES.nii.gz").exists():
                img = np.concatenate([frames(Path(f"{stem}_ED.nii.gz"))[0], frames(Path(f"{stem}_ES.nii.gz"))[0]])
                ed, es, gt_seq = 0, 1, None
            else:
                continue
            ref = info.get("ef_percent")
            yield {"name": f"{folder.name}_{view}", "source": "fullres", "input": img, "ed": ed, "es": es,
                   "gt_ed": ed_gt[0], "gt_es": es_gt[0], "gt_seq": gt_seq, "spacing": sp, "known": True,
                   "ref_ef": float(ref) if isinstance(ref, (int, float)) else None, "patient": folder.name,
                   "view": view, "val": folder.name in val}
    index = root / "camus_edes224" / "index.json"
    n = 0
    for entry in json.loads(index.read_text())["cases"] if index.exists() else []:
        if entry["patient"] not in val or (limit is not None and n >= limit):
            continue
        n += 1
        gt, _ = frames(root / "camus_edes224" / entry["labels"])
        yield {"name": f"{entry['patient']}_{entry['view']}", "source": "edes224",
               "input": root / "camus_edes224" / entry["image"], "ed": 0, "es": 1, "gt_ed": gt[0], "gt_es": gt[1],
               "gt_seq": None, "spacing": (1.0, 1.0), "known": False, "ref_ef": None, "patient": entry["patient"],
               "view": entry["view"], "val": True}


def run_case(c: dict, model, description) -> dict:
    """Predict one view and gather its figures."""
    spacing = (1.0, *c["spacing"]) if not isinstance(c["input"], Path) else None
    raw, clean, motion, ed, es, secs = predict(c["input"], model, description, spacing)
    row = {"name": c["name"], "source": c["source"], "patient": c["patient"], "view": c["view"], "val": c["val"],
           "seconds": secs, "ref_ef": c["ref_ef"]}
    for tag, lab in (("clean", clean), ("raw", raw)):
        for phase, idx, gt in (("ED", c["ed"], c["gt_ed"]), ("ES", c["es"], c["gt_es"])):
            for v, k in CLASSES.items():
                row[f"{tag}_{phase}_{k}"] = dice(lab[idx] == v, gt == v)
    if c["gt_seq"] is not None:
        row["seq_dice"] = {k: [dice(clean[t] == v, c["gt_seq"][t] == v) for t in range(len(clean))]
                           for v, k in CLASSES.items()}
    row["pred_view"] = EchoView(c["view"], clean, c["spacing"], ed, es, c["known"])
    row["gt_view"] = EchoView(c["view"], np.stack([c["gt_ed"], c["gt_es"]]), c["spacing"], 0, 1, c["known"])
    try:
        row["ef_single"] = measure_echo(a4c=row["pred_view"])["lv_ef_percent"]
        row["ef_single_gt"] = measure_echo(a4c=row["gt_view"])["lv_ef_percent"]
        row["gls"] = gls_readout(clean, motion, c["spacing"], es, ed)["gls_percent"]
        b0, b1 = (endocardial_border(g, c["spacing"]) for g in (c["gt_ed"], c["gt_es"]))
        row["gls_label_proxy"] = 100 * (border_length_mm(b1, c["spacing"]) / border_length_mm(b0, c["spacing"]) - 1)
    except InputError as exc:
        row["error"] = str(exc)
    return row


def biplane(rows: list[dict]) -> list[dict]:
    """Per patient with both views: biplane EF from the predicted and from the manual labels."""
    out = []
    by: dict[str, dict[str, dict]] = {}
    for r in rows:
        by.setdefault(r["patient"], {})[r["view"]] = r
    for pid, views in sorted(by.items()):
        if set(views) != {"2CH", "4CH"}:
            continue
        try:
            pred = measure_echo(a2c=views["2CH"]["pred_view"], a4c=views["4CH"]["pred_view"])["lv_ef_percent"]
            gt = measure_echo(a2c=views["2CH"]["gt_view"], a4c=views["4CH"]["gt_view"])["lv_ef_percent"]
        except InputError:
            continue
        r0 = views["2CH"]
        out.append({"patient": pid, "source": r0["source"], "val": r0["val"], "ef": pred, "ef_gt": gt,
                    "ref_ef": r0["ref_ef"]})
    return out


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
                print(f"    {tag:5s} {phase}: " + "  ".join(f"{k} {stat([r[f'{tag}_{phase}_{k}'] for r in rs])}"
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
    single = [(r.get("ef_single"), r.get("ef_single_gt")) for r in e224]
    print(f"  camus_edes224 validation: single-plane vs the manual labels' MAE {mae(single)}; "
          f"biplane vs manual MAE {mae([(x['ef'], x['ef_gt']) for x in bi if x['source'] == 'edes224'])}")
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
    print_tables(rows, biplane(rows))
    if args.json:
        keep = [{k: v for k, v in r.items() if k not in ("pred_view", "gt_view")} for r in rows]
        Path(args.json).write_text(json.dumps(keep, indent=1, default=float))
    speed(root, model, description, args.speed_threads)


if __name__ == "__main__":
    main()
