"""Clinical read-out (no Qt, no napari): volumes, ejection fraction, mass, strain, and their exports.

* :mod:`.volumes` — volume curves (ml), per-slice areas (mm²), ED/ES choice, EF, mass, BSA.
* :mod:`.strain` — radial/circumferential strain from the motion field, AHA 16 segments.
* :mod:`.measurements` — :class:`Measurements` (``to_dict()`` = ``measurements.json``).
* :mod:`.report` — CSV, JSON, PNG figures, one-page HTML report.
"""

from .measurements import SCALAR_MEASURES, Measurements, compute_measurements, measurements_for_prediction
from .strain import SEGMENT_NAMES, StrainResult, strain_curves
from .volumes import bsa_mosteller, choose_ed_es, volume_curves

__all__ = [
    "SCALAR_MEASURES", "SEGMENT_NAMES", "Measurements", "StrainResult", "bsa_mosteller", "choose_ed_es",
    "compute_measurements", "measurements_for_prediction", "strain_curves", "volume_curves",
]
