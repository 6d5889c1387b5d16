"""``napari-cardiac-motion predict INPUT --out DIR``: segment a cine and estimate its motion."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..atomic import atomic_write_json
from ..devices import DEVICE_CHOICES
from ..errors import InputError
from ..inference import predict_cine
from ..io import read_cine, write_nifti_flow, write_nifti_labels
from ..io.echo_nifti import is_clip_file, layout_for_modality, write_clip_labels
from ..model_description import ModelDescription, describe
from .progress import TqdmProgress


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment a cine and estimate its motion",
                       description="Segment every frame and slice of a cine (NIfTI file or DICOM folder) and "
                                   "estimate the motion of every frame to the end-diastolic frame.")
    p.add_argument("input", help="a NIfTI cine (.nii/.nii.gz, X×Y×Z×T) or a folder of DICOM files")
    p.add_argument("--out", required=True,
                   help="output folder (labels.nii.gz, flow.nii.gz, result.json, qc.json, measurements.json)")
    p.add_argument("--ed-frame", type=int, default=None,
                   help="end-diastolic frame index (default: largest predicted LV blood pool)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--model", default=None,
                   help="'default' (the shipped MR model, the default), 'echo' (the shipped echocardiography "
                        "model: a 2D+t apical clip in, the echo read-out out) or a model checkpoint file")
    p.add_argument("--layout", default="auto", choices=("auto", "volume", "2d+t"),
                   help="what the third axis of a 3D NIfTI/MetaImage file is: slices (volume) or time (2d+t, an "
                        "echo clip); auto decides from the header, and a model for ultrasound implies 2d+t")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test-time augmentation of the segmentation (default: on for MR models, about 1.4× "
                        "the time; --no-tta for one pass; refused for echo)")
    add_motion_arguments(p)
    p.add_argument("--slicer-displacement", action="store_true",
                   help="also write DIR/displacement/displacement_tNNN.nii.gz: per-frame displacement fields in "
                        "LPS mm that ITK and 3D Slicer read as transforms")
    p.add_argument("--dicom-seg", action="store_true",
                   help="also write DIR/dicom_seg/labels_tNNN.seg.dcm: the labels as a DICOM SEG series "
                        "referencing the source images (DICOM folder input only)")
    p.set_defaults(func=run)


def add_motion_arguments(p: argparse.ArgumentParser) -> None:
    """``--motion`` and ``--refine-steps`` (shared by predict and evaluate)."""
    p.add_argument("--motion", default="pairwise", choices=("pairwise", "recurrent"),
                   help="pairwise (default): each frame's motion from its own (ED, frame) pair; recurrent: "
                        "one recurrence over the whole cycle (drifts; for comparison only)")
    p.add_argument("--refine-steps", type=int, default=None, metavar="N",
                   help="test-time refinement steps of the motion (default: the model's default, "
                        "0 = off; see the model card)")
    p.add_argument("--fuse", type=float, default=None, metavar="W",
                   help="temporal consistency: weight 0–1 of the ED labels carried by the motion in each "
                        "frame's labels (default: the model card's; 0 = off)")


def motion_kwargs(args: argparse.Namespace) -> dict:
    """``predict_cine`` keyword arguments from :func:`add_motion_arguments`' options."""
    from ..motion_refine import RefineSettings

    kw: dict = {"motion_mode": getattr(args, "motion", "pairwise")}
    steps = getattr(args, "refine_steps", None)
    if steps is not None:
        if steps < 0:
            raise InputError(f"--refine-steps must be 0 or more, got {steps}.")
        kw["refine"] = RefineSettings(steps=steps)
    fuse = getattr(args, "fuse", None)
    if fuse is not None:
        if not 0.0 <= fuse < 1.0:
            raise InputError(f"--fuse must be in [0, 1), got {fuse}.")
        kw["fuse"] = fuse
    return kw


def run(args: argparse.Namespace) -> int:
    from ..inference import is_echo
    from ..model_store import load_model

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' exists and is not a folder; choose a folder for the outputs.")
    from ..io import dicom_seg  # DICOM SEG: checked before any work, written after the NIfTI outputs

    seg_source = dicom_seg.prepare_dicom_seg(args.input) if getattr(args, "dicom_seg", False) else None
    model, meta = load_model(args.model, device="cpu")
    description = describe(meta)
    echo = is_echo(description)
    layout = getattr(args, "layout", "auto")
    if layout == "auto":
        layout = layout_for_modality(description.modality)
    cine = read_cine(args.input, layout=layout)
    if echo and cine.shape[1] != 1:
        raise InputError(f"The echo model takes one apical 2D+t clip (one slice); {args.input} has {cine.shape[1]} "
                         "slices. Give an echo clip (X, Y, T), or use the MR model (--model default) for this cine.")
    with TqdmProgress("predict", unit="chunk") as bar:
        result = predict_cine(cine, model, device=args.device, ed_frame=args.ed_frame, progress=bar,
                              tta=getattr(args, "tta", None), description=description, **motion_kwargs(args))
    out.mkdir(parents=True, exist_ok=True)
    if echo and is_clip_file(args.input):
        write_clip_labels(out / "labels.nii.gz", result.labels, cine.affine, cine.spacing[1:])
    else:
        write_nifti_labels(out / "labels.nii.gz", result.labels, cine.affine, cine.spacing, cine.frame_interval_ms)
    write_nifti_flow(out / "flow.nii.gz", result.motion, cine.affine, cine.spacing, cine.frame_interval_ms)
    if seg_source is not None:
        dicom_seg.write_dicom_seg(out / dicom_seg.DICOM_SEG_DIR, result.labels, seg_source, meta)
    summary = result_summary(args, cine, result, meta, description)
    if getattr(args, "slicer_displacement", False):
        from ..io.nifti import write_slicer_displacement

        write_slicer_displacement(out / "displacement", result.motion, cine.affine)
    if result.qc is not None:
        atomic_write_json(out / "qc.json", result.qc.to_json())
    atomic_write_json(out / "result.json", summary)
    if echo:  # the echo read-out: single-plane Simpson volumes and EF, GLS from the motion
        from ..analysis.echo_prediction import echo_measurements_for_prediction

        atomic_write_json(out / "measurements.json",
                          echo_measurements_for_prediction(result, cine, meta, str(args.input), description))
    else:
        from ..analysis import measurements_for_prediction, report  # clinical read-out
        report.write_json(measurements_for_prediction(result, cine, meta, str(args.input)),
                          out / "measurements.json")
    print(json.dumps({k: summary[k] for k in ("ed_frame", "es_frame", "device", "seconds", "frames_per_second")}))
    return 0


def result_summary(args: argparse.Namespace, cine, result, meta: dict, description: ModelDescription) -> dict:
    """The content of ``result.json``."""
    return {
        "input": str(args.input),
        "shape_TZYX": list(cine.shape),
        "ed_frame": result.ed_frame,
        "es_frame": result.es_frame,
        "device": result.device,
        "seconds": round(result.seconds, 3),
        "frames_per_second": round(result.frames_per_second, 2),
        "model": {"name": meta.get("name"), "version": meta.get("version"), "path": meta.get("path"),
                  "modality": description.modality},
        # label value -> class name, from the model's description
        "classes": {str(v): n for v, n in description.names().items()},
        "lv_blood_pool_voxels": [int(v) for v in result.lv_volume_voxels],
        # the input box the full model ran on (outside it: labels 0, motion 0) and the model's grid
        "region": result.metadata.get("region"),
        "tta": bool(result.metadata.get("tta", False)),
        "motion": result.metadata.get("motion"),
        # [frame, slice] pairs the clean-up emptied (less than half a myocardial ring: the atrium)
        "valve_slices_emptied": [list(p) for p in result.metadata.get("valve_slices_emptied", [])],
        "clean_up": result.metadata.get("clean_up"),
        "warnings": list(getattr(cine, "warnings", []) or []),
        "modality": getattr(cine, "modality", None) or (description.modality if description.is_echo else None),
        "spacing_known": bool(getattr(cine, "spacing_known", True)),
        # quality control: how many (frame, slice) pairs are flagged and the worst score (details in qc.json)
        "qc": result.qc.summary() if result.qc is not None else None,
        "qc_note": result.metadata.get("qc_note"),
    }
