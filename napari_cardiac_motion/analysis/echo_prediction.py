"""The echo read-out of one predicted clip (``measurements.json`` of ``predict --model echo``; no Qt).

One apical view gives the single-plane Simpson volumes and EF (:func:`.echo.measure_echo`) and the global
longitudinal strain from the model's motion (:mod:`.echo_strain`). ED and ES are the prediction's frames
(largest / smallest LV cavity area unless the user gave ED). Which view the clip is (2- or 4-chamber) is
guessed from the file name (``2CH``/``A2C``, ``4CH``/``A4C``); the single-plane formula does not depend on it.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..errors import InputError
from ..model_description import ModelDescription
from .echo import EchoView, measure_echo
from .echo_strain import gls_readout


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
    out["lv_area_mm2" if spacing_known else "lv_area_px"] = [
        round(float((f == keys["lv"]).sum() * np.prod(spacing_yx)), 2) for f in labels]
    if motion is not None and labels.shape[0] > 1:
        try:
            out.update(gls_readout(labels, motion, spacing_yx, int(es), int(ed), **keys))
            out["gls_note"] = None if spacing_known else "strain is a ratio: exact without a pixel size for square pixels"
        except InputError as exc:
            out["gls_note"] = f"not computed: {exc}"
    return out


def echo_measurements_for_prediction(result, cine, model_meta: dict | None = None, input: str | None = None,  # noqa: A002
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
    """``measure-echo`` with motion files: fill the :func:`.echo.measure_echo` ``result["gls_percent"]`` (mean over the views with a flow file) and each view's strain curve
    from the motion files (pull, frame t → ED; ED = the flow's zero frame; ES = the read-out's ES frame)."""
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


def _finite(v: Any) -> Any:
    """JSON-ready: NaN and infinities to None (recursively)."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
