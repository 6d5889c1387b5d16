"""Inference speed of ``predict_cine`` on a 256×256×11×20 cine with a given ED frame (warm).

    python benchmarks/inference_speed.py [--input CINE.nii.gz] [--device cpu|cuda|mps|auto]
                                         [--repeats 3] [--threads N] [--no-tta] [--flops]
                                         [--motion pairwise|recurrent] [--refine-steps N] [--fuse W]

Default input: ``../shared/data/sunnybrook/SC-HF-I-5/sa.nii.gz`` (256×256×11×20, 1.37 mm pixels) when
present, else a synthetic cine of that size with 1.37 mm pixels. Prints the warm wall time (median of
``--repeats`` runs after one warm-up), the process CPU time, frames per second, the region processed and
(``--flops``) the FLOPs of one pass counted with torch's FlopCounterMode. Target: ≤ 8 s on
the project's 2-core CPU, ≤ 0.1 s on a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from napari_cardiac_motion.cine import Cine
from napari_cardiac_motion.cli.predict import add_motion_arguments, motion_kwargs
from napari_cardiac_motion.inference import predict_cine
from napari_cardiac_motion.model import load_checkpoint

DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sunnybrook" / "SC-HF-I-5" / "sa.nii.gz"


def synthetic(shape=(20, 11, 256, 256), spacing=(8.0, 1.367, 1.367)) -> Cine:
    t, z, h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    data = np.zeros(shape, np.float32)
    for k in range(t):
        r = 18 + 5 * np.cos(2 * np.pi * k / t)
        rr = np.hypot(yy - h / 2 - 10, xx - w / 2 + 5)
        data[k] = (300 * (rr < r) + 120 * ((rr >= r) & (rr < r + 7)) + 60)[None]
    data += np.random.default_rng(0).normal(0, 10, data.shape).astype(np.float32)
    return Cine(data, spacing, 40.0, name="synthetic")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--ed-frame", type=int, default=0)
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="flip test-time augmentation on/off (default: on for MR models)")
    ap.add_argument("--flops", action="store_true")
    add_motion_arguments(ap)  # --motion, --refine-steps, --fuse (as predict)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.input:
        from napari_cardiac_motion.io import read_cine
        cine = read_cine(args.input)
    elif DEFAULT.exists():
        from napari_cardiac_motion.io import read_cine
        cine = read_cine(DEFAULT)
    else:
        cine = synthetic()
    model, meta = load_checkpoint(args.model)
    kw = motion_kwargs(args)
    run = lambda: predict_cine(cine, model, device=args.device, ed_frame=args.ed_frame, tta=args.tta, **kw)  # noqa: E731
    res = run()  # warm-up (and CUDA context, cuDNN autotune)
    walls, cpus = [], []
    for _ in range(args.repeats):
        if res.device.startswith("cuda"):
            torch.cuda.synchronize()
        c0, w0 = time.process_time(), time.perf_counter()
        res = run()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    out = {
        "input": cine.name, "shape_TZYX": list(cine.shape), "spacing_mm": [round(s, 4) for s in cine.spacing],
        "device": res.device, "threads": torch.get_num_threads(), "tta": res.metadata.get("tta"),
        "wall_s_median": round(statistics.median(walls), 3), "wall_s_all": [round(w, 3) for w in walls],
        "cpu_s_median": round(statistics.median(cpus), 3),
        "frames_per_second": round(cine.shape[0] * cine.shape[1] / statistics.median(walls), 1),
        "region": res.metadata.get("region"), "motion": res.metadata.get("motion"), "model": meta.get("name"), "load_1min": round(__import__("os").getloadavg()[0], 2),
    }
    if args.flops:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as fc:
            predict_cine(cine, model, device=args.device, ed_frame=args.ed_frame, tta=args.tta, **kw)
        out["gflop"] = round(fc.get_total_flops() / 1e9, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
