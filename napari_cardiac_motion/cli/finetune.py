"""``napari-cardiac-motion finetune INPUT --labels CORRECTIONS.nii.gz --out CKPT``: learn from corrections.

``CORRECTIONS.nii.gz`` has the image's ``(X, Y, Z, T)`` grid; a (frame, slice) whose voxels are all 255
is unlabelled, any other slice is a correction (labels 0–3). With an echo model (``--model echo``) INPUT is an
apical clip ``(X, Y, T)`` and CORRECTIONS its ``(X, Y, T)`` labels (as ``predict --model echo`` writes them):
a frame that is all 255 is unlabelled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..devices import DEVICE_CHOICES
from ..errors import InputError
from ..training.finetune import FinetuneSettings, finetune, labelled_mask
from ..io import read_cine, read_nifti_labels
from ..model_description import describe
from ..model_store import finetuned_metadata, load_model, save_model_to
from .progress import TqdmProgress


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = FinetuneSettings()
    p = sub.add_parser("finetune", help="fine-tune the model from corrected slices of one cine",
                       description="Fine-tune the joint model on one cine from corrected slices: segmentation "
                                   "loss on the corrected slices, motion loss on every frame, and the corrected "
                                   "labels carried through the motion to the other frames.")
    p.add_argument("input", help="the cine (NIfTI X×Y×Z×T or a DICOM folder)")
    p.add_argument("--labels", required=True,
                   help="corrections NIfTI on the image's X×Y×Z×T grid; slices that are all 255 are unlabelled")
    p.add_argument("--out", required=True, help="output checkpoint (.pt)")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimisation steps (default {d.steps})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr:g})")
    p.add_argument("--guard", default=str(d.guard), choices=("teacher", "l2sp", "none"),
                   help=f"regulariser against forgetting (default {d.guard})")
    p.add_argument("--no-check", action="store_true",
                   help="skip the held-out check (by default every third corrected slice is held out and the "
                        "fine-tuned model is kept only if it is not worse there than the starting model)")
    p.add_argument("--ed-frame", type=int, default=None,
                   help="end-diastolic frame (default: largest predicted LV blood pool)")
    p.add_argument("--model", default=None,
                   help="starting model: 'default' (the shipped MR model, the default), 'echo' (the shipped echo "
                        "model; INPUT an apical clip X×Y×T) or a checkpoint file")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and out.is_dir():
        raise InputError(f"--out '{out}' is a folder; give a checkpoint file name such as model.pt.")
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1 (got {args.steps}).")
    if not args.lr > 0:
        raise InputError(f"--lr must be positive (got {args.lr}).")
    model, meta = load_model(args.model, device="cpu")
    description = describe(meta)
    cine, corr = read_inputs(args.input, args.labels, description)
    if not labelled_mask(corr).any():
        raise InputError(
            f"{Path(args.labels).name} has no labelled slice (every voxel is 255 = unlabelled); label at "
            f"least one (frame, slice) with 0–{description.max_value}."
        )
    guard = None if args.guard == "none" else args.guard
    with TqdmProgress("finetune", unit="step") as bar:
        def progress(step, total, losses):
            bar(step, total, f"loss {losses['total']:.3f}")
        settings = FinetuneSettings(check=not args.no_check)
        new_model, hist = finetune(model, cine, corr, steps=args.steps, lr=args.lr, device=args.device,
                                   progress=progress, guard=guard, ed_frame=args.ed_frame, settings=settings,
                                   description=description)
    check = hist["check"]
    metadata = finetuned_metadata(meta, cine.name, hist)
    path = save_model_to(new_model, out, metadata, description)
    first, last = hist["losses"][0]["total"], hist["losses"][-1]["total"]
    print(json.dumps({"out": str(path), "steps": hist["steps"], "corrected_slices": len(hist["corrected"]),
                      "ed_frame": hist["ed_frame"], "loss_first": round(first, 4), "loss_last": round(last, 4),
                      "seconds": round(hist["seconds"], 2),
                      "kept": None if check is None else check["kept"],
                      "note": ("the starting model was kept: fine-tuning did not improve the held-out check"
                               if hist["kept_original"] else "")}))
    return 0


def read_inputs(image: str, labels: str, description) -> tuple:
    """``(cine (T, Z, Y, X), corrections (T, Z, Y, X) uint8)``: an MR cine and its X×Y×Z×T labels, or for an echo
    model an apical clip and its X×Y×T labels (Z = 1); a one-line error when the grids differ."""
    from ..io.echo_nifti import layout_for_modality, read_nifti_label_frames

    cine = read_cine(image, layout=layout_for_modality(description.modality))
    if description.is_echo:
        if cine.shape[1] != 1:
            raise InputError(f"The echo model takes one apical 2D+t clip (one slice); {image} has {cine.shape[1]} "
                             "slices.")
        corr = read_nifti_label_frames(labels, layout="2d+t").data[:, None]
        grid = "X×Y×T"
        shapes = (corr.shape[::-1][:2] + corr.shape[:1], cine.shape[::-1][:2] + cine.shape[:1])
    else:
        corr = read_nifti_labels(labels)
        grid = "X×Y×Z×T"
        shapes = (corr.shape[::-1], cine.shape[::-1])
    if corr.shape != cine.shape:
        raise InputError(
            f"The corrections file {Path(labels).name} has shape {'×'.join(map(str, shapes[0]))} ({grid}) but the "
            f"image {Path(image).name} has shape {'×'.join(map(str, shapes[1]))}; the corrections must be on the "
            "image's grid."
        )
    return cine, corr
