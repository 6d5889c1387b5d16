"""What the Run panel offers (no layers changed here): the eligible image layers, the models, the
mirror-image switch."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QCheckBox


DEFAULT_MODEL_LABEL = "default (shipped)"
ECHO_MODEL_LABEL = "echo (shipped, apical 2D+t)"
BROWSE_LABEL = "Browse…"


def model_entries(extra_models: list[str]) -> list[tuple[str, str | None]]:
    """The Run panel's model list as ``(label, data)``: the shipped MR model (``""``), the shipped echo model
    (``"echo"``, resolved by ``model_store.resolve_model``; when installed), the user's saved models and
    ``extra_models`` (full paths, those that exist), then Browse (``None``)."""
    entries: list[tuple[str, str | None]] = [(DEFAULT_MODEL_LABEL, "")]
    if echo_model_available():
        entries.append((ECHO_MODEL_LABEL, "echo"))
    paths: list[str] = []
    try:
        folder = user_model_dir()
        if folder.is_dir():
            paths = [str(p) for p in sorted(folder.glob("*.pt"))]
    except OSError:
        pass
    paths += [p for p in dict.fromkeys(extra_models) if p not in paths and Path(p).exists()]
    return entries + [(Path(p).name, p) for p in paths] + [(BROWSE_LABEL, None)]


def user_model_dir() -> Path:
    """Per-user folder scanned for extra ``*.pt`` checkpoints (fine-tuned models; see :mod:`..model_store`)."""
    from ..model_store import models_dir

    return models_dir(create=False)


def echo_model_available() -> bool:
    """Whether the shipped echo model is installed (the Run panel offers it beside the MR model)."""
    from ..model_store import shipped_model_path

    return shipped_model_path("echo").exists()


def is_echo_layer(layer) -> bool:
    """Whether an image layer is an echo clip: the readers mark one with ``metadata["modality"] = "US"``."""
    from ..model_description import is_ultrasound

    return layer is not None and is_ultrasound((getattr(layer, "metadata", None) or {}).get("modality"))


def image_layers(viewer) -> list:
    """Image layers the model can run on: 4D ``(T, Z, Y, X)`` or 3D ``(Z, Y, X)`` (one frame), not RGB."""
    from napari.layers import Image

    return [ly for ly in viewer.layers if isinstance(ly, Image) and why_not_offered(ly) is None]


def why_not_offered(layer) -> str | None:
    """Why an Image layer is not among :func:`image_layers` (the fix included); None when it is, or when it is
    not an Image layer at all."""
    from napari.layers import Image

    if not isinstance(layer, Image) or (layer.ndim in (3, 4) and not layer.rgb and not layer.multiscale):
        return None
    name = layer.name
    if layer.rgb:
        return (f"'{name}' is a colour (RGB) picture and is not offered: the model reads grey-level scans. "
                "Open the scan itself (NIfTI or DICOM).")
    if layer.multiscale:
        return f"'{name}' is a multiscale (pyramid) image and is not offered: open the scan at full resolution."
    if layer.ndim == 2:
        return (f"'{name}' is a single 2D image (Y, X) and is not offered: the model needs a cine (T, Z, Y, X), "
                "the frames of one slice (T, 1, Y, X) or a volume (Z, Y, X).")
    return (f"'{name}' has {layer.ndim} axes and is not offered: the model needs (T, Z, Y, X). Open each series "
            "as its own layer.")


def mirror_checkbox() -> QCheckBox:
    """The "also read its mirror image" switch (flip test-time augmentation), ticked: the model's default."""
    box = QCheckBox("also read its mirror image")
    box.setChecked(True)
    box.setToolTip("MR: segment each slice and its left-right mirror image and average the two (slightly better "
                   "labels, about 1.4× the time). Off: one pass. Echo models always use one pass.")
    return box


def show_mirror_choice(box: QCheckBox, echo: bool) -> None:
    """For the echo model the switch is greyed out and unticked (it always reads one pass: an apical view is
    not mirror-symmetric); back on an MR model it shows the user's last MR choice again."""
    if echo == (not box.isEnabled()):
        return
    if echo:
        box.setProperty("mr_choice", box.isChecked())
        box.setChecked(False)
    else:
        saved = box.property("mr_choice")
        box.setChecked(True if saved is None else bool(saved))
    box.setEnabled(not echo)
