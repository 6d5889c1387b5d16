"""Motion over a whole cardiac cycle: does it come back, is it smooth, does it carry labels right?

A two-frame (ED/ES) evaluation cannot see a motion estimate that is right at ES and drifts or
alternates over the rest of the cycle. These figures are computed on full cines ``(T, Z, Y, X)`` from the
model's own result (labels and motion ``u_t``, frame t → ED, ``(dy, dx)`` voxels):

* ``displacement_mm``: per frame, in cycle order from ED (ED, ED+1, …, ED−1), the mean displacement
  ``|u_t|`` (mm, in-plane) over the ED myocardium (the model's ED labels): rises to a systolic peak and
  should return towards 0 at the last frame (the frame before ED, when the heart is back at its ED shape).
* ``last_displacement_mm`` and ``last_carried_myo_dice``: at that last frame, the displacement and the
  Dice of the ED myocardium carried there by the motion (``label_t(p) = label_ED(p + u_t(p))``) against
  the model's own myocardium at that frame.
* ``radial_percent`` / ``circumferential_percent``: global strain (:mod:`..analysis.strain`) in cycle
  order, their values at the last frame (``*_last``) and a roughness figure: the mean absolute second
  difference of the curve divided by its largest absolute value (0 for a straight line; about 0.1 for
  a smooth rise and return over 20 frames; above 0.3 for a curve that alternates frame by frame).
* ``wall_thickening_percent`` / ``wall_thickening_last``: the wall thickening of the model's own labels
  against ED (no motion involved), a yardstick for the radial strain, above all at the last frame.
* ``odd_even_mm``: the mean absolute second difference of the displacement curve (mm): alternation
  between odd and even frames makes it large.
* With reference labels at ED and ES (e.g. expert contours), ``propagation``: Dice of the ED labels carried
  to ES by the cine's motion against the ES labels, per structure, and the same for SimpleITK demons
  registration on the same two frames (``baseline="demons"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..cine import Cine
from ..conventions import LV_BLOOD_POOL, LV_MYOCARDIUM, STRUCTURE_KEYS, cycle_order
from ..errors import InputError
from .demons import warp_labels
from ..metrics import dice


def roughness(curve: np.ndarray) -> float:
    """Mean |second difference| of a curve divided by its largest |value| (NaN-free part; 0 if flat)."""
    c = np.asarray(curve, dtype=np.float64)
    c = c[np.isfinite(c)]
    if c.size < 3 or np.abs(c).max() == 0:
        return 0.0
    return float(np.abs(np.diff(c, 2)).mean() / np.abs(c).max())


def displacement_curve(motion: np.ndarray, mask_ed: np.ndarray, spacing_yx: tuple[float, float],
                       order: list[int]) -> np.ndarray:
    """Mean in-plane displacement (mm) over ``mask_ed`` ``(Z, Y, X)`` of every frame of ``order``.

    Args:
        motion: ``(T, Z, Y, X, 2)`` ``(dy, dx)`` voxels.
        mask_ed: boolean ``(Z, Y, X)``, e.g. the ED myocardium.
        spacing_yx: ``(dy, dx)`` mm.
        order: frames in cycle order.
    """
    sy, sx = spacing_yx
    if not mask_ed.any():
        return np.full(len(order), np.nan)
    out = []
    for t in order:
        u = motion[t][mask_ed]  # (N, 2)
        out.append(float(np.hypot(u[:, 0] * sy, u[:, 1] * sx).mean()))
    return np.array(out)


def cycle_metrics(labels: np.ndarray, motion: np.ndarray, ed_frame: int,
                  spacing: tuple[float, float, float], affine: np.ndarray | None = None) -> dict[str, Any]:
    """Whole-cycle motion figures of one prediction (see the module docstring).

    Args:
        labels: ``(T, Z, Y, X)`` predicted labels.
        motion: ``(T, Z, Y, X, 2)`` predicted motion, frame t → ``ed_frame``.
        ed_frame: the motion's reference frame.
        spacing: ``(dz, dy, dx)`` mm.
        affine: the image's affine (only for the strain's segment orientation).
    """
    from ..analysis.strain import strain_curves

    n_t = labels.shape[0]
    order = cycle_order(n_t, ed_frame)
    last = order[-1]
    myo_ed = labels[ed_frame] == LV_MYOCARDIUM
    disp = displacement_curve(motion, myo_ed, (float(spacing[1]), float(spacing[2])), order)
    carried = warp_labels(labels[ed_frame].astype(np.uint8), motion[last])
    st = strain_curves(motion, labels, spacing, ed_frame, affine)
    rad = st.radial_percent[order]
    circ = st.circumferential_percent[order]
    thick = wall_thickening_curve(labels, order)
    return {
        "frames": n_t,
        "ed_frame": int(ed_frame),
        "last_frame": int(last),
        "displacement_mm": [round(float(v), 3) for v in disp],
        "peak_displacement_mm": float(np.nanmax(disp)) if np.isfinite(disp).any() else None,
        "last_displacement_mm": float(disp[-1]),
        "last_carried_myo_dice": dice(carried, labels[last], LV_MYOCARDIUM),
        # what the overlap can reach: the model's own myocardium at the last frame against its ED
        # myocardium without motion, and against the frame before (its frame-to-frame consistency)
        "last_zero_motion_myo_dice": dice(labels[ed_frame], labels[last], LV_MYOCARDIUM),
        "last_neighbour_myo_dice": dice(labels[order[-2]], labels[last], LV_MYOCARDIUM) if n_t >= 3 else None,
        "odd_even_mm": float(np.abs(np.diff(disp, 2)).mean()) if n_t >= 3 else 0.0,
        "radial_percent": [round(float(v), 2) for v in rad],
        "circumferential_percent": [round(float(v), 2) for v in circ],
        "radial_last": float(rad[-1]),
        "circumferential_last": float(circ[-1]),
        "radial_peak": float(np.nanmax(rad)) if np.isfinite(rad).any() else None,
        "circumferential_peak": float(np.nanmin(circ)) if np.isfinite(circ).any() else None,
        "radial_roughness": roughness(rad),
        "circumferential_roughness": roughness(circ),
        # the same wall read from the segmentation alone (no motion): where the two agree at the last
        # frame, a non-zero radial strain there is the heart's, not the motion's error
        "wall_thickening_percent": [round(float(v), 2) for v in thick],
        "wall_thickening_last": float(thick[-1]),
    }


def wall_thickening_curve(labels: np.ndarray, order: list[int], min_voxels: int = 20) -> np.ndarray:
    """A motion-free yardstick for radial strain: mean wall thickening (%) of the model's own labels per
    frame (in ``order``, ``order[0]`` = ED), against ED. Per slice the wall is read as the difference of
    the equal-area radii of the epicardium (LV + Myo) and the endocardium (LV); slices without at least
    ``min_voxels`` of both at ED are left out. NaN where no slice qualifies."""
    lv = (labels == LV_BLOOD_POOL).sum(axis=(2, 3)).astype(np.float64)
    my = (labels == LV_MYOCARDIUM).sum(axis=(2, 3)).astype(np.float64)
    wall = np.sqrt((lv + my) / np.pi) - np.sqrt(lv / np.pi)  # (T, Z) voxels
    ed = order[0]
    ok = (lv[ed] >= min_voxels) & (my[ed] >= min_voxels)
    if not ok.any():
        return np.full(len(order), np.nan)
    return np.array([100.0 * float(np.mean(wall[t][ok] / wall[ed][ok] - 1.0)) for t in order])


def propagation_scores(ed_labels: np.ndarray, es_labels: np.ndarray, motion_es: np.ndarray,
                       slices: list[int] | None = None) -> dict[str, float]:
    """Dice of ``ed_labels`` carried by ``motion_es`` (ES → ED, ``(Z, Y, X, 2)``) against ``es_labels``.

    Only ``slices`` are scored (default all); a structure absent from the ES reference is skipped.
    """
    prop = warp_labels(ed_labels.astype(np.uint8), motion_es)
    zs = list(range(ed_labels.shape[0])) if slices is None else list(slices)
    out = {}
    for c, k in STRUCTURE_KEYS.items():
        if (es_labels[zs] == c).any():
            out[k] = dice(prop[zs], es_labels[zs], c)
    return out


def find_full_cines(data: str | Path) -> list[Path]:
    """Folders under ``data`` (or ``data`` itself) holding a full cine with reference labels: a
    Sunnybrook-style folder (``sa.nii.gz``, ``labels.nii.gz``, ``info.json`` with the contoured frames)
    or an ACDC-style patient folder with ``cine.nii.gz``, ``ED_gt.nii.gz``, ``ES_gt.nii.gz`` and
    ``info.json`` (1-based ``ed_frame_1based``/``es_frame_1based``)."""
    data = Path(data)

    def ok(p: Path) -> bool:
        sunny = all((p / n).exists() for n in ("sa.nii.gz", "labels.nii.gz", "info.json"))
        acdc = all((p / n).exists() for n in ("cine.nii.gz", "ED_gt.nii.gz", "ES_gt.nii.gz", "info.json"))
        return sunny or acdc

    if not data.is_dir():
        raise InputError(f"'{data}' is not a folder of full cines (sa.nii.gz + labels.nii.gz + info.json, "
                         "or cine.nii.gz + ED_gt.nii.gz + ES_gt.nii.gz + info.json).")
    folders = [data] if ok(data) else sorted(p for p in data.iterdir() if p.is_dir() and ok(p))
    if not folders:
        raise InputError(f"No full cines with reference labels under '{data}'.")
    return folders


def load_full_cine(folder: str | Path) -> tuple[Cine, int, int, np.ndarray, np.ndarray, list[int]]:
    """A full cine and its references: ``(cine, ed, es, ED labels (Z, Y, X), ES labels, scored slices)``.

    Sunnybrook: ED = the frame with epicardial contours, ES = the other contoured frame; only slices
    contoured at both frames are scored (there is no myocardium at ES). ACDC: ``cine.nii.gz`` with the
    expert ED/ES labels; every slice is scored.
    """
    from ..io.nifti import read_nifti, read_nifti_labels

    folder = Path(folder)
    info = json.loads((folder / "info.json").read_text())
    if (folder / "sa.nii.gz").exists():
        cine = read_nifti(folder / "sa.nii.gz")
        lab = read_nifti_labels(folder / "labels.nii.gz")  # (T, Z, Y, X)
        ed = int(next(iter(info["epi_contour_frames"])))
        es = int(next(k for k in info["endo_contour_frames"] if int(k) != ed))
        slices = sorted(set(info["endo_contour_frames"][str(ed)]) & set(info["endo_contour_frames"][str(es)]))
        return cine, ed, es, lab[ed], lab[es], slices
    cine = read_nifti(folder / "cine.nii.gz")
    ed, es = int(info["ed_frame_1based"]) - 1, int(info["es_frame_1based"]) - 1
    ed_gt = read_nifti_labels(folder / "ED_gt.nii.gz")[0]
    es_gt = read_nifti_labels(folder / "ES_gt.nii.gz")[0]
    return cine, ed, es, ed_gt, es_gt, list(range(ed_gt.shape[0]))


def evaluate_full_cine(folder: str | Path, model, device: str = "auto", baseline: str | None = None,
                       **predict_kwargs: Any) -> dict[str, Any]:
    """Run the model over a whole cine (ED given) and return :func:`cycle_metrics`, the ED→ES
    propagation of the reference labels through the cine's motion (``propagation``) and, with
    ``baseline="demons"``, demons' on the same two frames (``demons_propagation``).

    The carried-label overlap compares the motion with the model's own segmentation made *without*
    temporal fusion (``fuse=0`` unless asked otherwise): fused labels already contain the carried ED
    labels, which would make the comparison circular."""
    from ..inference import predict_cine

    predict_kwargs.setdefault("fuse", 0.0)
    cine, ed, es, ed_gt, es_gt, slices = load_full_cine(folder)
    res = predict_cine(cine, model, device=device, ed_frame=ed, **predict_kwargs)
    out: dict[str, Any] = {"case": Path(folder).name, "shape_TZYX": list(cine.shape), "es_frame": es,
                           "seconds_model": res.seconds}
    out.update(cycle_metrics(res.labels, res.motion, ed, cine.spacing, cine.affine))
    out["propagation"] = propagation_scores(ed_gt, es_gt, res.motion[es], slices)
    if baseline == "demons":
        from .demons import demons_propagate

        zs = np.array(slices)
        prop_d, _, sec = demons_propagate(cine.data[ed][zs], cine.data[es][zs], ed_gt[zs])
        out["demons_propagation"] = {k: dice(prop_d, es_gt[zs], c) for c, k in STRUCTURE_KEYS.items()
                                     if (es_gt[zs] == c).any()}
        out["seconds_demons"] = sec
        out["demons_last"] = demons_last_frame(cine, ed, res.labels)
    out["closure"] = closure_yardstick(cine, ed, res.labels)
    return out


def closure_yardstick(cine: Cine, ed: int, labels: np.ndarray, margin: int = 10) -> dict[str, float]:
    """How far the cine's last frame (cycle order) is from ED *in the images*, next to the frame after ED.

    A cine samples the cycle at T frames, so its last frame is one frame interval before ED and need not
    be at the ED shape. The mean absolute intensity change from ED (intensities scaled by the cine's
    99.5th percentile, over the box around the model's ED labels widened by ``margin`` voxels, all slices)
    at the last frame and at the frame after ED, and their ratio: near 1 or above, the last frame is as far
    from ED as the first systolic frame, and its displacement and strain should read like that frame's,
    not 0."""
    order = cycle_order(cine.shape[0], ed)
    heart = labels[ed] > 0
    if not heart.any():
        return {}
    ys, xs = np.nonzero(heart.any(axis=0))
    box = np.asarray(cine.data[:, :, max(0, ys.min() - margin):ys.max() + margin + 1,
                               max(0, xs.min() - margin):xs.max() + margin + 1], dtype=np.float32)
    scale = float(np.percentile(cine.data, 99.5)) or 1.0

    def change(t: int) -> float:
        return float(np.abs(box[t] - box[ed]).mean() / scale)

    last, nxt = change(order[-1]), change(order[1])
    return {"image_change_last": last, "image_change_next": nxt, "ratio": last / nxt if nxt > 0 else float("nan")}


def demons_last_frame(cine: Cine, ed: int, labels: np.ndarray) -> dict[str, float]:
    """An independent estimate of where the heart is at the cycle's last frame: SimpleITK demons from
    the ED frame to the last frame on every slice; the mean displacement of the (model's) ED myocardium
    (mm) and the Dice of that myocardium carried to the last frame against the model's own there."""
    from .demons import demons_slice

    last = cycle_order(cine.shape[0], ed)[-1]
    u = np.stack([demons_slice(cine.data[last][z], cine.data[ed][z]) for z in range(cine.shape[1])])
    myo = labels[ed] == LV_MYOCARDIUM
    sy, sx = float(cine.spacing[1]), float(cine.spacing[2])
    disp = float(np.hypot(u[..., 0][myo] * sy, u[..., 1][myo] * sx).mean()) if myo.any() else float("nan")
    carried = warp_labels(labels[ed].astype(np.uint8), u)
    return {"displacement_mm": disp, "carried_myo_dice": dice(carried, labels[last], LV_MYOCARDIUM)}


def evaluate_cycles(data: str | Path, model_path: str | None = None, baseline: str | None = None,
                    patients: list[str] | None = None, device: str = "auto",
                    progress: Callable[[int, int, str], None] | None = None, **predict_kwargs: Any
                    ) -> dict[str, Any]:
    """:func:`evaluate_full_cine` on every full cine under ``data``; returns ``{"model", "cases", "summary"}``
    (summary: means over cines of the scalar figures and of the propagation per structure)."""
    import time

    import torch

    from ..model import load_checkpoint

    folders = find_full_cines(data)
    if patients:
        wanted = set(patients)
        folders = [p for p in folders if p.name in wanted or p.name.removeprefix("patient") in wanted]
        if not folders:
            raise InputError(f"None of {', '.join(patients)} is a full cine under '{data}'.")
    model, meta = load_checkpoint(model_path, device="cpu")
    cases = []
    for i, folder in enumerate(folders):
        cases.append(evaluate_full_cine(folder, model, device=device, baseline=baseline, **predict_kwargs))
        if progress:
            progress(i + 1, len(folders), folder.name)
    scalar = ("last_displacement_mm", "peak_displacement_mm", "last_carried_myo_dice", "odd_even_mm",
              "radial_last", "circumferential_last", "radial_roughness", "circumferential_roughness",
              "seconds_model")
    summary: dict[str, Any] = {k: float(np.mean([c[k] for c in cases])) for k in scalar}
    for key in ("propagation", "demons_propagation"):
        structs = sorted({s for c in cases for s in c.get(key, {})})
        if structs:
            summary[key] = {s: float(np.mean([c[key][s] for c in cases if s in c.get(key, {})])) for s in structs}
    motion = predict_kwargs.get("motion_mode", "pairwise")
    refine = predict_kwargs.get("refine")
    return {"data": str(data), "model": {k: meta.get(k) for k in ("name", "version", "path")},
            "device": device, "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "motion_mode": motion, "refine": refine.to_dict() if refine is not None else "default",
            "baseline": baseline, "cases": cases, "summary": summary}


def format_cycles(result: dict[str, Any]) -> str:
    """A plain-text (markdown) table of :func:`evaluate_cycles`' result, one row per cine."""
    demons = result.get("baseline") == "demons"
    lines = [f"model {result['model'].get('name')} {result['model'].get('version')}, motion "
             f"{result['motion_mode']}, on {len(result['cases'])} full cine(s) from {result['data']}", "",
             "| cine | T | peak mm | last mm | carried Myo Dice (last) | odd/even mm | radial last % | "
             "circ last % | rough radial | rough circ | ED→ES prop | " + ("demons | " if demons else "") + "s |",
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if demons else "") + "---|"]

    def fmt_prop(d: dict) -> str:
        return " ".join(f"{k} {v:.3f}" for k, v in d.items()) or "—"

    for c in result["cases"]:
        lines.append(
            f"| {c['case']} | {c['frames']} | {c['peak_displacement_mm']:.2f} | {c['last_displacement_mm']:.2f} | "
            f"{c['last_carried_myo_dice']:.3f} | {c['odd_even_mm']:.3f} | {c['radial_last']:.1f} | "
            f"{c['circumferential_last']:.1f} | {c['radial_roughness']:.3f} | {c['circumferential_roughness']:.3f} | "
            f"{fmt_prop(c['propagation'])} | " + (f"{fmt_prop(c.get('demons_propagation', {}))} | " if demons else "")
            + f"{c['seconds_model']:.1f} |")
    lines.append("")
    for c in result["cases"]:
        ref = (f"; demons ED→last: {c['demons_last']['displacement_mm']:.2f} mm, carried Myo Dice "
               f"{c['demons_last']['carried_myo_dice']:.3f}") if "demons_last" in c else ""
        nb = c.get("last_neighbour_myo_dice")
        lines.append(f"{c['case']} last frame: the model's own Myo vs its ED Myo without motion "
                     f"{c['last_zero_motion_myo_dice']:.3f}, vs the frame before "
                     + (f"{nb:.3f}" if nb is not None else "—") + ref)
    for c in result["cases"]:
        cl = c.get("closure")
        if cl and len(c["displacement_mm"]) > 1:
            lines.append(f"{c['case']} closure: image change from ED at the last frame {cl['image_change_last']:.3f}, "
                         f"at the frame after ED {cl['image_change_next']:.3f} (ratio {cl['ratio']:.2f}); the model "
                         f"reads the frame after ED at {c['displacement_mm'][1]:.2f} mm, radial "
                         f"{c['radial_percent'][1]:+.1f} %, circ {c['circumferential_percent'][1]:+.1f} %; wall "
                         f"thickening of its own labels at the last frame {c['wall_thickening_last']:+.1f} % "
                         f"(radial strain there {c['radial_last']:+.1f} %)")
    for c in result["cases"]:
        lines.append(f"{c['case']} displacement (mm, cycle order from ED): "
                     + " ".join(f"{v:.2f}" for v in c["displacement_mm"]))
    return "\n".join(lines)
