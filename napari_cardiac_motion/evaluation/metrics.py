"""Old home of the overlap and distance metrics, now :mod:`napari_cardiac_motion.metrics` (imported
from there by evaluation and training alike). Kept only for ``benchmarks/finetune_benchmark.py``."""

from ..metrics import dice, ejection_fraction, hd95, surface_distances, volume

__all__ = ["dice", "ejection_fraction", "hd95", "surface_distances", "volume"]
