"""Peak memory of fine-tuning a large cine (target: a 512×512×20×50 cine fine-tunes under 4 GB).

Each measurement runs in a fresh child process, so peaks do not mix; the child prints its peak
resident set size (``ru_maxrss``, which includes the cine itself and the Python/torch runtime) and the
peak after building the cine (the floor any operation on it starts from).

The cine is synthetic (float32, as :class:`~napari_cardiac_motion.cine.Cine` stores every image), a
bright disc in a darker ring moving over the cycle, 0.7 mm pixels, 8 mm slices; the corrections are the
disc's labels on the ED frame of every third slice (255 elsewhere). Fine-tuning runs with the default
settings (held-out check on) on the CPU.

Usage::

    python benchmarks/memory_benchmark.py [--shape T,Z,Y,X] [--steps N] [--what finetune]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _make(shape: tuple[int, int, int, int]):
    import numpy as np

    from napari_cardiac_motion.cine import Cine
    from napari_cardiac_motion.conventions import UNLABELLED

    n_t, n_z, h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    data = np.empty(shape, np.float32)
    corr = np.full(shape, UNLABELLED, np.uint8)
    rng = np.random.default_rng(0)
    for t in range(n_t):
        r = np.hypot(yy - h / 2, xx - w / 2 - 4 * np.sin(2 * np.pi * t / n_t))
        radius = 30.0 - 8 * np.sin(np.pi * t / n_t)
        lab = np.where(r < radius, 1, np.where(r < radius + 12, 2, 0)).astype(np.uint8)
        frame = np.where(lab == 1, 900.0, np.where(lab == 2, 300.0, 100.0)).astype(np.float32)
        for z in range(n_z):
            data[t, z] = frame + rng.normal(0, 20, (h, w)).astype(np.float32)
            if t == 0 and z % 3 == 0:
                corr[t, z] = lab
    cine = Cine(data=data, spacing=(8.0, 0.7, 0.7), frame_interval_ms=40.0, name="synthetic")
    return cine, corr


def child(what: str, shape: tuple[int, int, int, int], steps: int) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    cine, corr = _make(shape)
    floor = _peak_mb()
    t0 = time.perf_counter()
    if what == "finetune":
        from napari_cardiac_motion.model import load_checkpoint
        from napari_cardiac_motion.training.finetune import finetune

        model, _ = load_checkpoint(None, device="cpu")
        _, hist = finetune(model, cine, corr, steps=steps, ed_frame=0, device="cpu")
        extra = {"kept": (hist["check"] or {}).get("kept"), "region": hist["region"]["model_grid_hw"]}
    else:
        raise SystemExit(f"unknown --what {what!r}")
    print(json.dumps({"what": what, "shape_TZYX": list(shape), "cine_MB": round(cine.data.nbytes / 2**20),
                      "peak_after_building_cine_MB": round(floor), "peak_MB": round(_peak_mb()),
                      "seconds": round(time.perf_counter() - t0, 1), **extra}), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="20,50,512,512", help="T,Z,Y,X (default 20,50,512,512)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--what", default="finetune", help="comma-separated: finetune")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    if len(shape) != 4:
        p.error("--shape needs four numbers T,Z,Y,X")
    if args.child:
        child(args.what, shape, args.steps)
        return 0
    rc = 0
    for what in args.what.split(","):
        r = subprocess.run([sys.executable, __file__, "--child", "--what", what, "--shape", args.shape,
                            "--steps", str(args.steps)], capture_output=True, text=True)
        out = r.stdout.strip().splitlines()
        print(out[-1] if out and r.returncode == 0 else f"{what}: failed (exit {r.returncode})\n{r.stderr[-2000:]}",
              flush=True)
        rc = rc or r.returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
