"""``napari-cardiac-motion measure-echo --a2c FILE --a4c FILE --out DIR``: LV volumes and EF from echo labels."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "measure-echo", help="LV volumes and ejection fraction from apical 2- and 4-chamber echo labels",
        description="Simpson's method of discs (20 discs; biplane with both views, single plane with one) on "
                    "LV cavity labels (label 1 by default; 2 myocardium and 3 left atrium locate the mitral "
                    "annulus). FILE: one label clip (X, Y, T) as NIfTI or MetaImage, or one 2D label file per "
                    "frame. ED/ES: the given 0-based frame indices, else the largest / smallest LV cavity. "
                    "With a view's motion (--a2c-flow/--a4c-flow: the flow.nii.gz that predict --model echo "
                    "wrote for these labels) the global longitudinal strain is filled in. "
                    "Writes DIR/measurements.json.")
    p.add_argument("--a2c", nargs="+", default=None, metavar="FILE", help="2-chamber label clip or frames")
    p.add_argument("--a4c", nargs="+", default=None, metavar="FILE", help="4-chamber label clip or frames")
    p.add_argument("--out", required=True, help="output folder (measurements.json)")
    for view in ("a2c", "a4c"):
        for phase in ("ed", "es"):
            p.add_argument(f"--{view}-{phase}", type=int, default=None, metavar="N",
                           help=f"0-based {phase.upper()} frame of the {view.upper()} labels")
    for view in ("a2c", "a4c"):
        p.add_argument(f"--{view}-flow", default=None, metavar="FLOW",
                       help=f"motion of the {view.upper()} clip (flow.nii.gz of predict): gives its GLS")
    p.add_argument("--lv-label", type=int, default=1, help="label value of the LV cavity (default 1)")
    p.add_argument("--pixel-mm", type=float, default=None,
                   help="pixel size in mm when the files have none (e.g. a video's labels)")
    p.add_argument("--length-rule", default="camus", choices=("camus", "per-frame"),
                   help="disc height: the longest long axis for ED and ES (CAMUS, default) or each instant's "
                        "own (ASE)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.echo import echo_view_from_files, measure_echo
    from ..analysis.echo_prediction import add_gls_from_flows
    from ..atomic import atomic_write_json
    from ..errors import InputError

    if not args.a2c and not args.a4c:
        raise InputError("Give --a2c FILE, --a4c FILE or both.")
    views = {}
    for view in ("a2c", "a4c"):
        if getattr(args, f"{view}_flow", None) and not getattr(args, view):
            raise InputError(f"--{view}-flow needs the {view.upper()} labels it moves: give --{view} FILE too.")
        files = getattr(args, view)
        if files:
            views[view] = echo_view_from_files(view.upper(), files, getattr(args, f"{view}_ed"),
                                               getattr(args, f"{view}_es"), args.pixel_mm)
    result = measure_echo(**views, lv=args.lv_label, length_rule=args.length_rule)
    add_gls_from_flows(result, views, {v: getattr(args, f"{v}_flow", None) for v in views}, args.lv_label)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = atomic_write_json(out / "measurements.json", result)
    ef = result["lv_ef_percent"]
    vols = ("" if result["lv_edv_ml"] is None
            else f"EDV {result['lv_edv_ml']:.1f} ml, ESV {result['lv_esv_ml']:.1f} ml, ")
    gls = result["gls_percent"]
    print(f"{result['method']}: {vols}EF {'n/a' if ef is None else f'{ef:.1f} %'}"
          + ("" if gls is None else f", GLS {gls:.1f} %"))
    for key, v in result["views"].items():
        print(f"  {key.upper()}: ED frame {v['ed_frame']}, ES frame {v['es_frame']} ({v['ed_es_from']})")
    if not result["spacing_known"]:
        print(f"  note: {result['spacing_note']}")
    print(f"wrote {path}")
    return 0

