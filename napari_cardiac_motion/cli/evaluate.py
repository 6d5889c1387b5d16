"""``napari-cardiac-motion evaluate --data DIR``: Dice, HD95, propagated-label Dice, EF and speed.

An echo model (``--model echo``, or any model whose description says ultrasound) is evaluated on a CAMUS folder
instead (:mod:`..evaluation.echo`): Dice per structure at ED/ES and on every labelled frame, HD95 in mm where the
pixel size is known, EF against the CAMUS reference; the validation patients by default (``--split``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..devices import DEVICE_CHOICES
from ..errors import InputError
from .predict import add_motion_arguments, motion_kwargs
from .progress import TqdmProgress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model (and the demons baseline) on ED/ES pairs",
                       description="Run the model on ED/ES pairs laid out like ACDC (a folder of patient "
                                   "folders with ED.nii.gz, ES.nii.gz, ED_gt.nii.gz, ES_gt.nii.gz, or one "
                                   "such folder) and report Dice, HD95 (mm, where spacing is known), "
                                   "propagated-label Dice, ejection fraction and seconds per pair. With an echo "
                                   "model (--model echo), DATA is a CAMUS folder (camus_fullres/, camus_edes224/) "
                                   "and its validation patients are scored.")
    p.add_argument("--data", required=True,
                   help="folder of patient folders, or one patient folder; for an echo model a CAMUS folder "
                        "(holding camus_fullres/ and/or camus_edes224/, or its parent)")
    p.add_argument("--model", default=None,
                   help="'default' (the shipped MR model, the default), 'echo' (the shipped echo model) or a "
                        "checkpoint file")
    p.add_argument("--split", default="val", choices=("val", "train", "all"),
                   help="echo only: which CAMUS patients (default val: the validation split training never uses)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="echo only: at most N camus_edes224 views (quick runs)")
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
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test-time augmentation of the segmentation (default: on for MR models, about 1.4× "
                        "the time; --no-tta for one pass; refused for echo)")
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
    from ..model_store import model_argument

    if args.threads:
        torch.set_num_threads(args.threads)
        try:  # the baseline gets the same number of threads as the model
            import SimpleITK as sitk

            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
        except ImportError:
            pass
    path = model_argument(args.model)
    if _echo_model(path):
        result, table = run_echo(args, path)
        print(table)
    elif args.cycles:
        from ..evaluation.cycle import evaluate_cycles, format_cycles

        with TqdmProgress("evaluate", unit="cine") as bar:
            result = evaluate_cycles(args.data, str(path), baseline=args.baseline, patients=args.patients,
                                     device=args.device, progress=bar, **motion_kwargs(args))
        print(format_cycles(result))
    else:
        _refuse_echo_data(args.data)
        with TqdmProgress("evaluate", unit="pair") as bar:
            result = evaluate(args.data, str(path), baseline=args.baseline, patients=args.patients,
                              device=args.device, progress=bar,
                              transform=args.transform, tta=args.tta, **motion_kwargs(args))
        print(format_table(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def _echo_model(path) -> bool:
    """Whether the checkpoint at ``path`` is an echo model (its description's modality)."""
    from ..model.checkpoint import read_checkpoint
    from ..model_description import describe

    return describe(read_checkpoint(path).get("metadata")).is_echo


def _refuse_echo_data(data: str) -> None:
    """An MR model on a CAMUS folder: one line with the fix."""
    from ..evaluation.echo_cases import echo_root

    if echo_root(data) is not None and not (Path(data) / "ED.nii.gz").exists():
        raise InputError(f"'{data}' holds CAMUS echo data but the model is an MR model; evaluate an echo model "
                         "on it (--model echo).")


def run_echo(args: argparse.Namespace, path) -> tuple[dict, str]:
    """The echo evaluation (:func:`..evaluation.echo.evaluate_echo`): ``(result, markdown table)``."""
    from ..evaluation.echo import evaluate_echo
    from ..evaluation.echo_report import format_echo_table
    from ..model import load_checkpoint
    from ..model_description import describe

    for flag, on in (("--cycles", args.cycles), ("--baseline", args.baseline), ("--transform", args.transform)):
        if on:
            raise InputError(f"{flag} is for MR evaluation; an echo model is evaluated on CAMUS ED/ES labels and "
                             "labelled half cycles without it.")
    if args.limit is not None and args.limit < 0:
        raise InputError(f"--limit must be 0 or more (got {args.limit}).")
    model, meta = load_checkpoint(path, device="cpu")
    with TqdmProgress("evaluate", unit="view") as bar:
        result = evaluate_echo(args.data, model, meta, describe(meta), split=args.split, patients=args.patients,
                               limit=args.limit, device=args.device, progress=bar, tta=args.tta,
                               **motion_kwargs(args))
    return result, format_echo_table(result)
