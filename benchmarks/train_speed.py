"""Training throughput (samples/s) of the joint model's training step on this machine.

    python benchmarks/train_speed.py [--device cpu] [--steps 20] [--batch-size 8] [--crop 112]
                                     [--configs landed,fast] [--threads 2]

A sample is one training sequence (an ED/ES pair of one slice, as in the ACDC batches). Each
configuration runs ``--steps`` real optimiser steps (forward, the weak-supervision losses, backward,
Adam) on synthetic ACDC-like batches after two warm-up steps, interleaved with the others so that a
machine busy with other work slows them alike; prints seconds per step and samples per second.

Configurations:
* ``landed`` — what the trainer did before (float32, contiguous tensors, batches made in the training
  process, every parameter learning);
* ``cl`` — channels-last tensors;
* ``compile`` — ``torch.compile`` of the sequence API (first steps include compilation);
* ``workers`` — batches made in a DataLoader worker process (overlaps augmentation with compute);
* ``motion`` — only the motion branch learns (the fine-tuning mode ``--train-parts motion``);
* ``fast`` — ``cl`` + ``workers`` (+ AMP on CUDA): the defaults a GPU run gets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_cardiac_motion.devices import resolve_device
from napari_cardiac_motion.model.network import JointMotionSegNet
from napari_cardiac_motion.model.losses import allowed_table
from napari_cardiac_motion.training.sampling import epoch_batches
from napari_cardiac_motion.training.train import TrainConfig, batch_losses, combine, set_train_mode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic cases are test data
from synthetic import synthetic_acdc_like  # noqa: E402


class Runner:
    def __init__(self, name: str, cases, args, device):
        self.name, self.device = name, device
        cfg = TrainConfig(batch_size=args.batch_size, crop=args.crop, use_sunnybrook=False, seed=0,
                          workers=1 if name in ("workers", "fast") else 0,
                          train_parts="motion" if name == "motion" else "all")
        self.cfg = cfg
        torch.manual_seed(0)
        self.model = JointMotionSegNet().to(device)
        if name == "motion":
            for mod in (self.model.encoder, self.model.seg_fuse, self.model.seg_head):
                mod.requires_grad_(False)
        if name in ("cl", "fast"):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.fwd = torch.compile(self.model.forward_sequence) if name == "compile" else self.model.forward_sequence
        self.amp = device.type == "cuda" and name == "fast"
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.table = allowed_table(device)
        set_train_mode(self.model, cfg.train_parts)
        self.batches = epoch_batches(cases, [], cfg, 0, 10**6, [0, hash(name) % 1000])
        self.times: list[float] = []

    def step(self, record: bool) -> None:
        t0 = time.perf_counter()
        images, codes, is_sb = next(self.batches)
        images, codes = images.to(self.device), codes.to(self.device)
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
            losses = batch_losses(self.model, images, codes, self.cfg, self.table, use_dice=True, fwd=self.fwd)
            loss = combine(losses, self.cfg)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if record:
            self.times.append(time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=112)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="landed,cl,workers,fast")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cases = synthetic_acdc_like(n=6, size=224, n_slices=8, seed=0)
    runners = [Runner(n, cases, args, device) for n in args.configs.split(",")]
    for r in runners:
        for _ in range(args.warmup):
            r.step(record=False)
    for _ in range(args.steps):
        for r in runners:
            r.step(record=True)
    out = {"device": str(device), "threads": torch.get_num_threads(), "batch_size": args.batch_size,
           "crop": args.crop, "load_1min": round(__import__("os").getloadavg()[0], 2), "configs": {}}
    base = None
    for r in runners:
        med = float(np.median(r.times))
        sps = args.batch_size / med
        base = base or sps
        out["configs"][r.name] = {"s_per_step_median": round(med, 3), "samples_per_s": round(sps, 2),
                                  "vs_first": round(sps / base, 2)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
