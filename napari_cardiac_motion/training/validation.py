"""Validation during training (no Qt): Dice of the segmentation and of the ED labels carried to ES by
the motion, on ACDC-like cases already re-sampled to the model's pixel size."""

from __future__ import annotations

import numpy as np
import torch

from ..metrics import dice
from ..geometry import Region, region_around, to_model
from ..model.network import JointMotionSegNet
from ..model.transformer import warp
from .data import Case

def validation_region(case: Case, size: int) -> Region:
    """The square ``size`` region (model pixels; cases are already at the model's pixel size) around the
    heart centre of the case's labelled slices, placed inside the field where it fits."""
    h, w = case.image.shape[-2:]
    centre = np.median(case.center, axis=0) if len(case.center) else np.array([h / 2.0, w / 2.0])
    return region_around(centre, (min(size, h), min(size, w)), (1.0, 1.0), (h, w))


@torch.no_grad()
def validate(model: JointMotionSegNet, cases: list[Case], device: torch.device, size: int = 160,
             keys: dict[int, str] | None = None) -> dict[str, float]:
    """3D Dice (per class of ``keys``, default LV/Myo/RV; mean of ED and ES) and propagated-label Dice (ED labels warped to ES) over
    ACDC-like validation cases, on a ``size``² region around the heart at the model's pixel size (the
    cases are re-sampled on loading), with the same geometry helpers as inference."""
    keys = keys or {1: "LV", 2: "Myo", 3: "RV"}
    model.eval()
    seg_d: dict[str, list[float]] = {k: [] for k in keys.values()}
    prop_d: dict[str, list[float]] = {k: [] for k in keys.values()}
    for case in cases:
        region = validation_region(case, size)
        z_n = case.n_slices
        hh, ww = region.size
        frames = torch.from_numpy(case.image[[case.ed, case.es]].astype(np.float32)).to(device)  # (2, Z, Y, X)
        codes = torch.from_numpy(case.codes[[case.ed, case.es]].astype(np.float32)).to(device)
        img = to_model(frames.reshape(2 * z_n, 1, *frames.shape[-2:]), region, antialias=False).view(2, z_n, hh, ww)
        gt = to_model(codes.reshape(2 * z_n, 1, *codes.shape[-2:]), region, mode="nearest").view(2, z_n, hh, ww)
        gt = gt.round().cpu().numpy().astype(np.uint8)
        seg, flows = model.forward_sequence(img.permute(1, 0, 2, 3).contiguous())  # (Z, 2, ...)
        pred = seg.argmax(2).permute(1, 0, 2, 3).cpu().numpy()  # (2, Z, H, W)
        ed_lab = torch.from_numpy(gt[0].astype(np.float32)).unsqueeze(1).to(device)
        prop = warp(ed_lab, flows[:, 1].float(), mode="nearest")[:, 0].round().cpu().numpy()
        for c, k in keys.items():
            seg_d[k].append(0.5 * (dice(pred[0] == c, gt[0] == c) + dice(pred[1] == c, gt[1] == c)))
            prop_d[k].append(dice(prop == c, gt[1] == c))
    model.train()
    out = {f"dice_{k}": float(np.mean(v)) for k, v in seg_d.items()}
    out.update({f"prop_{k}": float(np.mean(v)) for k, v in prop_d.items()})
    return out
