"""Command line: ``napari-cardiac-motion {predict,train,evaluate,finetune,batch,measure-echo} ...``.

Each sub-command lives in its own module exposing ``add_parser(subparsers)`` and ``run(args) -> int``.
Errors meant for users (:class:`CardiacMotionError`) end the program with a one-line message and
exit code 2; nothing else is caught, so bugs still show their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import CardiacMotionError

SUBCOMMANDS = ("predict", "train", "evaluate", "finetune", "batch", "measure-echo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-cardiac-motion",
        description="Joint motion estimation and segmentation of cardiac cine MR.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        module_name = f"{__name__}.{name.replace('-', '_')}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-cardiac-motion`` console script."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by train in the checkpoint
    try:
        return int(args.func(args) or 0)
    except CardiacMotionError as exc:
        print(f"napari-cardiac-motion {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-cardiac-motion {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
