"""The echo read-out of one predicted clip (``measurements.json`` of ``predict --model echo``; no Qt).

One apical view gives the single-plane Simpson volumes and EF (:func:`.echo.measure_echo`) and the global
longitudinal strain from the model's motion (:mod:`.echo_strain`). ED and ES are the prediction's frames
(largest / smallest LV cavity area unless the user gave ED). Which view the clip is (2- or 4-chamber) is
guessed from the file name (``2CH``/``A2C``, ``4CH``/``A4C``); the single-plane formula does not depend on it.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..model_description import ECHO_DEFAULT, ModelDescription
from .echo import EchoView, measure_echo
from .echo_strain import gls_readout

if TYPE_CHECKING:  # pragma: no cover
    from .measurements import Measurements


def view_from_name(name: str | None) -> str | None:
    """``"a2c"`` / ``"a4c"`` when the name says which apical view it is, else None."""
    s = str(name or "").upper()
    if re.search(r"(^|[^0-9])(2CH|A2C)", s):
        return "a2c"
    if re.search(r"(^|[^0-9])(4CH|A4C)", s):
        return "a4c"
    return None


def echo_readout(labels: np.ndarray, motion: np.ndarray | None, spacing_yx: tuple[float, float], ed: int, es: int,
                 spacing_known: bool = True, view: str | None = None,
                 description: ModelDescription | None = None) -> dict[str, Any]:
    """The read-out of one view: labels ``(T, Y, X)``, motion ``(T, Y, X, 2)`` (pull, t → ED; None: no GLS)
    with the pixel size ``(dy, dx)`` mm, ED/ES frames. Keys of :func:`.echo.measure_echo` plus ``gls_percent``
    (strain at ES), ``strain_curve_percent``, ``lv_area_mm2`` per frame and ``view``."""
    keys = {"lv": 1, "myo": 2, "la": 3}
    if description is not None:
        for k, key in (("lv", "LV"), ("myo", "Myo"), ("la", "LA")):
            v = description.value_of(key)
            keys[k] = v if v is not None else -1
    key = view or "a4c"
    ev = EchoView(key.upper(), np.asarray(labels), tuple(float(s) for s in spacing_yx), int(ed), int(es),
                  spacing_known)
    out = measure_echo(**{key: ev}, **keys)
    out["view"] = key if view else "unknown (single plane; the file name does not say 2CH or 4CH)"
    if out.get("lv_ef_percent") is not None and out["lv_ef_percent"] < 0:
        out["warning"] = ("the ES volume exceeds the ED volume (the ED frame has the larger cavity area but the "
                          "smaller Simpson volume): implausible labels; check them before using the EF")
    out["lv_area_mm2" if spacing_known else "lv_area_px"] = [
        round(float((f == keys["lv"]).sum() * np.prod(spacing_yx)), 2) for f in labels]
    if motion is not None and labels.shape[0] > 1:
        try:
            out.update(gls_readout(labels, motion, spacing_yx, int(es), int(ed), **keys))
            out["gls_note"] = (None if spacing_known
                               else "strain is a ratio: exact without a pixel size for square pixels")
        except InputError as exc:
            out["gls_note"] = f"not computed: {exc}"
    return out


def echo_measurements_for_prediction(result, cine, model_meta: dict | None = None,
                                     input: str | None = None,  # noqa: A002
                                     description: ModelDescription | None = None) -> dict[str, Any]:
    """The echo ``measurements.json`` of an :class:`~..inference.InferenceResult` on its one-slice
    :class:`~..cine.Cine` (``(T, 1, Y, X)``): :func:`echo_readout` plus model, input and the frame times."""
    if result.labels.shape[1] != 1:
        raise InputError(f"The echo read-out needs a one-slice clip (T, 1, Y, X); got {result.labels.shape}.")
    meta = model_meta or {}
    dt = float(getattr(cine, "frame_interval_ms", 0.0) or 0.0)
    try:
        out = echo_readout(result.labels[:, 0], result.motion[:, 0], (cine.spacing[1], cine.spacing[2]),
                           result.ed_frame, result.es_frame, bool(getattr(cine, "spacing_known", True)),
                           view_from_name(input or getattr(cine, "name", "")), description)
    except InputError as exc:  # e.g. no LV cavity found in the ED or ES frame
        out = {"lv_edv_ml": None, "lv_esv_ml": None, "lv_ef_percent": None, "gls_percent": None,
               "error": str(exc)}
    out.update({"ed_frame": int(result.ed_frame), "es_frame": int(result.es_frame), "modality": "US",
                "time_ms": [round(t * dt, 2) for t in range(result.labels.shape[0])] if dt > 0 else None,
                "model": {"name": meta.get("name"), "version": meta.get("version")}, "input": input})
    return _finite(out)


def add_gls_from_flows(result: dict[str, Any], views: dict[str, EchoView], flows: dict[str, str | None],
                       lv: int = 1) -> None:
    """``measure-echo`` with motion files: fill the :func:`.echo.measure_echo` ``result["gls_percent"]`` (mean over
    the views with a flow file) and each view's strain curve from the motion files (pull, frame t → ED; ED = the
    flow's zero frame; ES = the read-out's ES frame)."""
    from ..io.nifti_motion import read_nifti_flow

    values = []
    for key, path in flows.items():
        if not path:
            continue
        flow = read_nifti_flow(path)
        view = views[key]
        if flow.shape[1] != 1 or flow.shape[0] != view.labels.shape[0] or flow.shape[2:4] != view.labels.shape[1:]:
            raise InputError(f"--{key}-flow {path} has shape {flow.shape[:4]} (T, Z, Y, X); it must be the motion "
                             f"of the {key.upper()} labels {view.labels.shape} (T, Y, X) with one slice.")
        g = gls_readout(view.labels, flow[:, 0], view.spacing, result["views"][key]["es_frame"], lv=lv)
        result["views"][key].update(g)
        values.append(g["gls_percent"])
    if values:
        result["gls_percent"] = round(float(np.mean(values)), 2)
        result["gls_note"] = (f"mean of {len(values)} view(s): endocardial border (LV cavity border minus the "
                              "mitral segment) carried by the motion, strain at ES")


def single_plane_curve_ml(labels: np.ndarray, spacing_yx: tuple[float, float], lv: int = 1, myo: int = 2,
                          la: int = 3) -> np.ndarray:
    """``(T,)`` single-plane Simpson volume (ml) of every frame of ``(T, Y, X)`` labels, each with its own long
    axis (NaN where a frame has no LV cavity)."""
    from .echo import view_geometry

    out = np.full(labels.shape[0], np.nan)
    for t, frame in enumerate(labels):
        try:
            out[t] = view_geometry(frame, spacing_yx, lv, myo, la).single_plane_ml()
        except InputError:
            pass
    return out


def echo_measurements(labels: np.ndarray, motion: np.ndarray | None, spacing: tuple[float, float, float],
                      frame_interval_ms: float, ed: int | None, es: int | None, model: dict[str, Any] | None = None,
                      input: str | None = None, description: ModelDescription | None = None,  # noqa: A002
                      spacing_known: bool = True) -> "Measurements":
    """The echo read-out of a one-slice clip as a :class:`.measurements.Measurements` (the "Cardiac function"
    panel's table, curves and exports): labels ``(T, 1, Y, X)``, motion ``(T, 1, Y, X, 2)`` or None, spacing
    ``(dz, dy, dx)`` mm. Scalars: LV EDV/ESV/SV/EF (single-plane Simpson), GLS and the ED/ES frames; the LV
    curve is each frame's single-plane volume; ``longitudinal_strain_percent`` the GLS curve. ED defaults to
    the largest LV cavity (the motion's frame when motion is given), ES to the smallest."""
    from .measurements import SCALAR_MEASURES, Measurements

    lab = np.asarray(labels)[:, 0]
    n_t = lab.shape[0]
    lv_value = description.value_of("LV") if description is not None else 1
    area = np.array([(f == (lv_value or 1)).sum() for f in lab], float)
    ed = int(np.argmax(area)) if ed is None else int(ed)
    es = int(np.argmin(area)) if es is None else int(es)
    mot = None if motion is None else np.asarray(motion)[:, 0]
    if mot is not None and np.abs(mot[ed]).max() > 0:  # GLS needs the motion's own reference frame as ED
        mot = None
    out = echo_readout(lab, mot, (spacing[1], spacing[2]), ed, es, spacing_known, None, description)
    edv, esv = out.get("lv_edv_ml"), out.get("lv_esv_ml")
    scalars: dict[str, Any] = {k: None for k in SCALAR_MEASURES}
    scalars.update(lv_edv_ml=edv, lv_esv_ml=esv, lv_sv_ml=None if edv is None else round(edv - esv, 2),
                   lv_ef_percent=out.get("lv_ef_percent"), gls_percent=out.get("gls_percent"), ed_frame=ed,
                   es_frame=es)
    time_ms = np.arange(n_t) * frame_interval_ms if frame_interval_ms > 0 else None
    if time_ms is not None:
        scalars.update(ed_time_ms=float(time_ms[ed]), es_time_ms=float(time_ms[es]))
    curve = single_plane_curve_ml(lab, (spacing[1], spacing[2])) if spacing_known else np.full(n_t, np.nan)
    gls = out.get("strain_curve_percent")
    notes = [out["method"]] if "method" in out else []
    if mot is None and motion is not None:
        notes.append("GLS needs the motion of the model that made these labels, with ED as its reference frame")
    empty = np.zeros((n_t, 1))
    return Measurements(scalars=scalars, lv_volume_ml=curve, rv_volume_ml=np.zeros(n_t), myo_volume_ml=np.zeros(n_t),
                        time_ms=time_ms, slice_area_mm2={"lv": area[:, None] * np.prod(spacing[1:]), "myo": empty,
                                                         "rv": empty},
                        spacing_mm=tuple(float(s) for s in spacing), frame_interval_ms=frame_interval_ms,
                        model=dict(model or {}), input=input, notes=notes,
                        description=description or ECHO_DEFAULT,
                        longitudinal_strain_percent=None if gls is None else np.asarray(gls, float))


def _finite(v: Any) -> Any:
    """JSON-ready: NaN and infinities to None (recursively)."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
