"""The segments of a DICOM SEG (no Qt, no napari, no torch): each model class's coded anatomy in
SNOMED CT (:data:`SEGMENT_CODES`, by class key) and its highdicom segment description (number = label
value, label = class name, display colour = class colour, the model as the algorithm).
"""

from __future__ import annotations

from ..errors import InputError
from ..model_description import ModelDescription


#: the software named as the SEG's manufacturer and the algorithm's source
SOFTWARE_NAME = "napari-cardiac-motion"


def _sct(value: str, meaning: str) -> tuple[str, str, str]:
    return (value, "SCT", meaning)


#: coded anatomy of each class, by the class's short key: ``(category, type, anatomic region or None)``
#: as ``(code value, scheme, meaning)``. Blood pools are "Blood" in the ventricle (SNOMED CT has no
#: "ventricular blood pool" body structure); the myocardium is the body structure itself. All codes
#: are in pydicom's SNOMED CT dictionary (``codes.SCT.Tissue``, ``Blood``, ``AnatomicalStructure``,
#: ``LeftVentricleMyocardium``, ``LeftVentricle``, ``RightVentricle``).
SEGMENT_CODES: dict[str, tuple[tuple[str, str, str], tuple[str, str, str], tuple[str, str, str] | None]] = {
    "LV": (_sct("85756007", "Tissue"), _sct("87612001", "Blood"), _sct("87878005", "Left ventricle")),
    "Myo": (_sct("91723000", "Anatomical Structure"), _sct("49848007", "Left Ventricle Myocardium"), None),
    "RV": (_sct("85756007", "Tissue"), _sct("87612001", "Blood"), _sct("53085002", "Right ventricle")),
}


def segment_descriptions(description: ModelDescription, model_name: str, model_version: str) -> list:
    """highdicom segment descriptions: one per class of ``description``, number = label value."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, family=codes.cid7162.ArtificialIntelligence, version=model_version, source=SOFTWARE_NAME)
    out = []
    for c in description.classes:
        coded = SEGMENT_CODES.get(c.key)
        if coded is None:
            raise InputError(
                f"The model's class {c.value} '{c.name}' (key '{c.key}') has no SNOMED CT code here; DICOM SEG "
                f"export knows {', '.join(SEGMENT_CODES)}. Use the NIfTI labels.")
        category, prop, region = (None if x is None else Code(*x) for x in coded)
        rgb = [round(255 * min(1.0, max(0.0, v))) for v in c.color[:3]]
        out.append(hd.seg.SegmentDescription(
            segment_number=c.value, segment_label=c.name[:64], segmented_property_category=category,
            segmented_property_type=prop, algorithm_type="AUTOMATIC", algorithm_identification=algorithm,
            anatomic_regions=None if region is None else [region],
            display_color=hd.color.CIELabColor.from_rgb(*rgb)))
    return out


__all__ = ["SEGMENT_CODES", "SOFTWARE_NAME", "segment_descriptions"]
