"""Tracking the user's corrections of a predicted segmentation (no Qt, no napari).

Axis order: labels are ``(T, Z, Y, X)`` uint8 (napari's order). Every tracked (frame, slice) pair
``(t, z)`` has a *provenance*:

* ``"hand"`` — painted by the user (its labels differ from the model's prediction);
* ``"propagated"`` — proposed by :func:`~napari_cardiac_motion.propagation.propagate_labels` and not
  yet checked: shown, but **not** a correction (not kept across a re-run, not saved as a correction,
  not used by fine-tuning) until :meth:`CorrectionTracker.accept` turns it into
* ``"accepted"`` — a proposal the user accepted: a correction like a hand-painted slice.

:attr:`CorrectionTracker.corrected` is the set of *corrections*: hand + accepted.

Edits are detected by comparing slices with a private copy of the prediction. Callers pass the pairs
an edit touched (the painted slice: cheap) or nothing (every slice: one vectorised comparison). This
works for every way napari edits a Labels layer (brush, fill, erase, polygon, undo/redo): a slice that
equals the prediction again (e.g. after undo) is no longer tracked.

Files: labels NIfTI ``(X, Y, Z, T)`` with the source affine, plus a JSON sidecar
``<stem>.corrections.json`` listing the corrected pairs and the SHA-256 of the NIfTI file it belongs
to (a sidecar whose hash does not match — the NIfTI was re-saved by another program — is not trusted);
or the command line's corrections format: the image grid, where a (frame, slice) whose voxels are all
:data:`~napari_cardiac_motion.conventions.UNLABELLED` (255) is unlabelled
(:meth:`CorrectionTracker.corrections_array` produces it).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .atomic import atomic_write
from .conventions import UNLABELLED
from .errors import InputError

Pair = tuple[int, int]
HAND, PROPAGATED, ACCEPTED = "hand", "propagated", "accepted"
KINDS = (HAND, PROPAGATED, ACCEPTED)
SIDECAR_FORMAT = "napari-cardiac-motion-corrections"


def sidecar_path(labels_path: str | os.PathLike) -> Path:
    """``foo.nii.gz`` → ``foo.corrections.json`` (same folder)."""
    from .io import nifti_stem

    p = Path(labels_path)
    return p.with_name(nifti_stem(p) + ".corrections.json")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def labelled_pairs(corrections: np.ndarray) -> list[Pair]:
    """(frame, slice) pairs of a corrections array ``(T, Z, Y, X)`` that are not all :data:`UNLABELLED`."""
    arr = np.asarray(corrections)
    if arr.ndim != 4:
        raise InputError(f"Corrections must be (T, Z, Y, X); got shape {arr.shape}.")
    flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
    mask = (flat != UNLABELLED).any(-1)
    return [(int(t), int(z)) for t, z in zip(*np.nonzero(mask))]


class CorrectionTracker:
    """The model's prediction and the provenance of every (frame, slice) that differs from it.

    Args:
        prediction: the model's labels ``(T, Z, Y, X)``; copied unless ``copy=False`` (the caller's
            array, typically the napari layer's data, is edited in place by painting).
    """

    def __init__(self, prediction: np.ndarray, copy: bool = True):
        pred = np.asarray(prediction)
        if pred.ndim != 4:
            raise InputError(f"Prediction must be (T, Z, Y, X); got shape {pred.shape}.")
        self.prediction = np.array(pred, dtype=np.uint8, copy=True) if copy or pred.dtype != np.uint8 else pred
        #: provenance of each tracked pair: "hand" | "propagated" | "accepted"
        self.kinds: dict[Pair, str] = {}
        #: the labels of each tracked slice when last seen (restores them if a layer was overwritten)
        self.snapshots: dict[Pair, np.ndarray] = {}
        #: the labels a propagation proposed (a proposal painted over becomes a hand correction)
        self.proposals: dict[Pair, np.ndarray] = {}
        #: corrections kept even where they equal the prediction (kept across a re-run, accepted)
        self._marked: set[Pair] = set()
        #: set by :meth:`load` when the file's sidecar could not be trusted (else ``None``)
        self.load_warning: str | None = None

    # -- views ----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.prediction.shape

    @property
    def corrected(self) -> set[Pair]:
        """The corrections: hand-painted and accepted pairs (what fine-tuning and re-runs keep)."""
        return {p for p, k in self.kinds.items() if k != PROPAGATED}

    @property
    def propagated(self) -> set[Pair]:
        """Proposals from a propagation that the user has not accepted yet."""
        return {p for p, k in self.kinds.items() if k == PROPAGATED}

    def kind(self, t: int, z: int) -> str | None:
        return self.kinds.get((int(t), int(z)))

    def sorted_pairs(self) -> list[Pair]:
        """The corrections, sorted (frame, slice)."""
        return sorted(self.corrected)

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
        by default every slice is compared (one vectorised comparison of the whole cine).
        """
        cur = self._check(current)
        if pairs is None:
            diff = (cur != self.prediction).reshape(cur.shape[0], cur.shape[1], -1).any(-1)
            return {(int(t), int(z)) for t, z in zip(*np.nonzero(diff))}
        return {(int(t), int(z)) for t, z in pairs if not np.array_equal(cur[t, z], self.prediction[t, z])}

    def update_from_labels(self, current: np.ndarray, pairs: Iterable[Pair] | None = None) -> set[Pair]:
        """Re-derive the provenance of ``pairs`` (default: every slice) from ``current``.

        An untracked slice that differs from the prediction becomes ``"hand"``; a proposal that was
        painted over becomes ``"hand"``, one that equals the prediction again (undo) is dropped; a
        correction that equals the prediction again is dropped unless it was marked. Returns the
        corrections (:attr:`corrected`).
        """
        cur = self._check(current)
        if pairs is None:
            check = self.changed_slices(cur) | set(self.kinds)
        else:
            n_t, n_z = cur.shape[:2]
            check = {(int(t), int(z)) for t, z in pairs if 0 <= int(t) < n_t and 0 <= int(z) < n_z}
        for p in check:
            self._update_pair(cur, p)
        return self.corrected

    def _update_pair(self, cur: np.ndarray, p: Pair) -> None:
        sl = cur[p]
        equals_prediction = np.array_equal(sl, self.prediction[p])
        kind = self.kinds.get(p)
        if kind == PROPAGATED:
            proposal = self.proposals.get(p)
            if proposal is not None and np.array_equal(sl, proposal):
                self.snapshots[p] = np.array(sl, dtype=np.uint8, copy=True)
                return
            self.proposals.pop(p, None)
            if equals_prediction:
                self._drop(p)
                return
            self.kinds[p] = HAND
        elif equals_prediction and p not in self._marked:
            self._drop(p)
            return
        elif kind is None:
            self.kinds[p] = HAND
        self.snapshots[p] = np.array(sl, dtype=np.uint8, copy=True)

    def _drop(self, p: Pair) -> None:
        self.kinds.pop(p, None)
        self.snapshots.pop(p, None)
        self.proposals.pop(p, None)
        self._marked.discard(p)

    # -- editing --------------------------------------------------------------------------------
    def revert(self, t: int, z: int) -> np.ndarray:
        """Forget ``(t, z)``; returns a copy of the prediction's slice ``(Y, X)`` for the caller to
        write back into the layer."""
        p = (int(t), int(z))
        self._drop(p)
        return self.prediction[p].copy()

    def mark(self, pairs: Iterable[Pair], current: np.ndarray | None = None) -> None:
        """Declare slices corrected (``"hand"`` unless accepted) even where they equal the prediction."""
        for t, z in pairs:
            p = (int(t), int(z))
            if self.kinds.get(p) != ACCEPTED:
                self.kinds[p] = HAND
            self.proposals.pop(p, None)
            self._marked.add(p)
            if current is not None:
                self.snapshots[p] = np.array(self._check(current)[p], dtype=np.uint8, copy=True)

    def set_propagated(self, pairs_values: dict[Pair, np.ndarray]) -> None:
        """Record proposals ``{(t, z): labels (Y, X)}`` just written into the layer by a propagation.

        Corrections (hand or accepted) are never turned into proposals: the caller must not overwrite them.
        """
        for (t, z), values in pairs_values.items():
            p = (int(t), int(z))
            if p in self.corrected:
                raise ValueError(f"frame {t}, slice {z} is a correction; propagation must not overwrite it")
            arr = np.array(values, dtype=np.uint8, copy=True)
            self.kinds[p] = PROPAGATED
            self.proposals[p] = arr
            self.snapshots[p] = arr.copy()
            self._marked.discard(p)

    def accept(self, pairs: Iterable[Pair] | None = None) -> list[Pair]:
        """Accept proposals (default: all): they become corrections. Returns the pairs accepted."""
        todo = self.propagated if pairs is None else {(int(t), int(z)) for t, z in pairs} & self.propagated
        for p in todo:
            self.kinds[p] = ACCEPTED
            self.proposals.pop(p, None)
            self._marked.add(p)
        return sorted(todo)

    def merge_new_prediction(self, new_prediction: np.ndarray, current: np.ndarray | None = None,
                             overwrite: bool = False) -> np.ndarray:
        """Labels to show after a re-run: ``new_prediction`` everywhere except the corrections (hand and
        accepted), which keep ``current``'s labels — or, with ``current=None`` (the layer was already
        overwritten), the tracker's last snapshots of them. Proposals are replaced by the new prediction.
        ``overwrite`` drops every correction instead.

        The tracker's prediction becomes ``new_prediction``; corrections stay corrections even if they
        happen to equal the new prediction.
        """
        new = np.asarray(new_prediction)
        if new.shape != self.prediction.shape:
            raise InputError(
                f"The new prediction has shape {new.shape}, the previous one {self.prediction.shape}; "
                "re-run on the same image to keep the corrections."
            )
        merged = np.array(new, dtype=np.uint8, copy=True)
        self.merge_into(merged, current, overwrite=overwrite, new_prediction=new)
        return merged

    def merge_into(self, out: np.ndarray, current: np.ndarray | None = None, overwrite: bool = False,
                   new_prediction: np.ndarray | None = None, copy: bool = True) -> None:
        """In place: ``out`` already holds the new prediction; write the corrections into it.

        ``new_prediction`` (default ``out``, always copied) becomes the tracker's prediction; with
        ``copy=False`` a uint8 ``new_prediction`` is kept without copying (the caller promises never to
        modify it — e.g. the labels of an ``InferenceResult``).
        """
        cur = None if current is None else self._check(current)
        keep = {} if overwrite else {
            p: (np.array(cur[p], copy=True) if cur is not None else self.snapshots.get(p, self.prediction[p]))
            for p in self.corrected
        }
        kinds = {p: self.kinds[p] for p in keep}
        if new_prediction is None or copy or np.asarray(new_prediction).dtype != np.uint8:
            self.prediction = np.array(out if new_prediction is None else new_prediction, dtype=np.uint8, copy=True)
        else:
            self.prediction = np.asarray(new_prediction)
        self.kinds, self.snapshots, self.proposals, self._marked = {}, {}, {}, set()
        for p, values in keep.items():
            out[p] = values
            self.kinds[p] = kinds[p]
            self.snapshots[p] = np.array(values, dtype=np.uint8, copy=True)
            self._marked.add(p)

    # -- export ---------------------------------------------------------------------------------
    def corrections_array(self, current: np.ndarray) -> np.ndarray:
        """The command line's corrections format: ``current`` on corrections (hand and accepted
        slices; never unaccepted proposals), 255 elsewhere."""
        cur = self._check(current)
        out = np.full(cur.shape, UNLABELLED, dtype=np.uint8)
        for t, z in self.corrected:
            out[t, z] = cur[t, z]
        return out

    def save(self, path: str | os.PathLike, current: np.ndarray, affine=None, spacing=None,
             frame_interval_ms: float = 0.0, source: str | None = None) -> tuple[Path, Path]:
        """Save ``current`` labels as NIfTI ``(X, Y, Z, T)`` (with ``affine``) and the sidecar JSON,
        which records the NIfTI's SHA-256. Returns ``(labels_path, sidecar_path)``."""
        from .io import write_nifti_labels

        cur = self._check(current)
        out = write_nifti_labels(path, cur, affine, spacing, frame_interval_ms)
        side = sidecar_path(out)
        payload = {
            "format": SIDECAR_FORMAT,
            "version": 2,
            "shape_TZYX": [int(s) for s in cur.shape],
            "corrected": [[t, z] for t, z in self.sorted_pairs()],
            "accepted": [[t, z] for t, z in sorted(p for p, k in self.kinds.items() if k == ACCEPTED)],
            "labels_file": out.name,
            "labels_sha256": file_sha256(out),
            "source": source,
        }
        atomic_write(side, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)), suffix=".json")
        return out, side

    def _trusted_sidecar(self, path: Path) -> dict | None:
        """The sidecar's content if it belongs to ``path`` (hash matches), else ``None`` (and a warning)."""
        side = sidecar_path(path)
        if not side.exists():
            return None
        try:
            payload = json.loads(side.read_text())
            pairs = payload["corrected"]
            [(int(t), int(z)) for t, z in pairs]
        except Exception as exc:
            raise InputError(f"{side.name} is not a valid corrections sidecar ({exc}); "
                             "delete it to load the labels without it.") from None
        digest = payload.get("labels_sha256")
        if digest is None or digest != file_sha256(path):
            self.load_warning = (
                f"{side.name} does not belong to {path.name} (the labels file was changed after it was "
                "saved); it was ignored and the corrected slices were found by comparing with the prediction."
            )
            return None
        return payload

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Load labels saved by :meth:`save` (or a corrections file with 255 = unlabelled).

        Returns the labels to show: the file's labels on corrected slices, the prediction elsewhere.
        The corrections become the sidecar's list when the sidecar belongs to this file (SHA-256 match);
        otherwise (no sidecar, or a stale one: :attr:`load_warning` says so) the slices that are not all
        255 and differ from the prediction. Loaded corrections replace the tracked ones.
        """
        from .io import read_nifti_labels

        path = Path(path)
        self.load_warning = None
        labels = read_nifti_labels(path)
        if labels.shape != self.prediction.shape:
            raise InputError(
                f"The corrections file {path.name} has shape {labels.shape} (T, Z, Y, X) but the image "
                f"has {self.prediction.shape}; load corrections saved for this image."
            )
        payload = self._trusted_sidecar(path)
        accepted: set[Pair] = set()
        if payload is not None:
            pairs = {(int(t), int(z)) for t, z in payload["corrected"]}
            accepted = {(int(t), int(z)) for t, z in payload.get("accepted", [])}
        else:
            candidates = labelled_pairs(labels)
            pairs = {p for p in candidates if not np.array_equal(labels[p], self.prediction[p])}
        out = self.prediction.copy()
        for t, z in pairs:
            if not (0 <= t < out.shape[0] and 0 <= z < out.shape[1]):
                raise InputError(f"The sidecar lists frame {t}, slice {z}, outside the image {out.shape}.")
            out[t, z] = labels[t, z]
        self.kinds = {p: (ACCEPTED if p in accepted else HAND) for p in pairs}
        self.proposals = {}
        self._marked = set(pairs)
        self.snapshots = {p: out[p].copy() for p in pairs}
        return out
