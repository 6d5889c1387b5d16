"""napari-cardiac-motion: joint motion estimation and segmentation of cardiac cine MR.

Core modules (no Qt, no napari): :mod:`.cine`, :mod:`.io`, :mod:`.model`, :mod:`.inference`,
:mod:`.training`, :mod:`.devices`. Widgets live in :mod:`.widgets` and only wire core functions to
napari layers and worker threads.
"""

__version__ = "0.1.0"
