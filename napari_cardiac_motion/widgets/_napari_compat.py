"""Shims over napari details the plugin depends on (GUI thread only): the viewer behind a panel's proxy,
and napari's private attributes read with a fallback."""

from __future__ import annotations

import warnings
from typing import Any


def unwrap(obj: Any) -> Any:
    """The napari object behind the public-only proxy napari hands to plugin widgets (else ``obj``).

    napari's Plugins menu gives each dock widget its own ``PublicOnlyProxy`` of the viewer, and every
    layer read through it is a fresh proxy: two panels (or two reads) never see the same object, so the
    session's identity checks (``key_for_layer``) would miss. The panels and the session therefore work
    on the objects behind the proxies, exactly as they do when made directly (tests, the benchmarks).
    """
    try:
        from wrapt import ObjectProxy
    except ImportError:  # pragma: no cover - napari depends on wrapt
        return obj
    while isinstance(obj, ObjectProxy):
        obj = obj.__wrapped__
    return obj


def napari_private(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.<name>`` for one of napari's private attributes, or ``default`` once napari drops it.

    Used for the Labels undo/redo stacks (to know which slices an undo touched), resetting them after a
    new prediction, and batching a Vectors update into one refresh; each use has a fallback.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return getattr(obj, name, default)
