"""Echo read-out: LV volumes and ejection fraction by Simpson's method of discs (no Qt, no napari).

Input per apical view (2-chamber ``A2C``, 4-chamber ``A4C``): labels ``(T, Y, X)`` uint8 (rows = depth,
apex at the top; ``1`` LV cavity, ``2`` LV myocardium, ``3`` left atrium, as CAMUS and the echo model's
:data:`~..model_description.ECHO_DEFAULT`) with the pixel size ``(dy, dx)`` in mm.

Geometry of one frame (:func:`view_geometry`), in mm:

* the LV cavity = the largest connected region of label 1, holes filled;
* the **mitral annulus**: the two ends of the cavity's open (basal) border, i.e. the cavity border that
  does not touch the myocardium (label 2); without myocardium labels the border touching the left atrium
  (label 3); without either, the deepest two rows of the cavity border (rows = depth, apex at the top). The two annulus
  points are the extremes of that border along its own direction; ``base`` is their midpoint;
* the **apex**: the point of the cavity border farthest from ``base``;
* the **long axis** ``L`` = ``|apex − base|``; it is cut into :data:`N_DISCS` = 20 slabs of height ``L/20``
  perpendicular to it. The diameter ``d_i`` of disc ``i`` is the mean, over 5 lines across the slab, of
  the length of cavity the line crosses (the cavity below the annulus line is not counted).

Volumes (mm³, ÷ 1000 → ml):

* biplane: ``V = π/4 · Σ_{i=1..20} a_i · b_i · h`` with ``a_i`` (A2C) and ``b_i`` (A4C) the disc diameters
  at the same fraction of each view's own long axis and ``h`` the disc height;
* single plane (one view): ``V = π/4 · Σ_{i=1..20} d_i² · h``;
* ``EF = 100 · (EDV − ESV) / EDV`` (%).

The disc height ``h = L/20`` depends on the ``length_rule``:

* ``"camus"`` (default): one ``L`` for both volumes, the longest of the long axes measured (both views, ED
  and ES), as the CAMUS challenge's reference computes its EF (Leclerc et al., IEEE TMI 2019); the EF
  then agrees with CAMUS's reference values;
* ``"per-frame"`` (ASE/EACVI): each volume takes the longer of its own two long axes (ED with the ED
  axes, ES with the ES axes); ES volumes come out smaller and the EF larger (≈ +9 points on the CAMUS
  patients here).

ED and ES per view: given frame indices, else the frames of the largest and smallest LV cavity area.
Global longitudinal strain needs the endocardial border tracked by an echo model's motion; it is left out
(``gls_percent`` is ``None``) and :func:`longitudinal_strain_percent` is where it plugs in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError

N_DISCS = 20
LV_CAVITY, LV_MYOCARDIUM, LEFT_ATRIUM = 1, 2, 3
MM3_PER_ML = 1000.0
#: lines per disc over which the diameter is averaged, and the sampling step along a line (mm)
LINES_PER_DISC = 5
SAMPLE_MM = 0.1


@dataclass
class ViewGeometry:
    """One frame of one view, in mm (points are ``(y, x)`` = (depth, lateral) from the image corner).

    Attributes:
        apex, base: apex point and mitral-annulus midpoint; annulus: the two annulus points ``(2, 2)``.
        length_mm: long axis ``|apex − base|``; diameters_mm: ``(20,)`` disc diameters from base to apex.
        area_mm2: cavity area; base_from: which border gave the annulus (``"myocardium"``, ``"atrium"``,
            ``"shape"``).
    """

    apex: np.ndarray
    base: np.ndarray
    annulus: np.ndarray
    length_mm: float
    diameters_mm: np.ndarray
    area_mm2: float
    base_from: str

    def single_plane_ml(self, length_mm: float | None = None) -> float:
        """``π/4 · Σ d_i² · L/20`` in ml (``L`` = ``length_mm``, default this frame's long axis)."""
        return discs_ml(self.diameters_mm, self.diameters_mm, self.length_mm if length_mm is None else length_mm)


LENGTH_RULES = ("camus", "per-frame")


def discs_ml(a_mm: np.ndarray, b_mm: np.ndarray, length_mm: float) -> float:
    """``π/4 · Σ a_i b_i · L/n`` in ml (``b = a`` for a single plane); diameters and ``L`` in mm."""
    a, b = np.asarray(a_mm, float), np.asarray(b_mm, float)
    return float(np.pi / 4 * np.sum(a * b) * length_mm / len(a) / MM3_PER_ML)


def biplane_ml(a2c: ViewGeometry, a4c: ViewGeometry, length_mm: float | None = None) -> float:
    """Biplane volume in ml; ``L`` = ``length_mm``, default the longer of the two long axes."""
    length = max(a2c.length_mm, a4c.length_mm) if length_mm is None else length_mm
    return discs_ml(a2c.diameters_mm, a4c.diameters_mm, length)


def ejection_fraction(edv: float, esv: float) -> float | None:
    """``100 (EDV − ESV) / EDV`` in %, ``None`` when EDV is not positive."""
    return None if not edv > 0 else float(100.0 * (edv - esv) / edv)


def longitudinal_strain_percent(border_ed_mm: np.ndarray, border_t_mm: np.ndarray) -> float:
    """Lagrangian strain ``100 (ℓ_t − ℓ_ED) / ℓ_ED`` of an endocardial border: the same ordered points
    ``(N, 2)`` mm at ED and at frame t (tracked by the motion). GLS is its value at ES (negative)."""
    def length(p: np.ndarray) -> float:
        return float(np.sum(np.linalg.norm(np.diff(np.asarray(p, float), axis=0), axis=1)))

    l0 = length(border_ed_mm)
    if l0 <= 0:
        raise InputError("The endocardial border at ED has no length; check the ED labels.")
    return 100.0 * (length(border_t_mm) - l0) / l0


def cavity_mask(labels: np.ndarray, lv: int = LV_CAVITY) -> np.ndarray:
    """The largest connected region of ``labels == lv`` ``(Y, X)``, holes filled."""
    lab, n = ndimage.label(np.asarray(labels) == lv)
    if n == 0:
        return np.zeros(np.shape(labels), bool)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))


def _border(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _base_pixels(labels: np.ndarray, cavity: np.ndarray, myo: int, la: int) -> tuple[np.ndarray, str]:
    """Border pixels ``(N, 2)`` (row, col) of the cavity's basal opening and where they came from."""
    border = _border(cavity)
    for value, name, keep_touching in ((myo, "myocardium", False), (la, "atrium", True)):
        other = np.asarray(labels) == value
        if other.sum() < 10:
            continue
        near = ndimage.binary_dilation(other, iterations=2)
        cand = border & (near if keep_touching else ~near)
        lab, n = ndimage.label(cand, structure=np.ones((3, 3)))
        if n == 0:
            continue
        sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
        best = lab == 1 + int(np.argmax(sizes))
        if best.sum() >= 3:
            return np.argwhere(best), name
    return np.empty((0, 2), int), "shape"


def _shape_base(cavity: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Without myocardium or atrium: the deepest two rows of the cavity border (rows = depth, apex at the
    top), as mm points."""
    pts = np.argwhere(_border(cavity)) * scale
    depth = pts[:, 0]
    return pts[depth >= depth.max() - 1.5 * scale[0]]


def _annulus(base_mm: np.ndarray) -> np.ndarray:
    """The two extreme points of a basal border ``(N, 2)`` mm along its principal direction."""
    centre = base_mm.mean(0)
    if len(base_mm) < 2:
        return np.stack([centre, centre])
    _, vecs = np.linalg.eigh(np.cov((base_mm - centre).T))
    proj = (base_mm - centre) @ vecs[:, -1]
    return np.stack([base_mm[int(np.argmin(proj))], base_mm[int(np.argmax(proj))]])


def disc_diameters(cavity: np.ndarray, scale: np.ndarray, base: np.ndarray, apex: np.ndarray,
                   n_discs: int = N_DISCS) -> np.ndarray:
    """``(n_discs,)`` diameters (mm) of the slabs perpendicular to ``base → apex`` (module docstring)."""
    axis = apex - base
    length = float(np.linalg.norm(axis))
    u = axis / length
    v = np.array([-u[1], u[0]])
    half = float(np.hypot(*(np.array(cavity.shape) * scale)))
    w = np.arange(-half, half, SAMPLE_MM)
    s = (np.arange(n_discs * LINES_PER_DISC) + 0.5) / (n_discs * LINES_PER_DISC) * length
    pts = base[None, None] + s[:, None, None] * u + w[None, :, None] * v  # (lines, samples, 2) mm
    rc = pts / scale
    inside = ndimage.map_coordinates(cavity.astype(np.float32), [rc[..., 0], rc[..., 1]], order=1,
                                     mode="constant", cval=0.0) >= 0.5
    chords = inside.sum(1) * SAMPLE_MM
    return chords.reshape(n_discs, LINES_PER_DISC).mean(1)


def view_geometry(labels: np.ndarray, spacing: tuple[float, float], lv: int = LV_CAVITY,
                  myo: int = LV_MYOCARDIUM, la: int = LEFT_ATRIUM) -> ViewGeometry:
    """Apex, annulus, long axis and disc diameters of one frame's labels ``(Y, X)`` (module docstring);
    ``spacing`` is ``(dy, dx)`` mm. Raises :class:`InputError` when the frame has no LV cavity."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise InputError(f"One frame of labels must be 2D (Y, X); got shape {lab.shape}.")
    cavity = cavity_mask(lab, lv)
    if cavity.sum() < 20:
        raise InputError(f"The frame has no LV cavity (label {lv}, {int(cavity.sum())} pixels); check the "
                         "labels or the --lv-label value.")
    scale = np.asarray(spacing, float)
    base_px, base_from = _base_pixels(lab, cavity, myo, la)
    base_mm = base_px * scale if len(base_px) else _shape_base(cavity, scale)
    annulus = _annulus(base_mm)
    base = annulus.mean(0)
    border = np.argwhere(_border(cavity)) * scale
    apex = border[int(np.argmax(np.linalg.norm(border - base, axis=1)))]
    length = float(np.linalg.norm(apex - base))
    if length <= 0:
        raise InputError("The LV cavity has no long axis (apex at the annulus); check the labels.")
    diam = disc_diameters(cavity, scale, base, apex)
    return ViewGeometry(apex, base, annulus, length, diam, float(cavity.sum() * scale.prod()), base_from)


@dataclass
class EchoView:
    """One apical view's labels ``(T, Y, X)`` with pixel size ``(dy, dx)`` mm and optional ED/ES indices."""

    name: str
    labels: np.ndarray
    spacing: tuple[float, float]
    ed: int | None = None
    es: int | None = None
    spacing_known: bool = True
    files: list[str] = field(default_factory=list)

    def ed_es(self, lv: int = LV_CAVITY) -> tuple[int, int, str]:
        """``(ed, es, how)``: the given indices, else the largest / smallest LV cavity area."""
        n = self.labels.shape[0]
        if self.ed is not None and self.es is not None:
            for k, v in (("ED", self.ed), ("ES", self.es)):
                if not 0 <= v < n:
                    raise InputError(f"{self.name}: {k} frame {v} is outside 0..{n - 1}; give a 0-based index.")
            return int(self.ed), int(self.es), "given"
        if n < 2:
            raise InputError(f"{self.name} has one frame; give at least the ED and ES frames (two label files "
                             "or a clip X×Y×T).")
        areas = np.array([cavity_mask(f, lv).sum() for f in self.labels], float)
        ed = int(np.argmax(areas)) if self.ed is None else int(self.ed)
        es = int(np.argmin(areas)) if self.es is None else int(self.es)
        return ed, es, "largest / smallest LV cavity area"


def measure_echo(a2c: EchoView | None = None, a4c: EchoView | None = None, lv: int = LV_CAVITY,
                 myo: int = LV_MYOCARDIUM, la: int = LEFT_ATRIUM, length_rule: str = "camus") -> dict[str, Any]:
    """The echo read-out as a JSON-ready dict (``measurements.json``): ``lv_edv_ml``, ``lv_esv_ml``,
    ``lv_ef_percent``, ``gls_percent`` (``None``: needs motion), the method and, per view, the ED/ES
    frames, long axes, areas, single-plane volumes and disc diameters. Volumes are ``None`` (EF kept)
    when a view's pixel size is unknown. ``length_rule``: see the module docstring."""
    views = {k: v for k, v in (("a2c", a2c), ("a4c", a4c)) if v is not None}
    if not views:
        raise InputError("No view given; pass the 2-chamber labels (--a2c), the 4-chamber labels (--a4c) or both.")
    if length_rule not in LENGTH_RULES:
        raise InputError(f"Unknown length rule {length_rule!r}; use one of {', '.join(LENGTH_RULES)}.")
    geo: dict[str, dict[str, ViewGeometry]] = {}
    out_views: dict[str, Any] = {}
    for key, view in views.items():
        ed, es, how = view.ed_es(lv)
        g = {"ed": view_geometry(view.labels[ed], view.spacing, lv, myo, la),
             "es": view_geometry(view.labels[es], view.spacing, lv, myo, la)}
        geo[key] = g
        out_views[key] = _view_dict(view, ed, es, how, g)
    longest = max(g.length_mm for pair in geo.values() for g in pair.values())
    lengths = {p: (longest if length_rule == "camus" else max(geo[k][p].length_mm for k in geo))
               for p in ("ed", "es")}
    if len(geo) == 2:
        method = f"biplane Simpson (method of discs, {N_DISCS} discs, A2C + A4C)"
        edv, esv = (biplane_ml(geo["a2c"][p], geo["a4c"][p], lengths[p]) for p in ("ed", "es"))
    else:
        key = next(iter(geo))
        method = f"single-plane Simpson (method of discs, {N_DISCS} discs, {key.upper()} only)"
        edv, esv = (geo[key][p].single_plane_ml(lengths[p]) for p in ("ed", "es"))
    method += ("; disc height from the longest long axis of all frames (CAMUS)" if length_rule == "camus"
               else "; disc height from the longer long axis of each instant (ASE)")
    known = all(v.spacing_known for v in views.values())
    result: dict[str, Any] = {
        "method": method,
        "length_rule": length_rule,
        "disc_height_long_axis_mm": {p: round(float(v), 2) for p, v in lengths.items()},
        "lv_edv_ml": round(edv, 2) if known else None,
        "lv_esv_ml": round(esv, 2) if known else None,
        "lv_ef_percent": None if ejection_fraction(edv, esv) is None else round(ejection_fraction(edv, esv), 2),
        "gls_percent": None,
        "gls_note": "global longitudinal strain needs the motion of an echo model; not computed from labels",
        "spacing_known": known,
        "views": out_views,
    }
    if not known:
        result["spacing_note"] = ("a view has no physical pixel size: volumes are not given in ml; the EF is "
                                  "computed in pixel units (exact only for square pixels)")
    return result


def _view_dict(view: EchoView, ed: int, es: int, how: str, g: dict[str, ViewGeometry]) -> dict[str, Any]:
    def r(x: float) -> float:
        return round(float(x), 2)

    return {
        "ed_frame": ed, "es_frame": es, "ed_es_from": how, "n_frames": int(view.labels.shape[0]),
        "spacing_mm": [float(s) for s in view.spacing], "spacing_known": view.spacing_known,
        "files": list(view.files),
        **{f"{p}_{k}": v for p in ("ed", "es") for k, v in (
            ("long_axis_mm", r(g[p].length_mm)), ("area_mm2", r(g[p].area_mm2)),
            ("single_plane_ml", r(g[p].single_plane_ml())), ("annulus_from", g[p].base_from),
            ("disc_diameters_mm", [r(d) for d in g[p].diameters_mm]))},
    }


def echo_view_from_files(name: str, paths: list[str], ed: int | None = None, es: int | None = None,
                         pixel_mm: float | None = None) -> EchoView:
    """An :class:`EchoView` from label files: one clip ``(X, Y, T)`` (NIfTI or MetaImage) or one 2D file
    per frame (in the order given). ``pixel_mm`` overrides the files' pixel size (square pixels)."""
    from ..io.echo_nifti import read_nifti_label_frames
    from ..io.mhd import is_mhd_path, read_mhd_label_frames

    if not paths:
        raise InputError(f"No label file for {name}; give one clip (X, Y, T) or one 2D file per frame.")
    frames, spacings, known = [], [], True
    for p in paths:
        if is_mhd_path(p):
            lab, sp = read_mhd_label_frames(p)
            k = not all(abs(s - 1.0) < 1e-9 for s in sp)
        else:
            fr = read_nifti_label_frames(p, "2d+t")
            lab, sp, k = fr.data, fr.spacing, fr.spacing_known
        frames.append(lab)
        spacings.append(tuple(float(s) for s in sp))
        known = known and k
    shapes = {f.shape[1:] for f in frames}
    if len(shapes) != 1:
        raise InputError(f"The {name} label files have different sizes {sorted(shapes)}; give frames of one clip.")
    if len(set(spacings)) != 1:
        raise InputError(f"The {name} label files have different pixel sizes {sorted(set(spacings))}; give frames "
                         "of one clip.")
    spacing = spacings[0] if pixel_mm is None else (float(pixel_mm), float(pixel_mm))
    return EchoView(name, np.concatenate(frames), spacing, ed, es, known or pixel_mm is not None,
                    [str(p) for p in paths])
