"""AVI / MP4 echo videos through PyAV (optional extra ``echo``: ``pip install av``). No napari, no Qt.

Every frame is decoded to 8-bit grey (luma) and the clip becomes a :class:`Cine` ``(T, 1, Y, X)``: rows =
depth (apex at the top, as the video shows it), columns = lateral. A video carries **no physical pixel
size**: the spacing is 1.0 per pixel, ``Cine.spacing_known`` is False and ``Cine.warnings`` says so
(lengths, areas and volumes are then in pixels; ``result.json`` should say so). The frame interval comes
from the stream's average frame rate (0 when the container does not say).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..errors import InputError, InputWarning, optional_module
from .echo_nifti import NO_SPACING_NOTE, SINGLE_SLICE_MM

VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".m4v", ".mkv")

#: frames read at most (a longer clip is cut, with a warning): 2D+t echo clips are a few seconds
MAX_FRAMES = 2000


def is_video_path(path: str | os.PathLike) -> bool:
    """True for the video file names this reader takes (:data:`VIDEO_SUFFIXES`)."""
    return str(path).lower().endswith(VIDEO_SUFFIXES)


def _av():
    return optional_module("av", "Reading AVI/MP4 videos needs PyAV; install it with `pip install av` "
                           "(or the plugin's `echo` extra).")


def read_video_frames(path: str | os.PathLike, max_frames: int = MAX_FRAMES) -> tuple[np.ndarray, float, bool]:
    """``(frames (T, Y, X) uint8 grey, frame interval ms (0 if unknown), cut)``; errors are :class:`InputError`."""
    av = _av()
    p = Path(path)
    if not p.is_file():
        raise InputError(f"File not found: {p}. Check the path and the file name.")
    frames: list[np.ndarray] = []
    cut = False
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise InputError(f"{p.name} has no video stream; choose a video of the echo clip.")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.base_rate
            for frame in container.decode(stream):
                if len(frames) >= max_frames:
                    cut = True
                    break
                frames.append(frame.to_ndarray(format="gray"))
    except InputError:
        raise
    except Exception as exc:  # av.error.InvalidDataError, OSError, ...
        raise InputError(f"Could not read {p.name} as a video ({type(exc).__name__}: {exc}); the file is "
                         "corrupt or in a format FFmpeg cannot decode: export it again as MP4 or AVI.") from exc
    if not frames:
        raise InputError(f"{p.name} holds no decodable frame; export the clip again.")
    interval = 1000.0 / float(rate) if rate and float(rate) > 0 else 0.0
    return np.stack(frames), interval, cut


def read_video(path: str | os.PathLike) -> Cine:
    """Read an echo video as a :class:`Cine` ``(T, 1, Y, X)`` float32 with unknown spacing (module doc)."""
    frames, interval, cut = read_video_frames(path)
    name = Path(path).name
    notes = [f"{name}: a video has no physical pixel size: {NO_SPACING_NOTE}"]
    if cut:
        notes.append(f"{name}: only the first {MAX_FRAMES} frames were read; cut the clip to one or two "
                     "heart beats.")
    for msg in notes:
        warnings.warn(msg, InputWarning, stacklevel=2)
    return Cine(data=frames[:, np.newaxis].astype(np.float32), spacing=(SINGLE_SLICE_MM, 1.0, 1.0),
                frame_interval_ms=interval, affine=np.eye(4), name=Path(path).stem, warnings=notes,
                spacing_known=False, modality="US")
