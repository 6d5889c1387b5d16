"""Sample data: a cropped Sunnybrook cine (SC-HF-I-1, CC0 1.0; P. Radau et al., MIDAS Journal 2009)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLE_NAME = "sunnybrook_SC-HF-I-1"
_CINE_FILE = "sunnybrook_SC-HF-I-1_cine.nii.gz"
_LABELS_FILE = "sunnybrook_SC-HF-I-1_labels.nii.gz"


def _resource(name: str) -> Path:
    """The installed ``napari_cardiac_motion.sample_data`` package (mapped from ``sample_data/`` by
    setup.cfg's package_dir), or ``sample_data/`` of a source checkout run without installing."""
    try:
        path = Path(str(resources.files("napari_cardiac_motion.sample_data") / name))
        if path.exists():
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[1] / "sample_data" / name


def sample_cine_path() -> Path:
    """Path of the sample cine NIfTI (X, Y, Z, T) = 128×128×12×20."""
    return _resource(_CINE_FILE)


def sample_labels_path() -> Path:
    """Path of the sample's expert labels (ED: LV + myocardium, ES: LV; other frames 0 = not contoured)."""
    return _resource(_LABELS_FILE)


def load_sample_cine():
    """npe2 sample-data command: image layer data like the NIfTI reader."""
    from ._reader import cine_to_layer_data
    from .io.nifti import read_nifti

    path = sample_cine_path()
    cine = read_nifti(path)
    cine.name = SAMPLE_NAME
    return cine_to_layer_data(cine, path)
