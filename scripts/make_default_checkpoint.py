"""Make the shipped checkpoint from a trained one: weights and architecture unchanged, the model's pixel
size made explicit in its config, a new name/version, and the provenance kept in the metadata.

    python scripts/make_default_checkpoint.py SRC.pt napari_cardiac_motion/checkpoints/default.pt \
        --name cardiac-joint-v2 --version 2.0.0 --note "..."
"""

from __future__ import annotations

import argparse

from napari_cardiac_motion.model.checkpoint import read_checkpoint, save_checkpoint
from napari_cardiac_motion.model.network import JointConfig, JointMotionSegNet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--name", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--pixel-mm", type=float, default=1.5, help="the in-plane pixel size inference resamples to")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    payload = read_checkpoint(args.src)
    cfg = dict(payload["config"])
    cfg["pixel_mm"] = args.pixel_mm
    model = JointMotionSegNet(JointConfig.from_dict(cfg))
    model.load_state_dict(payload["state_dict"])
    meta = dict(payload.get("metadata", {}))
    meta["trained_as"] = {k: meta.get(k) for k in ("name", "version", "command", "steps", "train_seconds", "torch", "val")}
    meta.update({"name": args.name, "version": args.version, "provisional": False, "source_checkpoint": args.src,
                 "note": args.note, "inference_pixel_mm": args.pixel_mm})
    save_checkpoint(model, args.dst, meta)
    print(f"wrote {args.dst}")


if __name__ == "__main__":
    main()
