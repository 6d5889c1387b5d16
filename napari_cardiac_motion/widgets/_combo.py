"""Refilling a layer chooser without firing its change signal (shared by the panels)."""

from __future__ import annotations

from typing import Any, Sequence


def refill_combo(combo: Any, layers: Sequence[Any], current: Any | None) -> None:
    """Show ``layers``' names in the QComboBox ``combo`` and select ``current`` (if among them),
    with the combo's signals blocked so no "changed" handler runs half-way."""
    combo.blockSignals(True)
    try:
        combo.clear()
        combo.addItems([ly.name for ly in layers])
        if current is not None:
            combo.setCurrentIndex(list(layers).index(current))
    finally:
        combo.blockSignals(False)
