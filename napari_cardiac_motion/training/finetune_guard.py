"""The held-out check that keeps fine-tuning from ever hurting on the user's own labels (no Qt, no napari).

Part of the corrections is set aside before training (:func:`split_holdout`); afterwards the starting
model and weight-space blends of the fine-tuned one (:func:`blend_models`) are scored on the held-out
labels and on those labels carried by the starting model's motion to frames nobody corrected
(:func:`propagated_check`), and :func:`select_model` keeps a candidate only if it does better (see
:mod:`.finetune` for the rule). Arrays are region arrays ``(T, Z, H, W)`` on the model grid.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ..conventions import LV_BLOOD_POOL, STRUCTURE_KEYS, UNLABELLED, cycle_order, ed_es_from_lv_volumes
from ..metrics import dice
from ..model.losses import propagated_pseudo_labels
from ..model.network import JointMotionSegNet

#: one check set: ``(name, [(t, z), ...], labels (N, H, W) uint8, 255 = not covered)``
CheckSet = tuple[str, list[tuple[int, int]], np.ndarray]


def blend_models(start: JointMotionSegNet, tuned: JointMotionSegNet, alpha: float) -> JointMotionSegNet:
    """A new model with weights ``θ₀ + α(θ − θ₀)`` (floating buffers blended too; α = 1 → ``tuned``)."""
    out = copy.deepcopy(tuned)
    if alpha == 1.0:
        return out.eval()
    sd0, sd1 = start.state_dict(), tuned.state_dict()
    new = {}
    for k, v1 in sd1.items():
        v0 = sd0[k].to(v1.device)
        new[k] = v0 + alpha * (v1 - v0) if v1.is_floating_point() else (v1 if alpha > 0 else v0)
    out.load_state_dict(new)
    return out.eval()


def estimate_ed_frame(model: JointMotionSegNet, image: np.ndarray, slices: list[int], device: torch.device,
                      lv: int = LV_BLOOD_POOL) -> int:
    """Frame of the largest predicted LV blood pool (label ``lv``; the LV cavity of an echo model) over
    ``slices`` of a normalised ``(T, Z, Y, X)`` image."""
    n_t = image.shape[0]
    area = np.zeros(n_t)
    model.eval()
    with torch.inference_mode():
        for z in slices:
            x = torch.from_numpy(image[:, z]).unsqueeze(1).to(device)
            area += (model.segment(x).argmax(1) == lv).flatten(1).sum(1).cpu().numpy()
    return ed_es_from_lv_volumes(area)[0]


def segment_pairs(model: JointMotionSegNet, image: np.ndarray, pairs: list[tuple[int, int]],
                   device: torch.device, chunk: int = 8) -> np.ndarray:
    """Predicted labels ``(N, H, W)`` uint8 of the (frame, slice) ``pairs`` of ``image`` (T, Z, H, W)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(pairs), chunk):
            x = np.stack([image[t, z] for t, z in pairs[i:i + chunk]])[:, None]
            out.append(model.segment(torch.from_numpy(x).to(device)).argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


def split_holdout(mask: np.ndarray, every: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Split the corrected (frame, slice) pairs into a training mask ``(T, Z)`` and held-out pairs.

    Whole slices are held out (every ``every``-th corrected slice, starting with the second); with one
    corrected slice, every ``every``-th corrected frame of it (starting with the second); with a single
    corrected pair nothing is held out (``[]``).
    """
    every = max(2, int(every))
    pairs = [(int(t), int(z)) for t, z in zip(*np.nonzero(mask))]
    slices = sorted({z for _, z in pairs})
    if len(slices) >= 2:
        held_z = set(slices[1::every])
        held = [(t, z) for t, z in pairs if z in held_z]
    else:
        held = sorted(pairs)[1::every]
    train = mask.copy()
    for t, z in held:
        train[t, z] = False
    return train, held


def check_scores(pred: np.ndarray, truth: np.ndarray, keys: dict[int, str] | None = None) -> dict[str, float]:
    """Dice per structure of predicted labels vs the held-out labels (both ``(N, H, W)``), on the voxels
    the held-out labels cover (255 = not covered); ``keys`` ``{value: short key}`` are the model's structures
    (:meth:`..model_description.ModelDescription.keys`; default the MR ones: LV, Myo, RV)."""
    valid = truth != UNLABELLED
    p, g = pred[valid], truth[valid]
    return {key: dice(p, g, c) for c, key in (keys or STRUCTURE_KEYS).items()}


def propagated_check(model: JointMotionSegNet, image: np.ndarray, corr: np.ndarray, mask: np.ndarray,
                     pairs: list[tuple[int, int]], device: torch.device, n_max: int = 4
                     ) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Check labels for the frames nobody corrected: for each slice of ``pairs``, the labels of its first
    listed pair carried by ``model``'s motion (the *starting* model) to up to ``n_max`` uncorrected
    frames of that slice (spread over the cycle). Returns ``(pairs, labels (N, H, W) uint8, 255 = none)``."""
    n_t = image.shape[0]
    out_pairs, out = [], []
    for z in sorted({z for _, z in pairs}):
        t = min(tt for tt, zz in pairs if zz == z)
        order = [f for f in cycle_order(n_t, t)[1:] if not mask[f, z]]
        if not order:
            continue
        idx = sorted({int(round(i)) for i in np.linspace(0, len(order) - 1, min(n_max, len(order)))})
        frames = [t] + [order[i] for i in idx]
        x = torch.from_numpy(np.ascontiguousarray(image[frames, z])[None]).to(device)
        model.eval()
        with torch.inference_mode():
            _, flows = model.forward_sequence(x)
            src = torch.from_numpy(corr[t, z].astype(np.int64))[None].to(device)
            for k in range(1, len(frames)):
                lab = propagated_pseudo_labels(src, flows[:, k], model.config.num_classes)[0]
                out.append(lab.to(torch.uint8).cpu().numpy())  # IGNORE_INDEX is UNLABELLED
                out_pairs.append((frames[k], z))
    shape = (0,) + image.shape[2:]
    return out_pairs, (np.stack(out) if out else np.zeros(shape, np.uint8))


def select_model(start: JointMotionSegNet, tuned: JointMotionSegNet, image: np.ndarray,
                 checks: list[CheckSet], blends: tuple[float, ...], device: torch.device,
                 tolerance: float = 0.005, keys: dict[int, str] | None = None) -> tuple[JointMotionSegNet, dict[str, Any]]:
    """Score the starting model and the blends ``α`` of ``tuned`` on every check set
    ``(name, pairs, labels)`` (the first set is the primary one).

    A candidate qualifies when (1) its mean Dice over the structures of the primary set is higher than
    the starting model's and no structure of it loses more than ``tolerance``, and (2) no structure of
    any other set (labels carried by the motion to frames nobody corrected) is lower at all. The
    qualifying candidate with the highest mean over all sets is
    returned (else a copy of the start), with a report
    ``{name: {"pairs", "original", "candidates": {"α": scores}}, "kept": α, "tolerance"}``; scores by the
    structure ``keys`` (:func:`check_scores`)."""
    checks = [c for c in checks if len(c[1])]
    report: dict[str, Any] = {"kept": 0.0, "tolerance": tolerance}
    base = {}
    for name, pairs, truth in checks:
        base[name] = check_scores(segment_pairs(start, image, pairs, device), truth, keys)
        report[name] = {"pairs": [list(p) for p in pairs], "original": base[name], "candidates": {}}
    best, best_mean = None, -1.0
    for alpha in sorted({float(a) for a in blends if a > 0}, reverse=True) if checks else []:
        cand = tuned if alpha == 1.0 else blend_models(start, tuned, alpha)
        ok, vals = True, []
        for i, (name, pairs, truth) in enumerate(checks):
            scores = check_scores(segment_pairs(cand, image, pairs, device), truth, keys)
            report[name]["candidates"][f"{alpha:g}"] = scores
            if i == 0:
                ok &= float(np.mean(list(scores.values()))) > float(np.mean(list(base[name].values())))
            ok &= all(scores[k] >= base[name][k] - (tolerance if i == 0 else 0.0) for k in scores)
            vals += list(scores.values())
        if ok and float(np.mean(vals)) > best_mean:
            best, best_mean, report["kept"] = cand, float(np.mean(vals)), alpha
    if best is None:
        best = copy.deepcopy(start)
    return best.eval(), report


def build_checks(start: JointMotionSegNet, image_c: np.ndarray, corr_c: np.ndarray, mask: np.ndarray,
                 held: list[tuple[int, int]], check_propagated: bool, device: torch.device) -> list[CheckSet]:
    """The check sets: the held-out pairs' true labels (``held_out``) and, with ``check_propagated``,
    those labels carried to other frames (``propagated``); with nothing held out (a single corrected
    pair), only that pair's labels carried by the starting model's motion."""
    checks: list[CheckSet] = []
    if held:  # true labels of the held-out slices, and those labels carried to other frames
        checks.append(("held_out", held, np.stack([corr_c[t, z] for t, z in held])))
        if check_propagated:
            checks.append(("propagated", *propagated_check(start, image_c, corr_c, mask, held, device)))
    else:  # a single corrected pair: only its labels carried by the starting model's motion
        only = [(int(t), int(z)) for t, z in zip(*np.nonzero(mask))]
        checks.append(("propagated", *propagated_check(start, image_c, corr_c, mask, only, device)))
    return checks
