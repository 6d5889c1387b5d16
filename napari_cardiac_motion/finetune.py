"""Compatibility shim: fine-tuning lives in :mod:`napari_cardiac_motion.training.finetune`.

Kept only so that existing imports (the widgets) keep working while they are rewired; new code should
import from ``napari_cardiac_motion.training.finetune``.
"""

from .training.finetune import *  # noqa: F401,F403
from .training.finetune import __all__  # noqa: F401
