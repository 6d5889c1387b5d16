"""What a model segments: modality, label classes (names, short keys, colours) and geometry policy.

No Qt, no napari, no torch. A checkpoint's ``metadata`` carries the description under three keys::

    "modality": "MR",
    "classes": [{"value": 1, "name": "LV blood pool", "key": "LV", "color": [0.9, 0.2, 0.2, 1.0]}, ...],
    "geometry": {"policy": "short-axis stack", ...}

Label value 0 is always background and is not listed. ``key`` is the short name used in tables and
plots; the read-out finds the structures it measures by key (``"LV"``, ``"Myo"``, ``"RV"``). A
checkpoint without these keys (every checkpoint written before they existed) is described by
:data:`MR_DEFAULT`, today's MR conventions (:mod:`.conventions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .conventions import BACKGROUND, LABEL_COLORS, LABEL_NAMES, STRUCTURE_KEYS

RGBA = tuple[float, float, float, float]

#: metadata keys that hold the description
DESCRIPTION_KEYS = ("modality", "classes", "geometry")


def is_ultrasound(modality: str | None) -> bool:
    """True for an echocardiography modality (DICOM's ``"US"``; ``"ECHO"`` accepted): the one test every
    part uses to choose the echo path (layout, inference, read-out)."""
    return str(modality or "").upper() in ("US", "ECHO")

#: the geometry policy of the MR models: short-axis slices resampled in-plane to the model's pixel size
#: (``config.pixel_mm``) on a region located around the heart (see :mod:`.geometry`)
MR_GEOMETRY: dict[str, Any] = {
    "policy": "short-axis stack",
    "slices": "independent 2D short-axis slices (axis Z); motion is in-plane (dy, dx)",
    "in_plane": "resampled to the model's pixel size (config pixel_mm)",
    "region": "a region around the located heart",
}


@dataclass(frozen=True)
class LabelClass:
    """One label value of a model's output: ``value`` (> 0), display ``name``, short ``key``, RGBA ``color`` (0–1)."""

    value: int
    name: str
    key: str
    color: RGBA

    def to_dict(self) -> dict[str, Any]:
        return {"value": int(self.value), "name": self.name, "key": self.key, "color": [float(c) for c in self.color]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LabelClass":
        """From a metadata entry; raises ``ValueError`` when it is not a valid class."""
        try:
            value = int(d["value"])
            name = str(d["name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a class needs an integer 'value' and a 'name'; got {d!r}") from exc
        if value <= BACKGROUND or value > 254:
            raise ValueError(f"class values are 1–254 (0 is background, 255 unlabelled); got {value}")
        color = tuple(float(c) for c in d.get("color", (0.5, 0.5, 0.5, 1.0)))
        if len(color) == 3:
            color = (*color, 1.0)
        if len(color) != 4:
            raise ValueError(f"a class colour is RGB or RGBA (0–1); got {d.get('color')!r}")
        return cls(value, name, str(d.get("key") or name), color)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ModelDescription:
    """What a model segments (see module docstring)."""

    modality: str
    classes: tuple[LabelClass, ...]
    geometry: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)

    # -- look-ups ----------------------------------------------------------------------------------
    @property
    def is_echo(self) -> bool:
        """True for a model of echocardiography (:func:`is_ultrasound` of its modality)."""
        return is_ultrasound(self.modality)

    def names(self) -> dict[int, str]:
        """``{value: name}`` with ``0: "background"`` first (for the Labels layer's features)."""
        return {BACKGROUND: LABEL_NAMES[BACKGROUND], **{c.value: c.name for c in self.classes}}

    def keys(self) -> dict[int, str]:
        """``{value: short key}`` of the foreground classes (tables, plots)."""
        return {c.value: c.key for c in self.classes}

    def colors(self) -> dict[int | None, RGBA]:
        """``{value: RGBA}`` for napari's direct label colormap (``None`` and background transparent)."""
        return {None: LABEL_COLORS[None], BACKGROUND: LABEL_COLORS[BACKGROUND],
                **{c.value: tuple(float(x) for x in c.color) for c in self.classes}}  # type: ignore[misc]

    def by_key(self, key: str) -> LabelClass | None:
        """The class with short key ``key`` (``"LV"``, ``"Myo"``, ``"RV"``, ...), or ``None``."""
        return next((c for c in self.classes if c.key == key), None)

    def value_of(self, key: str) -> int | None:
        """The label value of the class with short key ``key``, or ``None`` when the model has none."""
        c = self.by_key(key)
        return None if c is None else c.value

    def hex_color(self, key: str, default: str = "#808080") -> str:
        """``#rrggbb`` of the class with short key ``key`` (for matplotlib), ``default`` when absent."""
        c = self.by_key(key)
        if c is None:
            return default
        return "#" + "".join(f"{round(max(0.0, min(1.0, v)) * 255):02x}" for v in c.color[:3])

    @property
    def max_value(self) -> int:
        """The largest label value the model outputs."""
        return max((c.value for c in self.classes), default=BACKGROUND)

    # -- metadata ----------------------------------------------------------------------------------
    def to_metadata(self) -> dict[str, Any]:
        """The three metadata keys (plain lists, dicts and floats: loadable with ``weights_only=True``)."""
        return {"modality": self.modality, "classes": [c.to_dict() for c in self.classes],
                "geometry": dict(self.geometry)}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> "ModelDescription":
        """The description in checkpoint ``metadata``; each missing key takes :data:`MR_DEFAULT`'s value.

        Raises ``ValueError`` when ``classes`` is present but malformed (duplicate or invalid values).
        """
        meta = metadata or {}
        raw = meta.get("classes")
        if raw is None:
            classes = MR_DEFAULT.classes
        else:
            classes = tuple(sorted((LabelClass.from_dict(d) for d in raw), key=lambda c: c.value))
            values = [c.value for c in classes]
            if len(set(values)) != len(values):
                raise ValueError(f"class values must be unique; got {values}")
        geometry = meta.get("geometry")
        return cls(modality=str(meta.get("modality") or MR_DEFAULT.modality), classes=classes,
                   geometry=dict(MR_DEFAULT.geometry if geometry is None else geometry))


#: today's MR model: 1 LV blood pool, 2 LV myocardium, 3 RV blood pool (names, keys and colours of
#: :mod:`.conventions`)
MR_DEFAULT = ModelDescription(
    modality="MR",
    classes=tuple(LabelClass(v, LABEL_NAMES[v], STRUCTURE_KEYS[v], LABEL_COLORS[v]) for v in STRUCTURE_KEYS),
    geometry=dict(MR_GEOMETRY),
)


def describe(metadata: Mapping[str, Any] | None) -> ModelDescription:
    """The :class:`ModelDescription` of a model from its metadata (MR defaults for old checkpoints)."""
    return ModelDescription.from_metadata(metadata)


def with_description(metadata: Mapping[str, Any] | None,
                     description: ModelDescription | None = None) -> dict[str, Any]:
    """A copy of ``metadata`` whose description keys are filled in (present keys are kept).

    Missing keys come from ``description`` when given, else from :data:`MR_DEFAULT`.
    """
    meta = dict(metadata or {})
    source = (description or MR_DEFAULT).to_metadata()
    for key in DESCRIPTION_KEYS:
        if meta.get(key) is None:
            meta[key] = source[key]
    return meta


def description_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Only the description keys of a model's metadata (MR defaults filled in): what a fine-tuned
    model inherits from its parent."""
    return describe(metadata).to_metadata()


#: the geometry policy of echo models: one apical 2D+t view per clip (Z = 1), rows = depth (apex at the top)
ECHO_GEOMETRY: dict[str, Any] = {
    "policy": "2D+t echo",
    "layout": "2d+t",
    "slices": "one apical view per clip (Z = 1); motion is in-plane (dy, dx)",
    "orientation": "rows = depth with the apex at the top, columns = lateral",
    "in_plane": "resampled to the model's pixel size where the pixel size is known; a clip without one "
                "(videos, 224x224 CAMUS files) is resized so that its larger side spans 224 model pixels, the "
                "scale of the 224x224 training views",
}

#: echocardiography (CAMUS labels): 1 LV cavity, 2 LV myocardium, 3 left atrium. Keys ``LV`` and ``Myo`` are
#: those the read-out looks for; ``LA`` is new (no MR model has it)
ECHO_DEFAULT = ModelDescription(
    modality="US",
    classes=(
        LabelClass(1, "LV cavity", "LV", LABEL_COLORS[1]),
        LabelClass(2, "LV myocardium", "Myo", LABEL_COLORS[2]),
        LabelClass(3, "left atrium", "LA", (0.95, 0.80, 0.15, 1.0)),
    ),
    geometry=dict(ECHO_GEOMETRY),
)
