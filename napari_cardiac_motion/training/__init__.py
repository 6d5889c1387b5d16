"""Training of the joint motion/segmentation model (weak supervision, no Qt).

``train.train(config)`` is the core loop; ``data`` loads ACDC ED/ES stacks and Sunnybrook cines into
memory; ``augment`` holds the batched geometric/intensity augmentation.
"""

from .data import (
    ACDC_VAL_PATIENTS,
    SUNNYBROOK_VAL_PATIENTS,
    Case,
    load_acdc,
    load_sunnybrook,
)
from .train import TrainConfig, train

__all__ = [
    "ACDC_VAL_PATIENTS",
    "SUNNYBROOK_VAL_PATIENTS",
    "Case",
    "load_acdc",
    "load_sunnybrook",
    "TrainConfig",
    "train",
]
