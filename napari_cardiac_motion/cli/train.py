"""``napari-cardiac-motion train --data DIR --out CKPT``: train the joint model (weak supervision)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from ..devices import DEVICE_CHOICES
from ..errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the joint motion/segmentation model",
                       description="Train the joint model on ACDC-like ED/ES stacks and Sunnybrook cines "
                                   "(labels only on ED/ES; motion learnt without labels). The validation "
                                   "patients (ACDC 001, 011, ..., 091; Sunnybrook SC-HF-I-4/5) are never "
                                   "trained on. A checkpoint is written atomically after every epoch.")
    p.add_argument("--data", required=True,
                   help="shared data folder (with acdc/ and sunnybrook/) or an ACDC-like folder of patients")
    p.add_argument("--out", required=True, help="checkpoint to write (.pt)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="default: one pass over the training slices in both directions")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=128, help="training crop size in pixels")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--resume", default=None, help="checkpoint written by train to continue from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget-min", type=float, default=None,
                   help="stop cleanly (validate and save) when this wall-clock budget is reached")
    p.add_argument("--log", default=None, help="also append the log lines to this file")
    p.add_argument("--mode", default="joint", choices=("joint", "alternating"))
    p.add_argument("--acdc-limit", type=int, default=None, help="use only the first N training patients")
    p.add_argument("--no-sunnybrook", action="store_true", help="train on the ACDC-like data only")
    p.add_argument("--provisional", action="store_true", help="mark the checkpoint as provisional")
    p.add_argument("--no-validate", action="store_true",
                   help="skip the per-epoch validation (e.g. on a GPU machine whose data pack holds only the "
                        "training patients); evaluate the checkpoint afterwards")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint's weights (fine-tuning; fresh optimiser, new schedule)")
    p.add_argument("--workers", type=int, default=0,
                   help="data-loading worker processes (GPU: 4–8 keeps it fed; 0: in the training process)")
    p.add_argument("--no-amp", action="store_true", help="CUDA: train in float32 (default: mixed precision)")
    p.add_argument("--channels-last", default=None, choices=("on", "off"),
                   help="channels-last memory format (default: on for CUDA and CPU, off for MPS)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA)")
    p.add_argument("--train-parts", default="all", choices=("all", "motion"),
                   help="motion: train only the motion branch (encoder and segmentation frozen)")
    p.add_argument("--w-joint", type=float, default=None, help="weight of the label-propagation (joint) loss")
    p.add_argument("--w-seg", type=float, default=None, help="weight of the segmentation loss")
    p.add_argument("--w-time", type=float, default=None,
                   help="weight of the temporal term on whole-cycle cine sequences (0: off)")
    p.add_argument("--w-teacher", type=float, default=None,
                   help="weight of the mean-teacher consistency on unlabelled cine frames (0: no teacher)")
    p.add_argument("--w-carry", type=float, default=None,
                   help="weight of the carried consistency on cine sequences: every frame's segmentation against "
                        "the ED segmentation moved there by the motion (default 0: off)")
    p.add_argument("--dataset", default="mr", choices=("mr", "echo"),
                   help="mr: ACDC + Sunnybrook cines (short-axis MR); echo: CAMUS apical views (labels LV cavity, "
                        "LV myocardium, left atrium; --crop 160 or more fits a whole ventricle)")
    p.add_argument("--cine-every", type=int, default=None,
                   help="one cine (Sunnybrook) batch every N steps, the other steps ED/ES pairs (default 4; 0: never; "
                        "1: every step, i.e. cines only and no ED/ES pair at all)")
    p.add_argument("--cine-batch", type=int, default=None,
                   help="cine sequences per cine batch (default 2). With --batch-size 32 on a GPU, 8 keeps the "
                        "whole-cycle terms' share of the CPU recipe (batch 8, 2 cines every 4 steps)")
    p.add_argument("--basal-weight", type=float, default=None,
                   help="draw the two most basal ACDC slices and the one above the base this many times as often "
                        "as the others (default 1; basal slices are the largest single error at ES)")
    p.add_argument("--flips", default="auto", choices=("auto", "on", "off"),
                   help="random flips in augmentation (auto: on for MR, off for echo, whose apex is always on top)")
    p.add_argument("--pixel-mm", type=float, default=None,
                   help="in-plane pixel size (mm) the model is trained at and will work at (default: MR 1.5, echo "
                        "the echo grid; with --init the start's weights are kept, the grid is this one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.train import TrainConfig, train

    cfg = TrainConfig(
        data=args.data, out=args.out, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size, crop=args.crop, lr=args.lr, seed=args.seed, device=args.device,
        time_budget_min=args.time_budget_min, resume=args.resume, log_file=args.log, mode=args.mode,
        acdc_limit=args.acdc_limit, use_sunnybrook=not args.no_sunnybrook, provisional=args.provisional,
        num_threads=args.threads, init=args.init, workers=args.workers, amp=not args.no_amp,
        channels_last=None if args.channels_last is None else args.channels_last == "on", compile=args.compile,
        train_parts=args.train_parts, dataset=args.dataset, validate=not args.no_validate,
        flips=None if args.flips == "auto" else args.flips == "on",
        command="napari-cardiac-motion " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:])),
    )
    for name, key in (("w_joint", "w_joint"), ("w_seg", "w_seg"), ("w_time", "w_time"), ("w_teacher", "w_teacher"),
                      ("w_carry", "w_carry"), ("cine_every", "sunnybrook_every"), ("cine_batch", "sb_batch"),
                      ("basal_weight", "basal_weight")):
        if getattr(args, name) is not None:
            setattr(cfg, key, getattr(args, name))
    if args.pixel_mm is not None:
        if not 0.25 <= args.pixel_mm <= 5.0:
            raise InputError(f"--pixel-mm {args.pixel_mm} is outside 0.25–5 mm; the shipped models work at "
                             "1.5 mm (MR) and 1 mm (echo).")
        cfg.model = {**cfg.model, "pixel_mm": float(args.pixel_mm)}
    _, meta = train(cfg)
    print(json.dumps({"out": args.out, "steps": meta["steps"], "train_seconds": meta["train_seconds"],
                      "val": meta.get("val", {}), "stop_reason": meta.get("stop_reason")}))
    return 0
