"""The joint motion-estimation and segmentation network (Qin et al., MICCAI 2018) in torch."""

from .checkpoint import default_checkpoint_path, load_checkpoint, save_checkpoint
from .network import JointConfig, JointMotionSegNet
from .transformer import warp

__all__ = [
    "JointConfig",
    "JointMotionSegNet",
    "warp",
    "load_checkpoint",
    "save_checkpoint",
    "default_checkpoint_path",
]
