"""What the "Cardiac function" panel reads from the viewer (GUI thread) and the bodies of its jobs.

:func:`inputs_from_layers` copies everything the read-out needs from the layers and the plugin's session
(labels, spacing, frame interval, affine, motion, model); :func:`compute_readout` (any thread, no layer
access) computes :func:`..analysis.compute_measurements` with the user's slice choices and renders the
curves; :func:`readout_job` and :func:`warm_up_job` are the panel's read-only jobs for the session's
:class:`~._runner.JobRunner`. :data:`DISPLAY_NAMES` and :data:`STRAIN_HELP` are the panel's table labels
and strain help.
:func:`dicom_seg_source` says whether the image behind a layer can get a DICOM SEG export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..analysis import Measurements, compute_measurements
from ..analysis.slices import Overrides
from ..conventions import MOTION_LAYER
from ..errors import CancelledError, CardiacMotionError
from ..model_description import MR_DEFAULT, describe
from ._curves_canvas import RenderedCurves, render_curves, warm_up
from ._jobs import Cancel, Progress

#: the runner's names of the panel's read-only jobs (:func:`readout_job`, :func:`warm_up_job`)
READOUT_JOB, WARM_UP_JOB = "read-out", "warm-up"

#: table labels of the scalar measures
DISPLAY_NAMES = {
    "lv_edv_ml": "LV EDV", "lv_esv_ml": "LV ESV", "lv_sv_ml": "LV SV", "lv_ef_percent": "LV EF",
    "rv_edv_ml": "RV EDV", "rv_esv_ml": "RV ESV", "rv_sv_ml": "RV SV", "rv_ef_percent": "RV EF",
    "lv_mass_g": "LV mass", "bsa_m2": "BSA", "lv_edv_index_ml_m2": "LV EDV index",
    "lv_esv_index_ml_m2": "LV ESV index", "lv_sv_index_ml_m2": "LV SV index", "rv_edv_index_ml_m2": "RV EDV index",
    "rv_esv_index_ml_m2": "RV ESV index", "lv_mass_index_g_m2": "LV mass index",
    "peak_radial_strain_percent": "peak radial strain", "peak_circumferential_strain_percent": "peak circ. strain",
    "gls_percent": "GLS",
    "ed_frame": "ED frame", "es_frame": "ES frame", "ed_time_ms": "ED time", "es_time_ms": "ES time",
}

#: which strain the panel shows (the curves' tooltip and the peak strain rows' help)
STRAIN_HELP = (
    "Strain: in-plane Lagrangian (engineering) strain relative to end-diastole (ED), λ − 1 in %, where λ is "
    "the stretch of a fibre along the radial direction (away from the centroid of the slice's LV blood pool "
    "at ED) or the circumferential direction, computed from the motion field (F = (I + ∇u)⁻¹ for the "
    "pull-convention field u). Global values are area-weighted means over the ED myocardium. The motion of "
    "each frame is estimated from its own (ED, frame) pair, so the curves return towards 0 at the end of "
    "the cycle."
)
#: the table rows whose help gains :data:`STRAIN_HELP`
STRAIN_MEASURES = ("peak_radial_strain_percent", "peak_circumferential_strain_percent")


def prediction_for(viewer, seg_layer) -> dict[str, Any]:
    """Dense motion, its reference frame, model and image info of the prediction behind ``seg_layer``.

    Asks the plugin's per-viewer session; empty when the layer is not the plugin's or nothing is known
    (volumes still work without it).
    """
    try:
        from ._session import get_session

        session = get_session(viewer)
        key = session.key_for_layer(seg_layer)
        img = session.state.image(key) if key is not None else None
        if img is not None and img.result is not None:
            return {"motion": img.result.motion, "motion_ed": int(img.result.ed_frame), "cine": img.cine,
                    "model": dict(img.model_metadata or {})}
    except Exception:  # noqa: BLE001 - an absent or different session: read the layer alone
        pass
    return {}


def labels_layers(viewer) -> list:
    """The Labels layers the panel reads out: ``(T, Z, Y, X)`` or one frame ``(Z, Y, X)``, not a Run's
    placeholder."""
    from napari.layers import Labels

    from ._layer_binding import is_placeholder

    return [ly for ly in viewer.layers
            if isinstance(ly, Labels) and why_labels_not_offered(ly) is None and not is_placeholder(ly)]


def why_labels_not_offered(layer) -> str | None:
    """Why a Labels layer is not among :func:`labels_layers` (with the fix); None when it is, or is no Labels."""
    from napari.layers import Labels

    if not isinstance(layer, Labels) or layer.ndim in (3, 4):
        return None
    axes = "a single 2D slice (Y, X)" if layer.ndim == 2 else f"{layer.ndim} axes"
    return (f"'{layer.name}' has {axes} and is not offered: the read-out needs labels (T, Z, Y, X), or one frame "
            "(Z, Y, X), on the cine's grid.")


def first_known(*values):
    """The first value that is not ``None``."""
    return next((v for v in values if v is not None), None)


def inputs_from_layers(viewer, seg_layer) -> dict[str, Any]:
    """Everything the computation needs, read on the GUI thread (labels copied)."""
    meta = dict(seg_layer.metadata or {})
    pred = prediction_for(viewer, seg_layer)
    cine = pred.get("cine")
    image = next((ly for ly in viewer.layers if ly.name == meta.get("source_layer")), None)
    img_meta = dict(getattr(image, "metadata", None) or {})
    scale = tuple(float(s) for s in seg_layer.scale)
    spacing = first_known(meta.get("spacing"), None if cine is None else cine.spacing, img_meta.get("spacing"),
                     scale[-3:])
    interval = first_known(meta.get("frame_interval_ms") or None, None if cine is None else cine.frame_interval_ms or None,
                      img_meta.get("frame_interval_ms"), 0.0)
    affine = first_known(meta.get("affine"), None if cine is None else cine.affine, img_meta.get("affine"))
    labels = np.array(seg_layer.data, copy=True)
    if labels.ndim == 3:
        labels = labels[None]
    motion = pred.get("motion")
    if motion is not None and tuple(motion.shape[:4]) != labels.shape:
        motion = None
    model = pred.get("model") or {"name": meta.get("model"), "version": meta.get("model_version")}
    try:
        description = describe(model)
    except ValueError:  # a malformed description: today's MR classes
        description = MR_DEFAULT
    source = img_meta.get("source_path") or img_meta.get("path") or meta.get("source_layer") or seg_layer.name
    return {"labels": labels, "spacing": tuple(float(s) for s in spacing), "interval": float(interval or 0.0),
            "affine": None if affine is None else np.asarray(affine, float), "motion": motion,
            "motion_ed": pred.get("motion_ed", meta.get("ed_frame")),
            "model": {"name": model.get("name"), "version": model.get("version")}, "input": str(source),
            "description": description, "spacing_known": bool(img_meta.get("spacing_known", True))}


def dicom_seg_source(viewer, seg_layer) -> tuple[str | None, str]:
    """``(DICOM folder, "")`` when the image behind ``seg_layer`` was read from a DICOM folder, else
    ``(None, one line saying why a DICOM SEG cannot be written)``."""
    from ..io.dicom_seg import is_dicom_input, not_dicom_reason, require_highdicom

    meta = dict(seg_layer.metadata or {})
    image = next((ly for ly in viewer.layers if ly.name == meta.get("source_layer")), None)
    path = dict(getattr(image, "metadata", None) or {}).get("source_path")
    if not path:
        return None, ("DICOM SEG needs the source DICOM images, and the file this image came from is unknown "
                      "(open the DICOM series folder with this plugin's reader, then run the model).")
    if str(path).lower().endswith((".nii", ".nii.gz")) or (Path(path).exists() and not is_dicom_input(path)):
        return None, not_dicom_reason(path)
    if not Path(path).exists():
        return None, f"DICOM SEG needs the source DICOM images, and {path} is no longer there."
    try:
        require_highdicom()
    except CardiacMotionError as exc:
        return None, str(exc)
    return str(Path(path) if Path(path).is_dir() else Path(path).parent), ""


def motion_legend(viewer, spacing, spacing_known: bool = True) -> tuple[float, float, str, str] | None:
    """(low, high), colormap name and unit of the ``motion`` arrows' colours (their magnitudes are pixels):
    mm, or pixels when the image has no pixel size."""
    layer = next((ly for ly in viewer.layers if ly.name.startswith(MOTION_LAYER)
                  and getattr(ly, "edge_contrast_limits", None) is not None and len(ly.data)), None)
    if layer is None:  # none, or only the empty layer of a Run still working
        return None
    px = float(np.mean(spacing[1:])) if spacing_known else 1.0
    lo, hi = (float(v) for v in layer.edge_contrast_limits)
    return lo * px, hi * px, str(getattr(layer.edge_colormap, "name", "plasma")), "mm" if spacing_known else "pixels"


def is_echo_readout(inputs: dict[str, Any]) -> bool:
    """True when the labels come from an echo model (description modality ``"US"``) and form one-slice clips."""
    d = inputs.get("description")
    return d is not None and d.is_echo and inputs["labels"].shape[1] == 1


def hide_row(m: Measurements, key: str, value: str) -> bool:
    """Whether the panel's table leaves out a measure: empty BSA-indexed values, every empty measure of an
    echo read-out (no RV, mass or radial strain), and the empty GLS of an MR one."""
    return value == "—" and ("index" in key or key == "gls_percent"
                             or m.description.is_echo)


def compute_readout(inputs: dict[str, Any], ed: int | None, es: int | None, height: float | None,
                    weight: float | None, render: dict[str, Any], slice_overrides: Overrides | None = None
                    ) -> tuple[Measurements, RenderedCurves] | CardiacMotionError:
    """Worker body (no layer access): the read-out (with the user's slice choices
    ``{(frame, slice, "LV"|"RV"): included}``) and its curves. User-facing errors are returned, not raised."""
    try:
        motion_ed = inputs["motion_ed"] if inputs["motion"] is not None else None
        if is_echo_readout(inputs):  # an echo model's labels: single-plane Simpson and GLS
            from ..analysis.echo_prediction import echo_measurements

            m = echo_measurements(inputs["labels"], inputs["motion"], inputs["spacing"], inputs["interval"],
                                  ed if ed is not None else motion_ed, es, inputs["model"], inputs["input"],
                                  inputs.get("description"), bool(inputs.get("spacing_known", True)))
            return m, render_curves(m, **render)
        m = compute_measurements(
            inputs["labels"], inputs["spacing"], inputs["interval"], motion=inputs["motion"],
            motion_reference_frame=motion_ed, ed_frame=ed if ed is not None else motion_ed, es_frame=es,
            height_cm=height, weight_kg=weight, affine=inputs["affine"], model=inputs["model"],
            input=inputs["input"], description=inputs.get("description"), slice_overrides=slice_overrides)
    except CardiacMotionError as exc:
        return exc
    return m, render_curves(m, **render)


def readout_job(inputs: dict[str, Any], ed: int | None, es: int | None, height: float | None,
                weight: float | None, render: dict[str, Any], slice_overrides: Overrides | None = None, *,
                progress: Progress, cancel: Cancel) -> tuple[Measurements, RenderedCurves]:
    """Job body (read-only; any thread): :func:`compute_readout`, its user-facing error raised for the runner."""
    progress(0, 1, "Computing the read-out")
    if cancel():
        raise CancelledError("Read-out cancelled.")
    out = compute_readout(inputs, ed, es, height, weight, render, slice_overrides)
    if isinstance(out, CardiacMotionError):
        raise out
    progress(1, 1, "Read-out ready")
    return out


def warm_up_job(*, progress: Progress, cancel: Cancel) -> None:
    """Job body (read-only; any thread): matplotlib's first-use work (:func:`._curves_canvas.warm_up`) and
    the imports the panel makes when the first segmentation appears (not on the GUI thread as it lands)."""
    import importlib

    warm_up()
    importlib.import_module("napari_cardiac_motion.io.dicom_seg")
