"""Tracking the user's corrections of a predicted segmentation (no Qt, no napari).

Axis order: labels are ``(T, Z, Y, X)`` uint8 (napari's order). A *correction* is a (frame, slice)
pair ``(t, z)`` whose current labels differ from the model's prediction.

Edits are detected by diffing the current labels against a private copy of the prediction, slice by
slice. This is robust to every way napari edits a Labels layer (paint, fill, erase, polygon, the
old ``(indices, old, new)`` and the newer masked paint-event records, undo/redo, ``layer.data = ...``):
a slice that equals the prediction again (e.g. after undo) is no longer corrected.

Files:

* labels NIfTI ``(X, Y, Z, T)`` with the source affine, plus a JSON sidecar
  ``<stem>.corrections.json`` listing the corrected (frame, slice) pairs;
* the command line's corrections format: the image grid, where a (frame, slice) whose voxels are all
  :data:`~napari_cardiac_motion.conventions.UNLABELLED` (255) is unlabelled and any other slice is a
  correction (labels 0–3). :meth:`CorrectionTracker.corrections_array` produces it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .atomic import atomic_write
from .conventions import UNLABELLED
from .errors import InputError

Pair = tuple[int, int]


def sidecar_path(labels_path: str | os.PathLike) -> Path:
    """``foo.nii.gz`` → ``foo.corrections.json`` (same folder)."""
    from .io import nifti_stem

    p = Path(labels_path)
    return p.with_name(nifti_stem(p) + ".corrections.json")


def labelled_pairs(corrections: np.ndarray) -> list[Pair]:
    """(frame, slice) pairs of a corrections array ``(T, Z, Y, X)`` that are not all :data:`UNLABELLED`."""
    arr = np.asarray(corrections)
    if arr.ndim != 4:
        raise InputError(f"Corrections must be (T, Z, Y, X); got shape {arr.shape}.")
    flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
    mask = (flat != UNLABELLED).any(-1)
    return [(int(t), int(z)) for t, z in zip(*np.nonzero(mask))]


class CorrectionTracker:
    """The model's prediction and the set of (frame, slice) pairs the user corrected.

    Args:
        prediction: the model's labels ``(T, Z, Y, X)``; copied (the caller's array, typically the
            napari layer's data, is edited in place by painting).
    """

    def __init__(self, prediction: np.ndarray):
        pred = np.asarray(prediction)
        if pred.ndim != 4:
            raise InputError(f"Prediction must be (T, Z, Y, X); got shape {pred.shape}.")
        self.prediction = np.array(pred, dtype=np.uint8, copy=True)
        self.corrected: set[Pair] = set()
        #: copies of the corrected slices' labels, refreshed by :meth:`update_from_labels`, so that
        #: they can be restored after something else overwrote the layer (e.g. a re-run)
        self.snapshots: dict[Pair, np.ndarray] = {}
        self._marked: set[Pair] = set()

    # -- geometry -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.prediction.shape

    def _check(self, current: np.ndarray) -> np.ndarray:
        cur = np.asarray(current)
        if cur.shape != self.prediction.shape:
            raise InputError(
                f"The labels have shape {cur.shape} but the prediction has shape {self.prediction.shape} "
                "(T, Z, Y, X); corrections must be on the same grid as the image."
            )
        return cur

    # -- diffing --------------------------------------------------------------------------------
    def changed_slices(self, current: np.ndarray, pairs: Iterable[Pair] | None = None) -> set[Pair]:
        """(frame, slice) pairs whose labels in ``current`` differ from the prediction.

        ``pairs`` restricts the check to those slices (e.g. the frame/slice a paint event touched);
        by default every slice is compared (fast: one vectorised comparison).
        """
        cur = self._check(current)
        if pairs is None:
            diff = (cur != self.prediction).reshape(cur.shape[0], cur.shape[1], -1).any(-1)
            return {(int(t), int(z)) for t, z in zip(*np.nonzero(diff))}
        return {(int(t), int(z)) for t, z in pairs if not np.array_equal(cur[t, z], self.prediction[t, z])}

    def update_from_labels(self, current: np.ndarray, pairs: Iterable[Pair] | None = None) -> set[Pair]:
        """Re-derive the corrected set from ``current`` (only ``pairs`` if given); returns the set."""
        cur = self._check(current)
        if pairs is None:
            self.corrected = self.changed_slices(cur) | {p for p in self.corrected if p in self._marked}
        else:
            pairs = [(int(t), int(z)) for t, z in pairs]
            changed = self.changed_slices(cur, pairs)
            for p in pairs:
                if p in changed or p in self._marked:
                    self.corrected.add(p)
                else:
                    self.corrected.discard(p)
        self._snapshot(cur)
        return set(self.corrected)

    def _snapshot(self, current: np.ndarray) -> None:
        self.snapshots = {p: np.array(current[p], dtype=np.uint8, copy=True) for p in self.corrected}
        self._marked &= self.corrected

    def sorted_pairs(self) -> list[Pair]:
        return sorted(self.corrected)

    # -- editing --------------------------------------------------------------------------------
    def revert(self, t: int, z: int) -> np.ndarray:
        """Forget the correction of ``(t, z)``; returns a copy of the prediction's slice ``(Y, X)``
        for the caller to write back into the layer."""
        p = (int(t), int(z))
        self.corrected.discard(p)
        self._marked.discard(p)
        self.snapshots.pop(p, None)
        return self.prediction[p].copy()

    def mark(self, pairs: Iterable[Pair], current: np.ndarray | None = None) -> None:
        """Declare slices corrected even where they equal the prediction (e.g. kept across a re-run)."""
        pairs = {(int(t), int(z)) for t, z in pairs}
        self.corrected |= pairs
        self._marked |= pairs
        if current is not None:
            self._snapshot(self._check(current))

    def merge_new_prediction(self, new_prediction: np.ndarray, current: np.ndarray | None = None,
                             overwrite: bool = False) -> np.ndarray:
        """Labels to show after a re-run: ``new_prediction`` everywhere except the corrected slices,
        which keep ``current``'s labels — or, with ``current=None`` (the layer was already overwritten),
        the tracker's last snapshots of them. ``overwrite`` drops every correction instead.

        The tracker's prediction becomes ``new_prediction``; corrected slices stay corrected even if
        they happen to equal the new prediction.
        """
        new = np.asarray(new_prediction)
        if new.shape != self.prediction.shape:
            raise InputError(
                f"The new prediction has shape {new.shape}, the previous one {self.prediction.shape}; "
                "re-run on the same image to keep the corrections."
            )
        merged = np.array(new, dtype=np.uint8, copy=True)
        if overwrite:
            self.corrected.clear()
            self._marked.clear()
        else:
            cur = None if current is None else self._check(current)
            for p in self.corrected:
                merged[p] = cur[p] if cur is not None else self.snapshots.get(p, self.prediction[p])
            self._marked |= self.corrected  # corrected stays corrected even if equal to the new prediction
        self.prediction = np.array(new, dtype=np.uint8, copy=True)
        self._snapshot(merged)
        return merged

    # -- export ---------------------------------------------------------------------------------
    def corrections_array(self, current: np.ndarray) -> np.ndarray:
        """The command line's corrections format: ``current`` on corrected slices, 255 elsewhere."""
        cur = self._check(current)
        out = np.full(cur.shape, UNLABELLED, dtype=np.uint8)
        for t, z in self.corrected:
            out[t, z] = cur[t, z]
        return out

    def save(self, path: str | os.PathLike, current: np.ndarray, affine=None, spacing=None,
             frame_interval_ms: float = 0.0, source: str | None = None) -> tuple[Path, Path]:
        """Save ``current`` labels as NIfTI ``(X, Y, Z, T)`` (with ``affine``) and the sidecar JSON.

        Returns ``(labels_path, sidecar_path)``.
        """
        from .io import write_nifti_labels

        cur = self._check(current)
        out = write_nifti_labels(path, cur, affine, spacing, frame_interval_ms)
        side = sidecar_path(out)
        payload = {
            "format": "napari-cardiac-motion-corrections",
            "version": 1,
            "shape_TZYX": [int(s) for s in cur.shape],
            "corrected": [[t, z] for t, z in self.sorted_pairs()],
            "source": source,
        }
        atomic_write(side, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))
        return out, side

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Load labels saved by :meth:`save` (or a corrections file with 255 = unlabelled).

        Returns the labels to show: the file's labels on corrected slices, the prediction elsewhere.
        The corrected set becomes the sidecar's list (without a sidecar: the slices that are not all
        255 and differ from the prediction).
        """
        from .io import read_nifti_labels

        labels = read_nifti_labels(path)
        if labels.shape != self.prediction.shape:
            raise InputError(
                f"The corrections file {Path(path).name} has shape {labels.shape} (T, Z, Y, X) but the image "
                f"has {self.prediction.shape}; load corrections saved for this image."
            )
        side = sidecar_path(path)
        if side.exists():
            try:
                pairs = {(int(t), int(z)) for t, z in json.loads(side.read_text())["corrected"]}
            except Exception as exc:
                raise InputError(f"{side.name} is not a valid corrections sidecar ({exc}).") from None
        else:
            candidates = labelled_pairs(labels)
            pairs = {p for p in candidates if not np.array_equal(labels[p], self.prediction[p])}
        out = self.prediction.copy()
        for t, z in pairs:
            if not (0 <= t < out.shape[0] and 0 <= z < out.shape[1]):
                raise InputError(f"{side.name} lists frame {t}, slice {z}, outside the image {out.shape}.")
            out[t, z] = labels[t, z]
        self.corrected = set(pairs)
        self._marked = set(pairs)
        self._snapshot(out)
        return out
