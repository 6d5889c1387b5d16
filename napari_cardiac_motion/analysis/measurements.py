"""The clinical read-out of one cine: :class:`Measurements` and :func:`compute_measurements`.

``Measurements.to_dict()`` is the content of ``measurements.json``: the scalar measures (keys carry their
unit: ``lv_edv_ml``, ``lv_ef_percent``, ``lv_mass_g``, …), ``ed_frame``/``es_frame``, the curves
(``time_ms``, ``lv_volume_ml``, ``rv_volume_ml``, ``strain``), per-slice areas, ``units`` and ``help``
(one line per measure), model and input, and ``slices``: per ED/ES frame, slice and structure (LV, RV)
whether that slice counts in the volumes, why, and whether the user overrode the rule
(:mod:`.slices`). The ED/ES volumes, EF and mass sum the counted slices; the curves are the labelled
volume of every frame (every labelled slice).

The structures are found through the model's :class:`~..model_description.ModelDescription` (by class key
``LV``, ``Myo``, ``RV``); :attr:`Measurements.description` gives the plots their names and colours. It is
not part of ``measurements.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model_description import MR_DEFAULT, ModelDescription, describe
from .slices import Overrides, SliceDecision, SliceRules, counted_area, decide_slices
from .strain import SEGMENT_NAMES, StrainResult, strain_curves
from .volumes import (MM3_PER_ML, MYOCARDIAL_DENSITY_G_PER_ML, VolumeCurves, bsa_mosteller, choose_ed_es,
                      ejection_fraction_percent, myocardial_mass_g, volume_curves)

#: scalar measures in display order: key -> (unit, one line of help)
SCALAR_MEASURES: dict[str, tuple[str, str]] = {
    "lv_edv_ml": ("ml", "LV end-diastolic volume: LV blood pool of the counted slices at the ED frame"),
    "lv_esv_ml": ("ml", "LV end-systolic volume: LV blood pool of the counted slices at the ES frame"),
    "lv_sv_ml": ("ml", "LV stroke volume: EDV - ESV, blood ejected per beat"),
    "lv_ef_percent": ("%", "LV ejection fraction: 100 x SV / EDV"),
    "rv_edv_ml": ("ml", "RV end-diastolic volume (at the LV's ED frame)"),
    "rv_esv_ml": ("ml", "RV end-systolic volume (at the LV's ES frame)"),
    "rv_sv_ml": ("ml", "RV stroke volume: EDV - ESV"),
    "rv_ef_percent": ("%", "RV ejection fraction: 100 x SV / EDV"),
    "lv_mass_g": ("g", f"LV myocardial mass at ED: myocardial volume (slices whose LV counts) x "
                       f"{MYOCARDIAL_DENSITY_G_PER_ML} g/ml"),
    "bsa_m2": ("m²", "body surface area (Mosteller), from height and weight"),
    "lv_edv_index_ml_m2": ("ml/m²", "LV EDV indexed by body surface area"),
    "lv_esv_index_ml_m2": ("ml/m²", "LV ESV indexed by body surface area"),
    "lv_sv_index_ml_m2": ("ml/m²", "LV SV indexed by body surface area"),
    "rv_edv_index_ml_m2": ("ml/m²", "RV EDV indexed by body surface area"),
    "rv_esv_index_ml_m2": ("ml/m²", "RV ESV indexed by body surface area"),
    "lv_mass_index_g_m2": ("g/m²", "LV mass indexed by body surface area"),
    "peak_radial_strain_percent": ("%", "peak global radial strain: largest wall thickening vs ED (in-plane)"),
    "peak_circumferential_strain_percent": ("%", "peak global circumferential strain: most negative "
                                                 "shortening vs ED (in-plane)"),
    "gls_percent": ("%", "global longitudinal strain (echo): length change of the LV endocardial border from ED "
                         "to ES, the border carried by the motion (negative = shortening)"),
    "ed_frame": ("frame", "end-diastolic frame (largest LV volume unless overridden), 0-based"),
    "es_frame": ("frame", "end-systolic frame (smallest LV volume unless overridden), 0-based"),
    "ed_time_ms": ("ms", "time of the ED frame from the first frame"),
    "es_time_ms": ("ms", "time of the ES frame from the first frame"),
}

CURVE_UNITS = {
    "time_ms": "ms", "lv_volume_ml": "ml", "rv_volume_ml": "ml", "myo_volume_ml": "ml",
    "radial_strain_percent": "%", "circumferential_strain_percent": "%", "slice_area_mm2": "mm²",
    "longitudinal_strain_percent": "%",
}


def _clean(v: Any) -> Any:
    """JSON-friendly: numpy scalars to Python, NaN/inf to None, arrays to lists."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


@dataclass
class Measurements:
    """Every measure of one cine; see :data:`SCALAR_MEASURES` for units and meaning.

    Curves are per frame (``T``); ``time_ms`` is ``None`` when the frame interval is unknown.
    ``slice_area_mm2`` maps ``lv``/``myo``/``rv`` to ``(T, Z)`` areas. ``strain`` is ``None`` without motion.
    ``description`` is what the model segments (class names and colours for plots and tables).
    """

    scalars: dict[str, float | int | None]
    lv_volume_ml: np.ndarray
    rv_volume_ml: np.ndarray
    myo_volume_ml: np.ndarray
    time_ms: np.ndarray | None
    slice_area_mm2: dict[str, np.ndarray]
    strain: StrainResult | None = None
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    frame_interval_ms: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)
    input: str | None = None
    notes: list[str] = field(default_factory=list)
    description: ModelDescription = MR_DEFAULT
    #: per ED/ES frame, slice and structure: counted or not, and why (:func:`.slices.decide_slices`)
    slices: list[SliceDecision] = field(default_factory=list)
    slice_rules: SliceRules = field(default_factory=SliceRules)
    #: echo: the endocardial border's longitudinal strain per frame (%), None for MR
    longitudinal_strain_percent: np.ndarray | None = None

    def overrides(self) -> dict[tuple[int, int, str], bool]:
        """The user's slice choices in this read-out: ``{(frame, slice, structure): included}``."""
        return {d.key: d.included for d in self.slices if d.overridden}

    def __getitem__(self, key: str):
        return self.scalars[key]

    @property
    def ed_frame(self) -> int:
        return int(self.scalars["ed_frame"])  # type: ignore[arg-type]

    @property
    def es_frame(self) -> int:
        return int(self.scalars["es_frame"])  # type: ignore[arg-type]

    @property
    def n_frames(self) -> int:
        return int(self.lv_volume_ml.shape[0])

    def time_axis(self) -> tuple[np.ndarray, str]:
        """(x values, unit) for curves: ms when the frame interval is known, else frame numbers."""
        if self.time_ms is not None:
            return self.time_ms, "ms"
        return np.arange(self.n_frames, dtype=float), "frame"

    def strain_dict(self) -> dict[str, Any] | None:
        s = self.strain
        if s is None:
            return None
        segs = {}
        if s.segments_available:
            for i, name in enumerate(SEGMENT_NAMES):
                segs[str(i + 1)] = {"name": name, "radial_percent": s.segment_radial_percent[i],
                                    "circumferential_percent": s.segment_circumferential_percent[i]}
        pr, pr_t = s.peak_radial()
        pc, pc_t = s.peak_circumferential()
        return {
            "definition": "in-plane engineering (Lagrangian) strain |F e| - 1 vs the reference frame, "
                          "mean over the myocardium tracked from ED; radial/circumferential about the LV centre",
            "reference_frame": s.reference_frame,
            "radial_percent": s.radial_percent,
            "circumferential_percent": s.circumferential_percent,
            "peak_radial_percent": pr, "peak_radial_frame": pr_t,
            "peak_circumferential_percent": pc, "peak_circumferential_frame": pc_t,
            "segments_available": s.segments_available, "segments_note": s.note,
            "slice_level": [("basal", "mid", "apical")[v] if v >= 0 else None for v in s.slice_level],
            "rv_insertion_angle_deg": s.insertion_angle_deg,
            "aha_segments": segs,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready Python (NaN → ``None``); the layout of ``measurements.json``."""
        d: dict[str, Any] = dict(self.scalars)
        d.update({
            "time_ms": self.time_ms,
            "frame_interval_ms": self.frame_interval_ms,
            "lv_volume_ml": self.lv_volume_ml,
            "rv_volume_ml": self.rv_volume_ml,
            "myo_volume_ml": self.myo_volume_ml,
            "strain": self.strain_dict(),
            "longitudinal_strain_percent": self.longitudinal_strain_percent,
            "slice_area_mm2": self.slice_area_mm2,
            "spacing_mm": {"dz": self.spacing_mm[0], "dy": self.spacing_mm[1], "dx": self.spacing_mm[2]},
            "model": self.model,
            "input": self.input,
            "notes": self.notes,
            "slices": [d.to_dict() for d in self.slices],
            "slice_rules": self.slice_rules.to_dict(),
            "units": {**{k: u for k, (u, _) in SCALAR_MEASURES.items()}, **CURVE_UNITS},
            "help": {k: h for k, (_, h) in SCALAR_MEASURES.items()},
        })
        return _clean(d)

    def summary_row(self) -> dict[str, Any]:
        """One flat row (scalars + model + input) for a cohort CSV."""
        row = {k: self.scalars.get(k) for k in SCALAR_MEASURES}
        row.update({"model_name": self.model.get("name"), "model_version": self.model.get("version"),
                    "input": self.input})
        return _clean(row)


def counted_volumes(curves: VolumeCurves, decisions: list[SliceDecision], ed: int, es: int,
                    dz_mm: float) -> dict[str, float]:
    """ED/ES volumes (ml) of LV and RV and the ED myocardial volume (ml) over the counted slices."""
    def vol(key: str, frame: int, structure: str) -> float:
        return float(counted_area(curves.area_mm2[key], decisions, frame, structure).sum() * dz_mm / MM3_PER_ML)

    return {"lv_edv": vol("lv", ed, "LV"), "lv_esv": vol("lv", es, "LV"), "rv_edv": vol("rv", ed, "RV"),
            "rv_esv": vol("rv", es, "RV"), "myo_ed": vol("myo", ed, "LV")}


def volume_scalars(v: dict[str, float], bsa: float | None) -> dict[str, float | int | None]:
    """Volumes (ml), SV, EF (%), mass (g) and their BSA-indexed values from :func:`counted_volumes`."""
    lv_edv, lv_esv, rv_edv, rv_esv = v["lv_edv"], v["lv_esv"], v["rv_edv"], v["rv_esv"]
    mass = myocardial_mass_g(v["myo_ed"])
    s: dict[str, float | int | None] = {
        "lv_edv_ml": lv_edv, "lv_esv_ml": lv_esv, "lv_sv_ml": lv_edv - lv_esv,
        "lv_ef_percent": ejection_fraction_percent(lv_edv, lv_esv),
        "rv_edv_ml": rv_edv, "rv_esv_ml": rv_esv, "rv_sv_ml": rv_edv - rv_esv,
        "rv_ef_percent": ejection_fraction_percent(rv_edv, rv_esv),
        "lv_mass_g": mass, "bsa_m2": bsa,
    }
    for key, val in (("lv_edv", lv_edv), ("lv_esv", lv_esv), ("lv_sv", lv_edv - lv_esv),
                     ("rv_edv", rv_edv), ("rv_esv", rv_esv)):
        s[f"{key}_index_ml_m2"] = val / bsa if bsa else None
    s["lv_mass_index_g_m2"] = mass / bsa if bsa else None
    return s


#: the measures that need two different frames (ED and ES): undefined when they are the same frame
SYSTOLIC_MEASURES = ("lv_esv_ml", "lv_sv_ml", "lv_ef_percent", "rv_esv_ml", "rv_sv_ml", "rv_ef_percent",
                     "lv_esv_index_ml_m2", "lv_sv_index_ml_m2", "rv_esv_index_ml_m2", "rv_sv_index_ml_m2")


def unknown_label_values(labels: np.ndarray, desc: ModelDescription) -> list[int]:
    """Label values in ``labels`` that are neither background nor a class of ``desc`` (sorted)."""
    a = np.asarray(labels)
    if a.dtype in (np.uint8, np.uint16, np.int8, np.int16) and a.size and int(a.min()) >= 0:
        present = np.flatnonzero(np.bincount(a.ravel().astype(np.int64, copy=False)))
    else:
        present = np.unique(a)
    known = {0, *(c.value for c in desc.classes)}
    return [int(v) for v in present if int(v) not in known]


def readout_checks(labels: np.ndarray, curves: VolumeCurves, ed: int, es: int, desc: ModelDescription,
                   scalars: dict[str, Any]) -> list[str]:
    """Notes on what the labels cannot give, and the measures blanked (``None``) for it in ``scalars``: ED
    and ES on the same frame (one frame, or a volume curve with no change) leave ESV, SV and EF undefined
    (they read 0 % before); no LV blood pool at ED; label values that are not the model's structures."""
    notes: list[str] = []
    n_t = curves.lv_ml.shape[0]
    if ed == es:
        for key in SYSTOLIC_MEASURES:
            scalars[key] = None
        why = "the labels have one frame" if n_t == 1 else f"ED and ES are the same frame ({ed})"
        notes.append(f"{why}: ESV, stroke volume and EF need two different frames")
    lv = desc.by_key("LV")
    if lv is not None and float(curves.lv_ml[ed]) == 0:
        notes.append(f"no {lv.name} at ED: LV volumes and EF are not available")
    odd = unknown_label_values(labels, desc)
    if odd:
        shown = ", ".join(str(v) for v in odd[:6]) + (", …" if len(odd) > 6 else "")
        known = ", ".join(f"{c.value} {c.name}" for c in desc.classes)
        notes.append(f"label value(s) {shown} are not structures of this model ({known}) and are not measured")
    return notes


def compute_measurements(
    labels: np.ndarray,
    spacing,
    frame_interval_ms: float = 0.0,
    motion: np.ndarray | None = None,
    motion_reference_frame: int | None = None,
    ed_frame: int | None = None,
    es_frame: int | None = None,
    height_cm: float | None = None,
    weight_kg: float | None = None,
    affine: np.ndarray | None = None,
    model: dict[str, Any] | None = None,
    input: str | None = None,  # noqa: A002 (the JSON key)
    description: ModelDescription | None = None,
    slice_rules: SliceRules | None = None,
    slice_overrides: Overrides | None = None,
) -> Measurements:
    """The full read-out from labels ``(T, Z, Y, X)`` (and motion ``(T, Z, Y, X, 2)`` for strain).

    Args:
        spacing: ``(dz, dy, dx)`` mm. frame_interval_ms: 0 when unknown (curves then use frame numbers).
        motion_reference_frame: the frame the motion maps to (its ED; default: the ED frame used here).
            Strain is relative to that frame even when ``ed_frame`` overrides the volumes' ED.
        ed_frame, es_frame: override the choice from the LV volume curve (largest / smallest).
        height_cm, weight_kg: for body surface area (Mosteller) and indexed values.
        affine: the image's NIfTI affine (orientation of the AHA segments).
        description: what the model segments (which label value is LV, Myo, RV); default: today's MR model.
        slice_rules: which slices count (:class:`.slices.SliceRules`; default: the clinical rules;
            ``SliceRules.none()`` counts every labelled slice).
        slice_overrides: the user's choices ``{(frame, slice, "LV"|"RV"): included}``.
    """
    desc = description or MR_DEFAULT
    rules = slice_rules or SliceRules()
    curves = volume_curves(labels, spacing, frame_interval_ms, desc)
    ed, es = choose_ed_es(curves.lv_ml, ed_frame, es_frame)
    decisions = decide_slices(labels, spacing, ed, es, desc, rules, slice_overrides)
    s = volume_scalars(counted_volumes(curves, decisions, ed, es, float(spacing[0])),
                       bsa_mosteller(height_cm, weight_kg))
    s.update({"ed_frame": ed, "es_frame": es,
              "ed_time_ms": ed * frame_interval_ms if frame_interval_ms > 0 else None,
              "es_time_ms": es * frame_interval_ms if frame_interval_ms > 0 else None})
    notes = readout_checks(labels, curves, ed, es, desc, s)
    n_t = curves.lv_ml.shape[0]
    if float(curves.rv_ml[ed]) == 0:
        rv = desc.by_key("RV")
        notes.append(f"no {rv.name if rv is not None else 'RV blood pool'} at ED: RV measures are not available")
    n_out = sum(not d.included for d in decisions)
    if n_out:
        notes.append(f"{n_out} labelled slice(s) not counted in the ED/ES volumes (see the slices table)")
    strain = None
    if motion is not None and n_t > 1:
        ref = ed if motion_reference_frame is None else int(motion_reference_frame)
        if ref != ed:
            notes.append(f"strain is relative to frame {ref}, the frame the motion was estimated to")
        strain = strain_curves(motion, np.asarray(labels).reshape(np.shape(motion)[:4]), spacing, ref, affine)
        s["peak_radial_strain_percent"] = strain.peak_radial()[0]
        s["peak_circumferential_strain_percent"] = strain.peak_circumferential()[0]
        if strain.note:
            notes.append(strain.note)
    else:
        s["peak_radial_strain_percent"] = s["peak_circumferential_strain_percent"] = None
    ordered = {k: s.get(k) for k in SCALAR_MEASURES}
    return Measurements(
        scalars=ordered, lv_volume_ml=curves.lv_ml, rv_volume_ml=curves.rv_ml, myo_volume_ml=curves.myo_ml,
        time_ms=curves.time_ms, slice_area_mm2=curves.area_mm2, strain=strain,
        spacing_mm=tuple(float(v) for v in spacing), frame_interval_ms=float(frame_interval_ms),  # type: ignore[arg-type]
        model=dict(model or {}), input=input, notes=notes, description=desc, slices=decisions, slice_rules=rules,
    )


def measurements_for_prediction(result, cine, model_meta: dict | None = None, input: str | None = None,  # noqa: A002
                                height_cm: float | None = None, weight_kg: float | None = None) -> Measurements:
    """The read-out of an :class:`~..inference.InferenceResult` on its :class:`~..cine.Cine`.

    ``model_meta`` is the model's checkpoint metadata: its name and version go into the read-out, its
    description (:func:`~..model_description.describe`) says which label is which structure.
    """
    meta = model_meta or {}
    return compute_measurements(
        result.labels, cine.spacing, cine.frame_interval_ms, motion=result.motion,
        motion_reference_frame=result.ed_frame, ed_frame=result.ed_frame, es_frame=None,
        height_cm=height_cm, weight_kg=weight_kg, affine=cine.affine,
        model={"name": meta.get("name"), "version": meta.get("version")}, input=input,
        description=describe(meta),
    )
