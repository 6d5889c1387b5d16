"""``napari-cardiac-motion evaluate --data DIR``: Dice, HD95, propagated-label Dice, EF and speed."""

from __future__ import annotations

import argparse

from ..devices import DEVICE_CHOICES
from .predict import add_motion_arguments, motion_kwargs
from .progress import TqdmProgress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model (and the demons baseline) on ED/ES pairs",
                       description="Run the model on ED/ES pairs laid out like ACDC (a folder of patient "
                                   "folders with ED.nii.gz, ES.nii.gz, ED_gt.nii.gz, ES_gt.nii.gz, or one "
                                   "such folder) and report Dice, HD95 (mm, where spacing is known), "
                                   "propagated-label Dice, ejection fraction and seconds per pair.")
    p.add_argument("--data", required=True, help="folder of patient folders, or one patient folder")
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--baseline", default=None, choices=("demons",),
                   help="also run SimpleITK diffeomorphic demons (optional extra 'baseline')")
    p.add_argument("--json", default=None, help="write the full results to this JSON file")
    p.add_argument("--patients", nargs="+", default=None,
                   help="only these patient folders (e.g. patient001 or 001)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--transform", default=None,
                   help="re-sample every scan first: scale:F (pixels F× larger, e.g. scale:0.6) or "
                        "offcentre:N (padded into an N×N field, heart off-centre)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation of the segmentation")
    p.add_argument("--cycles", action="store_true",
                   help="evaluate motion over whole cycles instead: DATA holds full cines with reference "
                        "labels (Sunnybrook folders: sa.nii.gz, labels.nii.gz, info.json; or ACDC folders with "
                        "cine.nii.gz); reports the displacement curve, last-frame displacement and carried-label "
                        "overlap, strain roughness and ED→ES propagation through the sequence")
    add_motion_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation.evaluate import evaluate, format_table, write_json

    if args.threads:
        torch.set_num_threads(args.threads)
        try:  # the baseline gets the same number of threads as the model
            import SimpleITK as sitk

            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
        except ImportError:
            pass
    if args.cycles:
        from ..evaluation.cycle import evaluate_cycles, format_cycles

        with TqdmProgress("evaluate", unit="cine") as bar:
            result = evaluate_cycles(args.data, args.model, baseline=args.baseline, patients=args.patients,
                                     device=args.device, progress=bar, **motion_kwargs(args))
        print(format_cycles(result))
    else:
        with TqdmProgress("evaluate", unit="pair") as bar:
            result = evaluate(args.data, args.model, baseline=args.baseline, patients=args.patients,
                              device=args.device, progress=bar,
                              transform=args.transform, tta=args.tta, **motion_kwargs(args))
        print(format_table(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0
