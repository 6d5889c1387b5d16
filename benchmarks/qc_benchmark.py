"""Quality control (``napari_cardiac_motion.qc``) on ACDC validation patients: does ``flagged`` catch the bad slices?

For each of the 20 validation patients (never seen by the shipped weights) the ED and ES stacks form a
two-frame cine (ED, ES) run through ``predict_cine`` with ``ed_frame=0`` and the shipped model; labels are
on the input grid. A (frame, slice) is **bad** when any structure present in the expert labels or in the
prediction has a per-slice Dice < 0.7 there. Printed: the fraction of bad slices caught by ``flagged`` and
the fraction of slices flagged, on the 10 fit patients, on the 10 held-out ones and on all 20, per frame
(ED, ES) and per disease group. Target: catch ≥ 70 % of bad slices while flagging ≤ 15 %.

The model outputs (labels, motion, soft-max evidence) are cached as npz in ``--cache`` so that feature
work is fast. ``--fit`` refits the logistic model on the fit patients (001, 011, …, 091) and prints the
constants; ``--write`` also writes them into ``napari_cardiac_motion/qc.py``.

    python benchmarks/qc_benchmark.py [--data ../shared/data/acdc] [--cache /tmp/qc-cache] [--fit [--write]]
        [--target-flagged 0.16] [--l2 3] [--model CKPT] [--device cpu] [--json out.json]
    python benchmarks/qc_benchmark.py --speed [CINE]    # CPU seconds QC adds to predict_cine (SC-HF-I-5)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_cardiac_motion import qc  # noqa: E402

FIT = ("001", "011", "021", "031", "041", "051", "061", "071", "081", "091")
HELD_OUT = ("005", "015", "025", "035", "045", "055", "065", "075", "085", "095")
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
    for t, z in np.ndindex(*labels.shape[:2]):
        for c in range(1, n_cls + 1):
            a, b = labels[t, z] == c, gt[t, z] == c
            s = int(a.sum()) + int(b.sum())
            if s and 2.0 * np.logical_and(a, b).sum() / s < BAD_DICE:
                bad[t, z] = True
    return bad


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression by Newton steps (x standardised) → (coef, intercept)."""
    n, d = x.shape
    xa = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    pen = np.full(d + 1, l2)
    pen[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-xa @ w))
        g = xa.T @ (p - y) + pen * w
        h = (xa * (p * (1 - p))[:, None]).T @ xa + np.diag(pen + 1e-9)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def rates(flag: np.ndarray, bad: np.ndarray) -> tuple[float, float, int, int]:
    """(caught fraction of bad, flagged fraction, #bad, #slices)."""
    nb = int(bad.sum())
    return (float((flag & bad).sum() / nb) if nb else float("nan"), float(flag.mean()) if flag.size else 0.0,
            nb, int(flag.size))


def constants_block(mean, scale, coef, intercept, thr, note) -> str:
    def f(name: str, a) -> str:  # six values a line
        vals = [f"{v:.4f}" for v in a]
        sep = ",\n" + " " * (len(name) + len(" = np.array(["))
        return f"{name} = np.array([" + sep.join(", ".join(vals[i:i + 6]) for i in range(0, len(vals), 6)) + "])\n"

    return (f("MEAN", mean) + f("SCALE", scale) + f("COEF", coef) + f"INTERCEPT = {intercept:.4f}\n"
            f"#: flag a (frame, slice) whose score is at least this\nTHRESHOLD = {thr:.4f}\n"
            f"#: the fit the constants come from (written by ``benchmarks/qc_benchmark.py --fit``)\n"
            f"FIT_NOTE = {note!r}\n")


def write_constants(block: str) -> None:
    p = ROOT / "napari_cardiac_motion" / "qc.py"
    s = p.read_text()
    new, n = re.subn(r"MEAN = .*?FIT_NOTE = [^\n]*\n", lambda _: block, s, count=1, flags=re.S)
    if n != 1:
        raise SystemExit("qc.py: constants block not found")
    p.write_text(new)


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
    p.add_argument("--fit", action="store_true", help="refit the logistic model on the fit patients")
    p.add_argument("--write", action="store_true", help="with --fit: write the constants into qc.py")
    p.add_argument("--target-flagged", type=float, default=0.16,
                   help="with --fit: the threshold is exceeded by this fraction of the fit patients' slices "
                        "(before the cap of qc.MAX_FLAGGED_FRACTION per cine)")
    p.add_argument("--l2", type=float, default=3.0, help="with --fit: L2 penalty of the logistic model")
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
    model = None
    rows = {}
    for name in FIT + HELD_OUT:
        folder = data / f"patient{name}"
        if model is None and not (Path(args.cache) / f"{folder.name}.npz").exists():
            from napari_cardiac_motion.model import load_checkpoint
            model = load_checkpoint(args.model, device="cpu")[0]
        o = model_outputs(folder, model, args.device, Path(args.cache))
        info = json.loads((folder / "info.json").read_text())
        lab, gt = o["labels"], o["gt"]
        pixel = float(np.mean(o["spacing"][1:]))
        feats = qc.features(lab, o["motion"].astype(np.float32), o["evidence"], 0, pixel_mm=pixel)
        rows[name] = {"feats": feats, "bad": bad_slices(lab, gt), "group": info.get("group")}
        print(f"patient{name} ({info.get('group')}): {int(rows[name]['bad'].sum())}/{rows[name]['bad'].size} bad",
              file=sys.stderr)
    if args.fit:
        x = np.concatenate([rows[n]["feats"].reshape(-1, len(qc.FEATURES)) for n in FIT])
        y = np.concatenate([rows[n]["bad"].ravel() for n in FIT]).astype(float)
        mean, scale = x.mean(0), x.std(0)
        scale[scale < 1e-9] = 1.0
        xs = np.clip((x - mean) / scale, -qc.CLIP, qc.CLIP)
        coef, icpt = fit_logistic(xs, y, l2=args.l2)
        s = xs @ coef + icpt
        thr = float(np.quantile(s, 1.0 - args.target_flagged))
        q = 1 - args.target_flagged
        note = f"ACDC {FIT[0]}, {FIT[1]}, …, {FIT[-1]} (ED/ES, shipped model); threshold: {q:.0%} quantile of their "
        note += f"scores; l2 {args.l2}"
        block = constants_block(mean, scale, coef, icpt, thr, note)
        print(block)
        qc.MEAN, qc.SCALE, qc.COEF, qc.INTERCEPT, qc.THRESHOLD = mean, scale, coef, icpt, thr
        if args.write:
            write_constants(block)
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
    for set_name, names in (("fit (10)", FIT), ("held-out (10)", HELD_OUT), ("all (20)", FIT + HELD_OUT)):
        names = [n for n in names if n in rows]
        for part, sel in (("", slice(None)), (" ED", 0), (" ES", 1)):
            flag = np.concatenate([qc.flag(qc.score_features(rows[n]["feats"]))[sel].ravel() for n in names])
            bad = np.concatenate([rows[n]["bad"][sel].ravel() for n in names])
            c, f, nb, ns = rates(flag, bad)
            out[f"{set_name}{part}"] = {"caught": c, "flagged": f, "bad": nb, "slices": ns}
            print(f"{set_name + part:<22}{c:>11.0%}{f:>10.0%}{nb:>7}{ns:>9}")
    for set_name, names in (("held-out (10)", HELD_OUT), ("all (20)", FIT + HELD_OUT)):
        names = [n for n in names if n in rows]
        sc = np.concatenate([qc.score_features(rows[n]["feats"]).ravel() for n in names])
        bad = np.concatenate([rows[n]["bad"].ravel() for n in names])
        pts = {q: rates(sc >= np.quantile(sc, 1.0 - q), bad)[0] for q in (0.10, 0.15, 0.20, 0.30)}
        out[f"{set_name} operating points"] = pts
        print(f"{set_name}: bad caught when flagging " + ", ".join(f"{q:.0%}: {c:.0%}" for q, c in pts.items()))
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
