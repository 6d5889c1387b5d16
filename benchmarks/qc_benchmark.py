"""Quality control (``napari_cardiac_motion.qc``) on ACDC validation patients: does ``flagged`` catch the bad slices?

Every ACDC patient's ED and ES stacks form a two-frame cine (ED, ES) run through ``predict_cine`` with
``ed_frame=0`` and the shipped model; labels are on the input grid. A (frame, slice) is **bad** when any
structure present in the expert labels or in the prediction has a per-slice Dice < 0.7 there. Printed: the
fraction of bad slices caught by ``flagged`` and the fraction of slices flagged, on the 80 fit (training)
patients and on the 20 held-out validation patients (``training.data.ACDC_VAL_PATIENTS``, never seen by
the shipped weights nor by the QC fit), per frame (ED, ES) and per disease group. Target: catch ≥ 70 % of
bad slices while flagging ≤ 15 %.

The model outputs (labels, motion, soft-max evidence) are cached as npz in ``--cache`` so that feature
work is fast. ``--fit`` refits the QC score (gradient-boosted trees, ``napari_cardiac_motion.qc_boost``)
on the fit patients and prints its cross-validated figures (5 folds by patient); ``--write`` also writes
it to ``napari_cardiac_motion/qc_model.json``.

    python benchmarks/qc_benchmark.py [--data ../shared/data/acdc] [--cache /tmp/qc-cache] [--fit [--write]]
        [--target-flagged 0.15] [--trees 150] [--depth 3] [--model CKPT] [--device cpu] [--json out.json]
    python benchmarks/qc_benchmark.py --speed [CINE]    # CPU seconds QC adds to predict_cine (SC-HF-I-5)
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

from napari_cardiac_motion import qc  # noqa: E402

from napari_cardiac_motion import qc_boost  # noqa: E402
from napari_cardiac_motion.training.data import ACDC_VAL_PATIENTS  # noqa: E402

HELD_OUT = tuple(p.removeprefix("patient") for p in ACDC_VAL_PATIENTS)
FIT = tuple(f"{i:03d}" for i in range(1, 101) if f"{i:03d}" not in HELD_OUT)
GROUPS = ("DCM", "HCM", "MINF", "NOR", "RV")
BAD_DICE = 0.7


def _read(path: Path):
    import nibabel as nib

    img = nib.load(str(path))
    arr = np.asanyarray(img.dataobj)
    z = img.header.get_zooms()[:3]
    return np.ascontiguousarray(arr.transpose(2, 1, 0)), (float(z[2]), float(z[1]), float(z[0])), img.affine


def model_outputs(folder: Path, model, device: str, cache: Path) -> dict:
    """labels, motion, evidence, gt, spacing of one patient (from the cache when there)."""
    f = cache / f"{folder.name}.npz"
    if f.exists():
        return dict(np.load(f))
    from napari_cardiac_motion.cine import Cine
    from napari_cardiac_motion.inference import predict_cine

    ed, spacing, affine = _read(folder / "ED.nii.gz")
    es = _read(folder / "ES.nii.gz")[0]
    gt = np.stack([_read(folder / "ED_gt.nii.gz")[0], _read(folder / "ES_gt.nii.gz")[0]]).astype(np.uint8)
    cine = Cine(np.stack([ed, es]).astype(np.float32), spacing, 0.0, affine, folder.name)
    t0 = time.perf_counter()
    res = predict_cine(cine, model, device=device, ed_frame=0, qc=True)
    sec = time.perf_counter() - t0
    out = {"labels": res.labels, "motion": res.motion.astype(np.float16), "gt": gt,
           "evidence": res.qc.evidence, "spacing": np.array(spacing), "seconds": np.array(sec)}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(f, **out)
    return out


def bad_slices(labels: np.ndarray, gt: np.ndarray, n_cls: int = 3) -> np.ndarray:
    """``(T, Z)`` bool: a structure present in either has per-slice Dice < BAD_DICE."""
    bad = np.zeros(labels.shape[:2], bool)
    for t, z in failing_structures(labels, gt, n_cls):
        bad[t, z] = True
    return bad


def failing_structures(labels: np.ndarray, gt: np.ndarray, n_cls: int = 3) -> dict[tuple[int, int], set[int]]:
    """``{(t, z): classes}`` of the bad slices: the classes (1..n_cls) with per-slice Dice < BAD_DICE."""
    out: dict[tuple[int, int], set[int]] = {}
    for t, z in np.ndindex(*labels.shape[:2]):
        for c in range(1, n_cls + 1):
            a, b = labels[t, z] == c, gt[t, z] == c
            s = int(a.sum()) + int(b.sum())
            if s and 2.0 * np.logical_and(a, b).sum() / s < BAD_DICE:
                out.setdefault((t, z), set()).add(c)
    return out


def reason_check(rows: dict, names) -> tuple[int, int]:
    """(caught bad slices, of which the reason names a failing structure) on ``names``."""
    from napari_cardiac_motion.qc_reasons import STRUCTURES, reasons

    caught = named = 0
    for n in names:
        r = rows[n]
        flag = qc.flag(qc.score_features(r["feats"]))
        pairs = [p for p in r["failing"] if flag[p]]
        if not pairs:
            continue
        texts = reasons(qc.MODEL, np.array([r["feats"][p] for p in pairs]), qc.FEATURES,
                        evidence=np.array([r["evidence"][p] for p in pairs]))
        caught += len(pairs)
        named += sum(any(STRUCTURES[c - 1] in text for c in r["failing"][p]) for p, text in zip(pairs, texts))
    return caught, named


def rates(flag: np.ndarray, bad: np.ndarray) -> tuple[float, float, int, int]:
    """(caught fraction of bad, flagged fraction, #bad, #slices)."""
    nb = int(bad.sum())
    return (float((flag & bad).sum() / nb) if nb else float("nan"), float(flag.mean()) if flag.size else 0.0,
            nb, int(flag.size))


def fit_model(rows: dict, names: tuple[str, ...], settings: qc_boost.BoostSettings, target_flagged: float,
              note: str) -> dict:
    """Fit the QC score on ``names``; its threshold is exceeded by ``target_flagged`` of their slices."""
    x = np.concatenate([rows[n]["feats"].reshape(-1, len(qc.FEATURES)) for n in names])
    y = np.concatenate([rows[n]["bad"].ravel() for n in names]).astype(float)
    model = qc_boost.fit(x, y, settings, features=qc.FEATURES)
    model["threshold"] = round(float(np.quantile(qc_boost.predict(model, x), 1.0 - target_flagged)), 6)
    model["fit"] = note
    return model


def cross_validate(rows: dict, names: tuple[str, ...], settings: qc_boost.BoostSettings, folds: int = 5) -> dict:
    """Caught fraction at 10/15/20 % flagged of scores each from a fit without that patient's fold."""
    scores, bad = [], []
    for k in range(folds):
        test = names[k::folds]
        m = fit_model(rows, tuple(n for n in names if n not in test), settings, 0.15, "cv")
        scores += [qc_boost.predict(m, rows[n]["feats"]).ravel() for n in test]
        bad += [rows[n]["bad"].ravel() for n in test]
    sc, b = np.concatenate(scores), np.concatenate(bad)
    return {q: rates(sc >= np.quantile(sc, 1.0 - q), b)[0] for q in (0.10, 0.15, 0.20)}


def speed(path: Path, model, device: str, repeats: int = 5) -> dict:
    """CPU seconds QC adds to ``predict_cine`` on one cine: the evidence sums over a cine's soft-max maps
    on the model grid (16 frames a call, as on a CPU) and :func:`qc.assess` (process time, median)."""
    import statistics

    import torch

    from napari_cardiac_motion.inference import predict_cine
    from napari_cardiac_motion.io import read_cine

    cine = read_cine(str(path))
    res = predict_cine(cine, model, device=device)
    n_t, n_z = cine.shape[:2]
    h, w = res.metadata["region"]["model_grid_hw"]
    probs = torch.randn(16, model.config.num_classes, h, w).softmax(1)

    def cpu(fn) -> float:
        fn()
        ts = []
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            ts.append(time.process_time() - t0)
        return statistics.median(ts)

    ev = cpu(lambda: [qc.softmax_evidence(probs) for _ in range(0, n_t * n_z, 16)])
    pixel = float(np.mean(cine.spacing[1:]))
    sc = cpu(lambda: qc.assess(res.labels, res.motion, res.qc.evidence, res.ed_frame, pixel_mm=pixel))
    out = {"cine": f"{path.parent.name}/{path.name}", "shape_TZYX": list(cine.shape), "model_grid_hw": [h, w],
           "evidence_cpu_s": round(ev, 3), "assess_cpu_s": round(sc, 3), "total_cpu_s": round(ev + sc, 3),
           "flagged": res.qc.summary()}
    print(json.dumps(out))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "acdc"))
    p.add_argument("--cache", default="/tmp/qc-cache")
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fit", action="store_true", help="refit the QC score on the fit (training) patients")
    p.add_argument("--write", action="store_true", help="with --fit: write it to napari_cardiac_motion/qc_model.json")
    p.add_argument("--target-flagged", type=float, default=0.15,
                   help="with --fit: the threshold is exceeded by this fraction of the fit patients' slices "
                        "(before the cap of qc.MAX_FLAGGED_FRACTION per cine)")
    p.add_argument("--trees", type=int, default=150, help="with --fit: boosted trees")
    p.add_argument("--depth", type=int, default=3, help="with --fit: depth of each tree")
    p.add_argument("--json", default=None)
    p.add_argument("--speed", nargs="?", const=str(ROOT / ".." / "shared" / "data" / "sunnybrook" / "SC-HF-I-5" /
                                                  "sa.nii.gz"), default=None, metavar="CINE",
                   help="only print the CPU seconds QC adds to predict_cine on CINE (default SC-HF-I-5)")
    args = p.parse_args(argv)
    if args.speed:
        from napari_cardiac_motion.model import load_checkpoint

        if not Path(args.speed).exists():
            print(f"no cine at {args.speed}; nothing to do")
            return 0
        speed(Path(args.speed), load_checkpoint(args.model, device="cpu")[0], args.device)
        return 0
    data = Path(args.data)
    if not data.is_dir():
        print(f"no ACDC data at {data}; nothing to do")
        return 0
    from napari_cardiac_motion.model import load_checkpoint

    model, model_meta = load_checkpoint(args.model, device="cpu")
    cache = Path(args.cache) / f"{model_meta.get('name')}-{model_meta.get('version')}"  # one cache per model
    rows = {}
    for name in FIT + HELD_OUT:
        folder = data / f"patient{name}"
        o = model_outputs(folder, model, args.device, cache)
        info = json.loads((folder / "info.json").read_text())
        lab, gt = o["labels"], o["gt"]
        pixel = float(np.mean(o["spacing"][1:]))
        feats = qc.features(lab, o["motion"].astype(np.float32), o["evidence"], 0, pixel_mm=pixel)
        rows[name] = {"feats": feats, "bad": bad_slices(lab, gt), "group": info.get("group"),
                      "failing": failing_structures(lab, gt), "evidence": o["evidence"]}
        print(f"patient{name} ({info.get('group')}): {int(rows[name]['bad'].sum())}/{rows[name]['bad'].size} bad",
              file=sys.stderr)
    if args.fit:
        settings = qc_boost.BoostSettings(trees=args.trees, depth=args.depth)
        cv = cross_validate(rows, FIT, settings)
        print("fit patients, 5-fold cross-validation by patient: bad caught when flagging "
              + ", ".join(f"{q:.0%}: {c:.0%}" for q, c in cv.items()))
        mv = (model_meta or {}).get("version", "?")
        note = (f"ACDC training patients ({len(FIT)}: all but the 20 validation ones; ED/ES, model {mv}); "
                f"threshold: {1 - args.target_flagged:.0%} quantile of their scores; {args.trees} trees of depth "
                f"{args.depth}")
        qc.MODEL = fit_model(rows, FIT, settings, args.target_flagged, note)
        qc.THRESHOLD, qc.FIT_NOTE = qc.MODEL["threshold"], note
        if args.write:
            qc.MODEL_FILE.write_text(json.dumps(qc.MODEL, separators=(",", ":")) + "\n")
            print(f"wrote {qc.MODEL_FILE}")
    report = summarise(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def summarise(rows: dict) -> dict:
    """Print and return the caught/flagged table (fit, held-out, all; per frame and group)."""
    out = {}
    print(f"threshold {qc.THRESHOLD:.3f}, at most {qc.MAX_FLAGGED_FRACTION:.0%} of a cine flagged; bad = a "
          f"structure with per-slice Dice < {BAD_DICE}")
    print(f"{'set':<22}{'bad caught':>12}{'flagged':>10}{'#bad':>7}{'#slices':>9}")
    for set_name, names in (("fit (80)", FIT), ("held-out (20)", HELD_OUT)):
        names = [n for n in names if n in rows]
        for part, sel in (("", slice(None)), (" ED", 0), (" ES", 1)):
            flag = np.concatenate([qc.flag(qc.score_features(rows[n]["feats"]))[sel].ravel() for n in names])
            bad = np.concatenate([rows[n]["bad"][sel].ravel() for n in names])
            c, f, nb, ns = rates(flag, bad)
            out[f"{set_name}{part}"] = {"caught": c, "flagged": f, "bad": nb, "slices": ns}
            print(f"{set_name + part:<22}{c:>11.0%}{f:>10.0%}{nb:>7}{ns:>9}")
    for set_name, names in (("held-out (20)", HELD_OUT),):
        names = [n for n in names if n in rows]
        sc = np.concatenate([qc.score_features(rows[n]["feats"]).ravel() for n in names])
        bad = np.concatenate([rows[n]["bad"].ravel() for n in names])
        pts = {q: rates(sc >= np.quantile(sc, 1.0 - q), bad)[0] for q in (0.10, 0.15, 0.20, 0.30)}
        out[f"{set_name} operating points"] = pts
        print(f"{set_name}: bad caught when flagging " + ", ".join(f"{q:.0%}: {c:.0%}" for q, c in pts.items()))
    held = [n for n in HELD_OUT if n in rows]
    caught, named = reason_check(rows, held)
    out["held-out reasons"] = {"caught_bad": caught, "naming_a_failing_structure": named}
    print(f"held-out (20): the reason of {named} of the {caught} caught bad slices names a structure below "
          f"{BAD_DICE} Dice there")
    for g in GROUPS:
        names = [n for n in rows if rows[n]["group"] == g]
        if not names:
            continue
        flag = np.concatenate([qc.flag(qc.score_features(rows[n]["feats"])).ravel() for n in names])
        bad = np.concatenate([rows[n]["bad"].ravel() for n in names])
        c, f, nb, ns = rates(flag, bad)
        out[g] = {"caught": c, "flagged": f, "bad": nb, "slices": ns}
        print(f"{'all, ' + g:<22}{c:>11.0%}{f:>10.0%}{nb:>7}{ns:>9}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
