"""Which napari layers belong to which image, and writing results into them (GUI thread only).

Each image is keyed by its image layer's ``unique_id`` and gets its own ``segmentation`` and
``motion`` layers (a second image gets ``segmentation (name)``): running on another image never
touches the first one's labels. Layer data follow the image's ``(T, Z, Y, X)`` axes; arrows are
napari Vectors ``(N, 2, 4)`` in data coordinates.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Hashable

import numpy as np

from ..conventions import AXIS_LABELS, MOTION_LAYER, SEGMENTATION_LAYER
from ..corrections import Pair
from ..layers import arrow_step, cine_arrow_step
from ..state import ImageState, ViewerState
from ._jobs import LayerSnapshot
from ._napari_compat import napari_private, unwrap


def layer_snapshot(layer) -> LayerSnapshot:
    """What a job needs from an image layer (read on the GUI thread)."""
    meta = dict(layer.metadata or {})
    scale = tuple(float(s) for s in layer.scale)
    translate = tuple(float(s) for s in layer.translate)
    if layer.ndim == 3:
        scale, translate = (1.0, *scale), (0.0, *translate)
    spacing = tuple(float(s) for s in meta.get("spacing", scale[-3:]))
    affine = meta.get("affine")
    if affine is None:
        dz, dy, dx = spacing
        affine = np.diag([dx, dy, dz, 1.0])
    return LayerSnapshot(
        data=layer.data, name=layer.name, scale=scale, translate=translate, spacing=spacing,  # type: ignore[arg-type]
        frame_interval_ms=float(meta.get("frame_interval_ms", 0.0) or 0.0), affine=np.asarray(affine, float),
        spacing_known=bool(meta.get("spacing_known", True)),
    )


def arrow_width(scale_yx, step: int) -> float:
    """Edge width of the motion arrows (world units) for an image of in-plane scale ``scale_yx`` and arrows every
    ``step`` pixels: a fixed fraction of the grid spacing (0.35 pixel at 4 pixels' spacing)."""
    return 0.35 / 4 * step * min(float(s) for s in scale_yx)


def vector_style(magnitudes: np.ndarray, step: int) -> dict:
    """Colour limits from the 98th percentile; ``length`` > 1 only when motion is too small to see.

    Arrows are drawn at their true length (``length = 1``) unless the 95th-percentile arrow is
    shorter than ~3/4 of the grid step; then they are lengthened up to ×4 (the layer's ``length``).
    """
    hi = float(np.percentile(magnitudes, 98)) if magnitudes.size else 1.0
    p95 = float(np.percentile(magnitudes, 95)) if magnitudes.size else 0.0
    length = float(np.clip(0.75 * step / max(p95, 1e-6), 1.0, 4.0))
    return {"edge_colormap": "plasma", "edge_contrast_limits": (0.0, max(hi, 0.5)), "length": round(length, 2)}


def update_vectors(layer, vectors: np.ndarray, magnitudes: np.ndarray, scale, translate, metadata: dict,
                   style: dict) -> None:
    """Replace an existing Vectors layer's arrows and style with one refresh."""
    # one refresh for the whole update: each setter would otherwise redo the thumbnail and
    # extent over every arrow (~0.2 s each for 200k arrows)
    block_refresh = napari_private(layer, "_block_refresh")
    block = block_refresh() if block_refresh is not None else contextlib.nullcontext()
    with block:
        layer.data = vectors
        layer.features = {"magnitude": magnitudes}
        if not np.allclose(layer.scale, scale):
            layer.scale = scale
        if not np.allclose(layer.translate, translate):
            layer.translate = translate
        layer.metadata = metadata
        layer.edge_color = "magnitude"
        limits = layer.edge_contrast_limits  # None on an empty layer made before the result
        if limits is None or tuple(limits) != tuple(style["edge_contrast_limits"]):
            layer.edge_contrast_limits = style["edge_contrast_limits"]
        if layer.length != style["length"]:
            layer.length = style["length"]
    layer.refresh()


#: metadata key of an empty layer made while a first Run works (its result's metadata replaces it)
PLACEHOLDER_KEY = "placeholder"


def is_placeholder(layer) -> bool:
    """Whether ``layer`` is an empty layer waiting for a Run's result (panels leave it alone)."""
    return bool((getattr(layer, "metadata", None) or {}).get(PLACEHOLDER_KEY))


class LayerBinding:
    """The image → ``{"image", "segmentation", "motion"}`` layers of one viewer (held weakly)."""

    def __init__(self, viewer: Any, state: ViewerState):
        self._viewer_ref = weakref.ref(viewer)
        self.state = state
        #: key -> {"image": layer, "segmentation": layer, "motion": layer}
        self.layers: dict[Hashable, dict[str, Any]] = {}
        #: key -> {"segmentation"/"motion": empty layer made while a first Run works, not yet a result}
        self.placeholders: dict[Hashable, dict[str, Any]] = {}

    @property
    def viewer(self):
        return self._viewer_ref()

    @staticmethod
    def key_of(image_layer) -> Hashable:
        """The key of an image layer (its ``unique_id``)."""
        return unwrap(image_layer).unique_id

    def layer(self, key: Hashable, kind: str):
        """The ``kind`` (image, segmentation, motion) layer of ``key`` if still in the viewer, else None."""
        layer = self.layers.get(key, {}).get(kind)
        viewer = self.viewer
        return layer if layer is not None and viewer is not None and layer in viewer.layers else None

    def key_for_layer(self, layer) -> Hashable | None:
        """The image key of an image, segmentation or motion layer (``None`` if not the plugin's)."""
        layer = unwrap(layer)
        for key, group in self.layers.items():
            if any(v is layer for v in group.values()):
                return key
        return None

    def unique_name(self, base: str, image_name: str, current) -> str:
        """``base``, or ``base (image_name)`` when another layer already has that name."""
        viewer = self.viewer
        names = {ly.name for ly in viewer.layers if ly is not current}
        return base if base not in names else f"{base} ({image_name})"

    # -- placeholders: a first result's layers, made while its job runs ------------------------------
    def add_placeholder(self, key: Hashable, kind: str, snapshot: LayerSnapshot) -> bool:
        """Create an empty, read-only ``kind`` ("segmentation" or "motion") layer for image ``key`` on the
        image's ``(T, Z, Y, X)`` grid, so that the result only fills it (napari's creation of a layer,
        ~0.1 s of the GUI thread, happens while the job runs, not when the result lands). False (nothing
        made) when the image already has that layer."""
        viewer = self.viewer
        if viewer is None or self.layer(key, kind) is not None or self._placeholder(key, kind) is not None:
            return False
        scale, translate = tuple(snapshot.scale), tuple(snapshot.translate)
        common = {"scale": scale, "translate": translate, "axis_labels": AXIS_LABELS,
                  "metadata": {PLACEHOLDER_KEY: True, "source_layer": snapshot.name}}
        if kind == "segmentation":
            layer = viewer.add_labels(np.zeros((1, 1, 1, 1), np.uint8), opacity=0.5,
                                      name=self.unique_name(SEGMENTATION_LAYER, snapshot.name, None), **common)
            layer.editable = False  # nothing to paint on until the result lands
        else:
            step = arrow_step(snapshot.spacing[-2:] if snapshot.spacing_known else None, np.shape(snapshot.data)[-2:])
            layer = viewer.add_vectors(
                np.zeros((0, 2, 4), np.float32), ndim=4, name=self.unique_name(MOTION_LAYER, snapshot.name, None),
                edge_width=arrow_width(scale[-2:], step), vector_style="arrow", projection_mode="none", opacity=1.0,
                **common)
        self.placeholders.setdefault(key, {})[kind] = layer
        return True

    def _placeholder(self, key: Hashable, kind: str):
        layer = self.placeholders.get(key, {}).get(kind)
        viewer = self.viewer
        return layer if layer is not None and viewer is not None and layer in viewer.layers else None

    def _adopt(self, key: Hashable, kind: str):
        """The placeholder ``kind`` layer of ``key`` (now the result's), or None."""
        layer = self._placeholder(key, kind)
        self.placeholders.get(key, {}).pop(kind, None)
        return layer

    def drop_placeholders(self, key: Hashable) -> None:
        """Remove the placeholders of ``key`` from the viewer (the job failed, was cancelled or not shown)."""
        viewer = self.viewer
        for layer in self.placeholders.pop(key, {}).values():
            if viewer is not None and layer in viewer.layers:
                viewer.layers.remove(layer)

    # -- results ----------------------------------------------------------------------------------
    def put_segmentation(self, key, img: ImageState, meta: dict, replaced: bool):
        """Create or update the image's Labels layer; class names and colours come from the model's
        description (:func:`~..model_description.describe` of the image's model metadata)."""
        from ..layers import segmentation_layer_data
        from ..model_description import describe

        data, kwargs, _ = segmentation_layer_data(img.labels, img.scale, img.translate, meta,
                                                  description=describe(img.model_metadata))
        layer = self.layers.get(key, {}).get("segmentation")
        viewer = self.viewer
        if layer is None or layer not in viewer.layers:
            layer = self._adopt(key, "segmentation")
            if layer is not None:
                layer.editable = True
        if layer is not None and layer in viewer.layers and layer.ndim == data.ndim:
            if replaced or layer.data is not img.labels:
                layer.data = data
            layer.scale = kwargs["scale"]
            layer.translate = kwargs["translate"]
            layer.metadata = kwargs["metadata"]
            old = getattr(layer, "features", None)
            if old is None or list(old.get("name", [])) != kwargs["features"]["name"]:
                layer.features = kwargs["features"]  # another model: its class names and colours
                layer.colormap = kwargs["colormap"]
            reset = napari_private(layer, "_reset_history")
            if reset is not None:  # napari's undo must not replay pre-run values
                reset()
            layer.refresh()
            return layer
        if layer is not None and layer in viewer.layers:
            viewer.layers.remove(layer)
        kwargs["name"] = self.unique_name(SEGMENTATION_LAYER, img.name, None)
        return viewer.add_labels(data, axis_labels=AXIS_LABELS, **kwargs)

    def put_motion(self, key, vectors: np.ndarray, magnitudes: np.ndarray, metadata: dict):
        """Create or update the image's Vectors layer (arrows ``(N, 2, 4)``, magnitudes ``(N,)`` mm)."""
        img = self.state.image(key)
        scale, translate = img.scale, img.translate
        step = cine_arrow_step(img.cine) if img.cine is not None else arrow_step(scale[-2:])
        style = vector_style(magnitudes, step)
        layer = self.layer(key, "motion") or self._adopt(key, "motion")
        viewer = self.viewer
        if layer is not None and layer.ndim == 4:
            update_vectors(layer, vectors, magnitudes, scale, translate, metadata, style)
            return layer
        if layer is not None:
            viewer.layers.remove(layer)
        return viewer.add_vectors(
            vectors, ndim=4, name=self.unique_name(MOTION_LAYER, img.name, None), features={"magnitude": magnitudes},
            edge_color="magnitude", edge_width=arrow_width(scale[-2:], step), vector_style="arrow",
            projection_mode="none", scale=scale, translate=translate, metadata=metadata, opacity=1.0,
            axis_labels=AXIS_LABELS, **style,
        )

    def show_arrows(self, key: Hashable, vectors: np.ndarray, magnitudes: np.ndarray, mode: str) -> None:
        """Replace the arrows of ``key`` (another arrow mode)."""
        img = self.state.image(key)
        layer = self.layer(key, "motion")
        meta = dict(layer.metadata) if layer is not None else {}
        img.arrow_mode = mode
        self.layers.setdefault(key, {})["motion"] = self.put_motion(key, vectors, magnitudes,
                                                                    dict(meta, arrow_mode=mode))

    def go_to(self, key: Hashable, t: int, z: int) -> None:
        """Move the viewer's time and slice sliders to frame ``t``, slice ``z`` of image ``key``."""
        layer = self.layer(key, "segmentation") or self.layer(key, "image")
        viewer = self.viewer
        if layer is None or viewer is None:
            return
        world = layer.data_to_world((t, z, 0, 0))
        n = viewer.dims.ndim
        for axis, value in zip(range(n - 4, n - 2), world[:2]):
            viewer.dims.set_point(axis, float(value))

    def current_pair(self, key: Hashable) -> Pair | None:
        """The (frame, slice) the viewer shows, in image ``key``'s index space."""
        layer = self.layer(key, "segmentation") or self.layer(key, "image")
        viewer = self.viewer
        if layer is None or viewer is None or viewer.dims.ndim < 4:
            return None
        point = viewer.dims.point
        data = layer.world_to_data(point[-4:] if len(point) >= 4 else point)
        return int(round(float(data[0]))), int(round(float(data[1])))
