"""Evaluation of the joint model against ground truth and a classical registration baseline."""

from ..metrics import dice, ejection_fraction, hd95

__all__ = ["dice", "hd95", "ejection_fraction"]
