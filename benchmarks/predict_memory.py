"""Peak memory of ``predict_cine`` on a 512×512×20×50 cine (target: under 4 GB).

    python benchmarks/predict_memory.py [--shape 50,20,512,512] [--threads 2]

The cine is real anatomy: Sunnybrook SC-HF-I-4 (``../shared/data``) re-sampled to 512² (0.64 mm pixels)
and repeated to 20 slices and 50 frames (a synthetic moving ring when the shared data are absent). It is
made in a child process, which then runs ``predict_cine`` with a given ED frame; prints the child's peak
resident memory (``ru_maxrss``), the memory of the input cine alone, and the seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
shape = tuple(int(v) for v in sys.argv[1].split(","))
torch.set_num_threads(int(sys.argv[2]))
from napari_cardiac_motion.cine import Cine
from napari_cardiac_motion.inference import predict_cine
from napari_cardiac_motion.model import load_checkpoint
src = sys.argv[3]
t, z, h, w = shape
if src:
    from napari_cardiac_motion.io import read_cine
    import torch.nn.functional as F
    c = read_cine(src)
    small = torch.from_numpy(c.data[:, c.shape[1] // 2 - 2: c.shape[1] // 2 + 2])  # 4 mid slices
    big = F.interpolate(small.reshape(-1, 1, *small.shape[-2:]), size=(h, w), mode="bilinear",
                        align_corners=False).reshape(small.shape[0], small.shape[1], h, w).numpy()
    data = np.empty(shape, np.float32)
    for k in range(t):
        data[k] = np.resize(big[k % big.shape[0]], (z, h, w))
    spacing = (c.spacing[0], c.spacing[1] * c.shape[2] / h, c.spacing[2] * c.shape[3] / w)
    del big, small, c
else:
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    data = np.empty(shape, np.float32)
    for k in range(t):
        r = 40 + 10 * np.cos(2 * np.pi * k / t)
        rr = np.hypot(yy - h / 2, xx - w / 2)
        data[k] = (300.0 * (rr < r) + 120.0 * ((rr >= r) & (rr < r + 14)) + 60.0)[None]
    spacing = (8.0, 0.64, 0.64)
cine = Cine(data, spacing, 40.0)
del data
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model, _ = load_checkpoint(None)
import threading
trace, stop = [], threading.Event()
def sample():
    page = __import__("os").sysconf("SC_PAGE_SIZE")
    while not stop.is_set():
        with open("/proc/self/statm") as fh:
            trace.append(int(fh.read().split()[1]) * page / 2**20)
        time.sleep(0.5)
th = threading.Thread(target=sample, daemon=True)
th.start()
t0 = time.perf_counter()
res = predict_cine(cine, model, device="cpu", ed_frame=0)
stop.set()
n = len(trace)
print(json.dumps({"seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb_before_predict": round(base / 1024),
                  "rss_mb_timeline": [round(trace[int(i * (n - 1) / 9)]) for i in range(10)] if n else [],
                  "cine_mb": round(cine.data.nbytes / 2**20), "labels_mb": round(res.labels.nbytes / 2**20),
                  "motion_mb": round(res.motion.nbytes / 2**20), "region": res.metadata["region"]["input_box_yx"]}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="50,20,512,512", help="T,Z,Y,X")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    src = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sunnybrook" / "SC-HF-I-4" / "sa.nii.gz"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, args.shape, str(args.threads), str(src) if src.exists() else ""],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        sys.exit(out.returncode)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    child.update({"shape_TZYX": args.shape, "peak_rss_mb": round(peak), "wall_s": round(time.perf_counter() - t0, 1),
                  "target_mb": 4096, "met": peak < 4096})
    print(json.dumps(child, indent=1))


if __name__ == "__main__":
    main()
