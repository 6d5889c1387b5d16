"""In-plane myocardial strain (radial, circumferential) from the model's motion field.

Inputs: motion ``(T, Z, Y, X, 2)`` ``(dy, dx)`` in voxels, labels ``(T, Z, Y, X)``, spacing ``(dz, dy, dx)`` mm.

**From the pull-convention field to strain.** ``u_t`` lives on frame t's grid and points back to ED:
the tissue at ``x`` in frame t was at ``X = x + u_t(x)`` at ED. So ``ψ(x) = x + u_t(x)`` is the
*inverse* of the deformation ``φ: ED → t``, and by the chain rule its gradient is the inverse of the
deformation gradient at the same material point::

    ∂X/∂x = I + ∇u_t(x) = F(X)⁻¹      ⇒      F = (I + ∇u_t)⁻¹      (∇ in mm/mm)

A fibre of unit ED direction ``e`` becomes ``F·e``; its stretch is ``λ = |F·e|`` and its strain is
``λ − 1`` — the relative change of length from ED (engineering Lagrangian strain, in %). Radial
``e_r = (X − c)/|X − c|`` points away from ``c``, the centroid of the LV blood pool of that slice at ED;
circumferential ``e_c`` is ``e_r`` turned by 90°. Both are taken at the tissue's ED position ``X``, so a
rotation (twist) of a slice leaves them unchanged.

**Averages.** The myocardium followed is the tissue that was myocardium at ED: pixels ``x`` of frame t
with ``label_ED(round(x + u_t(x))) = myocardium``. Each such pixel stands for ``det(I + ∇u_t)·dy·dx``
mm² of ED tissue, the weight of its strain in every mean, so a global value is the mean over the ED
myocardium (all slices) of the local strain. Only in-plane motion exists, so strain is in-plane.

**AHA segments** (16, no apical cap) when ≥ 3 slices hold LV myocardium at ED: those slices, ordered from
base (the end with the larger LV cross-section) to apex, are split into basal / mid / apical thirds.
Angles are measured at the ED position from the anterior RV insertion point, where the myocardium stops
touching the RV blood pool (the end of that arc lying more anterior in the image's affine), turning
towards the septum: basal 2,3,4,5,6,1 and mid 8,…,12,7 in 60° steps; apical 14 (septal, centred on the
septum), 15, 16, 13 in 90° steps. Without RV labels at ED there are no segments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..base_end import base_is_first
from ..conventions import LV_BLOOD_POOL, LV_MYOCARDIUM, RV_BLOOD_POOL
from ..errors import InputError

N_SEGMENTS = 16
#: AHA names of segments 1..16
SEGMENT_NAMES = (
    "basal anterior", "basal anteroseptal", "basal inferoseptal", "basal inferior", "basal inferolateral",
    "basal anterolateral", "mid anterior", "mid anteroseptal", "mid inferoseptal", "mid inferior",
    "mid inferolateral", "mid anterolateral", "apical anterior", "apical septal", "apical inferior",
    "apical lateral",
)
_SIX = np.array([2, 3, 4, 5, 6, 1])    # 60° sector k from the anterior insertion point -> basal segment
_APICAL = np.array([14, 15, 16, 13])    # 90° sector k from 15° past the anterior insertion -> apical segment


@dataclass
class StrainResult:
    """Strain curves (percent, relative to the reference frame, NaN where nothing was measured).

    Attributes:
        radial_percent, circumferential_percent: ``(T,)`` global strain.
        segment_radial_percent, segment_circumferential_percent: ``(16, T)`` AHA segments 1..16 (rows).
        reference_frame: the frame the motion refers to (ED): strain is 0 there.
        slice_level: ``(Z,)`` 0 basal, 1 mid, 2 apical, -1 not in the LV.
        segments_available: whether per-segment curves could be made; ``note`` says why not.
        insertion_angle_deg, septal_direction: anterior RV insertion angle (atan2 of (y, x) in mm) and
            the turn (+1/-1) from it into the septum.
    """

    radial_percent: np.ndarray
    circumferential_percent: np.ndarray
    segment_radial_percent: np.ndarray
    segment_circumferential_percent: np.ndarray
    reference_frame: int
    slice_level: np.ndarray
    segments_available: bool = False
    note: str = ""
    insertion_angle_deg: float | None = None
    septal_direction: int | None = None
    extra: dict = field(default_factory=dict)

    def peak_radial(self) -> tuple[float, int | None]:
        """(largest global radial strain %, its frame)."""
        return _peak(self.radial_percent, np.nanargmax)

    def peak_circumferential(self) -> tuple[float, int | None]:
        """(most negative global circumferential strain %, its frame)."""
        return _peak(self.circumferential_percent, np.nanargmin)


def _peak(curve: np.ndarray, arg) -> tuple[float, int | None]:
    if not np.isfinite(curve).any():
        return float("nan"), None
    i = int(arg(curve))
    return float(curve[i]), i


def _lv_centres(lab_ed: np.ndarray, sy: float, sx: float) -> np.ndarray:
    """``(Z, 2)`` LV centre (y, x) in mm per slice at ED: blood-pool centroid, else LV (pool + myo); NaN if none."""
    out = np.full((lab_ed.shape[0], 2), np.nan)
    for z in range(lab_ed.shape[0]):
        for mask in (lab_ed[z] == LV_BLOOD_POOL, (lab_ed[z] == LV_BLOOD_POOL) | (lab_ed[z] == LV_MYOCARDIUM)):
            ys, xs = np.nonzero(mask)
            if ys.size:
                out[z] = (ys.mean() * sy, xs.mean() * sx)
                break
    return out


def slice_levels(lab_ed: np.ndarray) -> np.ndarray:
    """``(Z,)`` 0 basal / 1 mid / 2 apical / -1 (no LV myocardium), or all -1 with fewer than 3 LV slices."""
    n_z = lab_ed.shape[0]
    level = np.full(n_z, -1, dtype=np.int64)
    has_myo = np.array([(lab_ed[z] == LV_MYOCARDIUM).any() for z in range(n_z)])
    zs = np.nonzero(has_myo)[0]
    if zs.size < 3:
        return level
    area = np.zeros(n_z)
    area[zs] = [((lab_ed[z] == LV_BLOOD_POOL) | (lab_ed[z] == LV_MYOCARDIUM)).sum() for z in zs]
    if not base_is_first(area):
        zs = zs[::-1]
    for lev, part in enumerate(np.array_split(zs, 3)):
        level[part] = lev
    return level


def _anterior_component(theta: float, affine: np.ndarray | None, sy: float, sx: float) -> float:
    """Anterior (RAS y) component of the in-plane direction ``theta`` (atan2 of (y, x) in mm)."""
    a = np.eye(4) if affine is None else np.asarray(affine, float)
    di, dj = np.cos(theta) / sx, np.sin(theta) / sy  # voxel steps along NIfTI i (= X) and j (= Y)
    return float(a[1, 0] * di + a[1, 1] * dj)


def rv_insertion(lab_ed: np.ndarray, centres: np.ndarray, sy: float, sx: float,
                 affine: np.ndarray | None = None, levels: np.ndarray | None = None) -> tuple[float, int] | None:
    """Anterior RV insertion angle (rad) and the turn (+1/-1) into the septum, from ED labels; None if no RV.

    The insertion points are the ends of the arc of LV myocardium lying within 2 pixels of the RV
    blood pool (pooled over the basal and mid slices, in angle around each slice's LV centre).
    """
    from scipy import ndimage

    angles = []
    for z in range(lab_ed.shape[0]):
        if not np.isfinite(centres[z, 0]) or (levels is not None and levels[z] not in (0, 1)):
            continue
        rv = lab_ed[z] == RV_BLOOD_POOL
        if not rv.any():
            continue
        near = ndimage.binary_dilation(rv, iterations=2) & (lab_ed[z] == LV_MYOCARDIUM)
        ys, xs = np.nonzero(near)
        angles.append(np.arctan2(ys * sy - centres[z, 0], xs * sx - centres[z, 1]))
    if not angles or sum(a.size for a in angles) < 3:
        return None
    deg = np.floor(np.degrees(np.concatenate(angles))).astype(int) % 360
    occupied = np.zeros(360, bool)
    occupied[deg] = True
    if occupied.all():
        return None
    # the largest run of empty degrees (circular) is the free wall; the arc is everything else
    free = ~occupied
    best_len, best_start, run, start = 0, 0, 0, 0
    for i in range(720):
        if free[i % 360]:
            if run == 0:
                start = i
            run += 1
            if run > best_len:
                best_len, best_start = run, start
        else:
            run = 0
        if run >= 360:
            break
    gap_start, gap_end = best_start % 360, (best_start + best_len) % 360
    arc_start, arc_end = np.radians(gap_end), np.radians(gap_start)  # arc runs counter-clockwise start→end
    if _anterior_component(arc_start, affine, sy, sx) >= _anterior_component(arc_end, affine, sy, sx):
        return float(arc_start), +1
    return float(arc_end), -1


def segment_ids(theta: np.ndarray, level: int, insertion: float, direction: int) -> np.ndarray:
    """AHA segment (1..16) of angles ``theta`` (rad) on a slice of ``level`` (0/1/2); 0 where undefined."""
    phi = np.mod(direction * (theta - insertion), 2 * np.pi)
    if level in (0, 1):
        k = np.minimum((phi / (np.pi / 3)).astype(np.int64), 5)
        return _SIX[k] + 6 * level
    if level == 2:
        k = np.minimum((np.mod(phi - np.radians(15), 2 * np.pi) / (np.pi / 2)).astype(np.int64), 3)
        return _APICAL[k]
    return np.zeros(np.shape(theta), dtype=np.int64)


def _crop_box(labels: np.ndarray, margin: int) -> tuple[slice, slice]:
    heart = (labels == LV_BLOOD_POOL) | (labels == LV_MYOCARDIUM)
    proj = heart.any(axis=(0, 1))
    ys, xs = np.nonzero(proj)
    h, w = proj.shape
    return (slice(max(ys.min() - margin, 0), min(ys.max() + margin + 1, h)),
            slice(max(xs.min() - margin, 0), min(xs.max() + margin + 1, w)))


def deformation_gradient(u: np.ndarray, sy: float, sx: float) -> tuple[np.ndarray, ...]:
    """``G = I + ∇u`` (mm/mm) of a ``(Z, h, w, 2)`` ``(dy, dx)`` voxel field: ``(g_yy, g_yx, g_xy, g_xx, det)``,
    each ``(Z, h, w)`` (rows: components (y, x); columns: derivative along (y, x))."""
    h, w = u.shape[1:3]
    uy, ux = u[..., 0] * sy, u[..., 1] * sx  # mm
    g_yy = 1.0 + np.gradient(uy, axis=1) / sy if h > 1 else np.ones_like(uy)
    g_yx = np.gradient(uy, axis=2) / sx if w > 1 else np.zeros_like(uy)
    g_xy = np.gradient(ux, axis=1) / sy if h > 1 else np.zeros_like(ux)
    g_xx = 1.0 + np.gradient(ux, axis=2) / sx if w > 1 else np.ones_like(ux)
    return g_yy, g_yx, g_xy, g_xx, g_yy * g_xx - g_yx * g_xy


def slice_strain(u: np.ndarray, grad: list[np.ndarray], lab_ed: np.ndarray, centre: np.ndarray, sy: float,
                 sx: float) -> tuple[np.ndarray, ...] | None:
    """Radial and circumferential strain of one slice's pixels that map into the ED myocardium.

    ``u`` ``(h, w, 2)`` voxels, ``grad`` the slice's :func:`deformation_gradient` planes, ``lab_ed`` its ED
    labels, ``centre`` the ED LV centre (mm). Returns ``(mask, theta, e_r, e_c, weight)`` (angle about the
    centre in rad, engineering strains, ED area in mm² per pixel), or ``None`` when no pixel maps there."""
    g_yy, g_yx, g_xy, g_xx, det = grad
    h, w = lab_ed.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    py, px = yy + u[..., 0], xx + u[..., 1]  # ED position, voxels (cropped grid)
    iy = np.clip(np.rint(py).astype(np.int64), 0, h - 1)
    ix = np.clip(np.rint(px).astype(np.int64), 0, w - 1)
    mask = (lab_ed[iy, ix] == LV_MYOCARDIUM) & (det > 1e-6)
    if not mask.any():
        return None
    ry, rx = py[mask] * sy - centre[0], px[mask] * sx - centre[1]
    norm = np.hypot(ry, rx)
    norm[norm == 0] = 1.0
    ery, erx = ry / norm, rx / norm
    d = det[mask]
    # F = G^-1 = adj(G) / det
    f_yy, f_yx = g_xx[mask] / d, -g_yx[mask] / d
    f_xy, f_xx = -g_xy[mask] / d, g_yy[mask] / d
    lam_r = np.hypot(f_yy * ery + f_yx * erx, f_xy * ery + f_xx * erx)
    ecy, ecx = -erx, ery  # e_r turned by 90°
    lam_c = np.hypot(f_yy * ecy + f_yx * ecx, f_xy * ecy + f_xx * ecx)
    return mask, np.arctan2(ry, rx), lam_r - 1.0, lam_c - 1.0, d * sy * sx


def strain_curves(motion: np.ndarray, labels: np.ndarray, spacing, reference_frame: int,
                  affine: np.ndarray | None = None, margin: int = 8) -> StrainResult:
    """Global and AHA-segment radial/circumferential strain (%) over the cycle, relative to ``reference_frame``.

    Args:
        motion: ``(T, Z, Y, X, 2)`` ``(dy, dx)`` voxels, frame t → reference frame (``u_ref = 0``).
        labels: ``(T, Z, Y, X)``; only the reference frame's labels are used (myocardium, LV centre, RV).
        spacing: ``(dz, dy, dx)`` mm.
        reference_frame: the motion's reference (ED) frame.
        affine: NIfTI affine of the image, to tell the anterior RV insertion point (identity if None).
    """
    mot = np.asarray(motion)
    lab = np.asarray(labels)
    if mot.ndim != 5 or mot.shape[-1] != 2 or mot.shape[:4] != lab.shape:
        raise InputError(f"Motion must be (T, Z, Y, X, 2) on the labels' grid {lab.shape}; got {mot.shape}.")
    n_t, n_z = lab.shape[:2]
    if not 0 <= reference_frame < n_t:
        raise InputError(f"Reference frame {reference_frame} is out of range 0–{n_t - 1}.")
    _, sy, sx = (float(s) for s in spacing)
    nan_t = np.full(n_t, np.nan)
    nan_seg = np.full((N_SEGMENTS, n_t), np.nan)
    lab_ed_full = lab[reference_frame]
    if not (lab_ed_full == LV_MYOCARDIUM).any():
        return StrainResult(nan_t, nan_t.copy(), nan_seg, nan_seg.copy(), reference_frame,
                            np.full(n_z, -1), note="no LV myocardium at the reference (ED) frame")
    ys_, xs_ = _crop_box(lab, margin)
    lab_ed = lab_ed_full[:, ys_, xs_]
    centres = _lv_centres(lab_ed, sy, sx)
    levels = slice_levels(lab_ed)
    ins = rv_insertion(lab_ed, centres, sy, sx, affine, levels) if (levels >= 0).any() else None
    if (levels < 0).all():
        note = "per-segment curves need LV myocardium on at least 3 slices (base to apex)"
    elif ins is None:
        note = "per-segment curves need the RV blood pool at ED (RV insertion points not found)"
    else:
        note = ""
    seg_ok = not note

    h, w = lab_ed.shape[1:]
    zs = np.nonzero(np.isfinite(centres[:, 0]))[0]
    seg_map = np.zeros((n_z, h, w), np.uint8)
    radial, circ = nan_t.copy(), nan_t.copy()
    seg_r, seg_c = nan_seg.copy(), nan_seg.copy()
    for t in range(n_t):
        u = mot[t][:, ys_, xs_].astype(np.float64)  # (Z, h, w, 2) voxels
        grad = deformation_gradient(u, sy, sx)
        s_r = s_c = s_w = 0.0
        sums = np.zeros((3, N_SEGMENTS + 1))  # weighted radial, weighted circ, weight per segment id
        for z in zs:
            got = slice_strain(u[z], [g[z] for g in grad], lab_ed[z], centres[z], sy, sx)
            if got is None:
                continue
            mask, theta, e_r, e_c, wgt = got
            s_r += float((wgt * e_r).sum())
            s_c += float((wgt * e_c).sum())
            s_w += float(wgt.sum())
            if seg_ok and levels[z] >= 0:
                sid = segment_ids(theta, int(levels[z]), ins[0], ins[1])  # type: ignore[index]
                sums[0] += np.bincount(sid, wgt * e_r, N_SEGMENTS + 1)
                sums[1] += np.bincount(sid, wgt * e_c, N_SEGMENTS + 1)
                sums[2] += np.bincount(sid, wgt, N_SEGMENTS + 1)
                if t == reference_frame:
                    seg_map[z][mask] = sid
        if s_w > 0:
            radial[t], circ[t] = 100.0 * s_r / s_w, 100.0 * s_c / s_w
        ok = sums[2, 1:] > 0
        seg_r[ok, t] = 100.0 * sums[0, 1:][ok] / sums[2, 1:][ok]
        seg_c[ok, t] = 100.0 * sums[1, 1:][ok] / sums[2, 1:][ok]
    full_map = np.zeros(lab_ed_full.shape, np.uint8)
    full_map[:, ys_, xs_] = seg_map
    return StrainResult(
        radial_percent=radial, circumferential_percent=circ,
        segment_radial_percent=seg_r if seg_ok else nan_seg, segment_circumferential_percent=seg_c if seg_ok else nan_seg,
        reference_frame=int(reference_frame), slice_level=levels, segments_available=seg_ok, note=note,
        insertion_angle_deg=float(np.degrees(ins[0])) if ins else None, septal_direction=ins[1] if ins else None,
        extra={"segment_map_ed": full_map},
    )
