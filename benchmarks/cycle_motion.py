"""Motion over whole cardiac cycles, and ED→ES propagation and strain per ACDC group.

    python benchmarks/cycle_motion.py [--model CKPT] [--motion pairwise|recurrent] [--refine-steps N]
                                      [--cines SC-HF-I-4 SC-HF-I-5 patient090] [--acdc] [--no-demons]
                                      [--json OUT.json]

Part 1, full cines (default: the Sunnybrook validation cines SC-HF-I-4 and -5 and ACDC patient090, the
one ACDC full cine; SC-HF-I-1 and -2 were trained on): per cine the mean displacement of the ED
myocardium per frame (a curve, cycle order from ED), the displacement and the carried-label overlap at the
last frame of the cycle, strain at the last frame and its roughness, and ED→ES propagation of the expert
labels through the whole sequence next to SimpleITK demons on the same two frames.

Part 2 (``--acdc``), ED/ES pairs of the 20 ACDC validation patients (four per group, never trained on by
the shipped weights): propagation per structure next to demons, and the ED→ES global circumferential and
radial strain per group (published feature-tracking GCS of normal hearts: about −27 % to −15 %).

Targets (the motion issue): last-frame displacement ≤ 0.6 mm, carried overlap ≥ 0.94, strain back within
3 (radial) / 2 (circumferential) points, propagation ≥ demons + 0.05 on ACDC and ≥ demons on the cines.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
VALIDATION = [f"patient{n:03d}" for n in (1, 5, 11, 15, 21, 25, 31, 35, 41, 45, 51, 55, 61, 65, 71, 75, 81, 85, 91, 95)]


def main() -> None:
    from napari_cardiac_motion.evaluation.cycle import evaluate_cycles, format_cycles
    from napari_cardiac_motion.evaluation.evaluate import evaluate, format_table
    from napari_cardiac_motion.motion_refine import RefineSettings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--model", default=None)
    ap.add_argument("--motion", default="pairwise", choices=("pairwise", "recurrent"))
    ap.add_argument("--refine-steps", type=int, default=None)
    ap.add_argument("--cines", nargs="+", default=["SC-HF-I-4", "SC-HF-I-5", "patient090"])
    ap.add_argument("--acdc", action="store_true", help="also the 20 ACDC validation ED/ES pairs")
    ap.add_argument("--no-demons", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    except ImportError:
        pass
    data = Path(args.data)
    if not data.is_dir():
        raise SystemExit(f"data folder {data} not found (the shared data lie beside the repository)")
    kw: dict = {"motion_mode": args.motion}
    if args.refine_steps is not None:
        kw["refine"] = RefineSettings(steps=args.refine_steps)
    baseline = None if args.no_demons else "demons"
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args)}
    for name in args.cines:
        folder = data / ("acdc" if name.startswith("patient") else "sunnybrook") / name
        res = evaluate_cycles(folder, args.model, baseline=baseline, device="cpu", **kw)
        print(format_cycles(res), flush=True)
        print()
        out.setdefault("cines", []).extend(res["cases"])
    if args.acdc:
        res = evaluate(data / "acdc", args.model, baseline=baseline, patients=VALIDATION, device="cpu", **kw)
        print(format_table(res), flush=True)
        out["acdc"] = res
    if args.json:
        from napari_cardiac_motion.evaluation.evaluate import write_json

        write_json(out, args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
