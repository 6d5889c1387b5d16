"""Average the weights of checkpoints fine-tuned from one start ("model soup"; see
:func:`napari_cardiac_motion.model.checkpoint.average_checkpoints`).

    python scripts/average_checkpoints.py OUT.pt A.pt B.pt [C.pt ...]

Then evaluate ``OUT.pt`` like any checkpoint (``napari-cardiac-motion evaluate --model OUT.pt``) and ship it
with ``scripts/make_default_checkpoint.py``.
"""

from __future__ import annotations

import argparse

from napari_cardiac_motion.model.checkpoint import average_checkpoints


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("srcs", nargs="+", help="two or more checkpoints of one architecture")
    args = ap.parse_args(argv)
    print(f"wrote {average_checkpoints(args.srcs, args.out)} (the mean of {len(args.srcs)} checkpoints)")


if __name__ == "__main__":
    main()
