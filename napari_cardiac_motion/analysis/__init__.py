"""Clinical read-out (no Qt, no napari): volumes, ejection fraction, mass, strain, and their exports.

* :mod:`.volumes` — volume curves (ml), per-slice areas (mm²), ED/ES choice, EF, mass, BSA.
* :mod:`.slices` — which slices count in the ED/ES volumes (clinical basal-slice rules), and why.
* :mod:`.strain` — radial/circumferential strain from the motion field, AHA 16 segments.
* :mod:`.measurements` — :class:`Measurements` (``to_dict()`` = ``measurements.json``).
* :mod:`.report` — CSV, JSON, PNG figures, one-page HTML report.
"""

from .measurements import SCALAR_MEASURES, Measurements, compute_measurements, measurements_for_prediction
from .slices import SliceDecision, SliceRules, decide_slices
from .strain import SEGMENT_NAMES, StrainResult, strain_curves
from .volumes import bsa_mosteller, choose_ed_es, volume_curves

__all__ = [
    "SCALAR_MEASURES", "SEGMENT_NAMES", "Measurements", "SliceDecision", "SliceRules", "StrainResult",
    "bsa_mosteller", "choose_ed_es", "compute_measurements", "decide_slices", "measurements_for_prediction",
    "strain_curves", "volume_curves",
]
