"""One generic runner for every background job of the panels (Qt side).

:meth:`JobRunner.start` marks the image busy in the :class:`~..state.ViewerState` (one job at a time
per image: a second start on a busy image is refused), runs a job body from :mod:`._jobs` in a napari
worker thread, relays its progress to the GUI thread through a Qt signal, and delivers its value —
or its error, never raised in the worker — to callbacks on the GUI thread. Cancel sets an event the
job checks. Panels show the busy state by listening to the state (``StateEvent.BUSY`` events) and to
:attr:`JobRunner.progress` (its ``info`` is always a :class:`~._jobs.JobProgress`).

:meth:`JobRunner.start_read_only` runs a job that only reads (a read-out, an export, a warm-up): it
neither marks an image busy nor waits for one, so it never blocks Run or painting. Its slot is a
:class:`ReadOnlyKey` ``(owner, job)``: one such job per slot at a time (a second start while one runs
is refused quietly, and the caller may ask again when ``finished`` says it is done).
"""

from __future__ import annotations

import atexit
import inspect
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from qtpy.QtCore import QObject, QTimer, Signal

from ..errors import CancelledError, CardiacMotionError
from ..state import Busy, ViewerState
from ._jobs import JobProgress


#: delay (ms) before the next piece of GUI-thread work of a job (a landing step, the progress bar). Not 0:
#: Qt 6 runs a 0 ms single shot as a posted event, in the same pass as the previous one, before timers
#: and input; a real timer lets the GUI handle what is waiting (input, timers, paints) in between.
NEXT_TURN_MS = 1

#: how long (ms) Python's exit waits for jobs still running after napari closed (they are asked to stop first)
EXIT_WAIT_MS = 30_000

_live_runners: "weakref.WeakSet[JobRunner]" = weakref.WeakSet()


def drain_jobs_at_exit(wait_ms: int = EXIT_WAIT_MS) -> bool:
    """Ask every running job to stop and wait for the worker threads (run at Python's exit): a worker that
    finished after Qt had deleted its signals aborted the process (quitting napari seconds after opening a
    panel, or during a job). Returns whether every worker ended within ``wait_ms``."""
    from qtpy.QtCore import QThreadPool

    for runner in list(_live_runners):
        runner.cancel()
    return bool(QThreadPool.globalInstance().waitForDone(int(wait_ms)))


@dataclass
class _Failure:
    """An exception returned by the job (a returned Exception would be re-raised by napari's worker)."""

    error: BaseException


def _guarded(fn: Callable, args: tuple, kwargs: dict, progress, cancel):
    try:
        return fn(*args, progress=progress, cancel=cancel, **kwargs)
    except BaseException as exc:  # delivered to the GUI thread and shown there
        return _Failure(exc)


def user_message(error: BaseException) -> str:
    """A one-line message for the user (our errors say what to do; others are named)."""
    if isinstance(error, CardiacMotionError):
        return str(error)
    return f"unexpected {type(error).__name__}: {error}"


@dataclass(frozen=True)
class ReadOnlyKey:
    """The slot of a read-only job: who runs it (``owner``, e.g. a panel's ``id``) and what (``job``).
    Never equal to an image key, so read-only jobs and an image's jobs never wait for each other."""

    owner: Hashable
    job: str


@dataclass
class _Job:
    key: Hashable
    name: str
    worker: Any
    cancel: threading.Event
    read_only: bool = False
    pbar: Any = None
    outcome: str | None = None
    steps: Any = None  # a generator applying the result step by step (GUI thread)
    prep: Any = None  # a generator preparing for the result while the job runs (GUI thread)
    on_error: Any = None
    worker_done: bool = False


class JobRunner(QObject):
    """Runs jobs off the GUI thread, one per image (see module docstring).

    Signals (GUI thread): ``progress(key, done, total, info)`` with ``info`` a :class:`JobProgress`
    (a job reporting a bare message or losses dict is wrapped); ``finished(key, job, outcome)`` with
    outcome ``"done"``, ``"cancelled"`` or ``"error"``.
    """

    progress = Signal(object, int, int, object)
    finished = Signal(object, str, str)
    _relay = Signal(object, int, int, object)

    def __init__(self, state: ViewerState, parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.jobs: dict[Hashable, _Job] = {}
        #: outcome of the last job per image
        self.outcomes: dict[Hashable, str] = {}
        self._relay.connect(self._on_progress)
        if not _live_runners:
            atexit.unregister(drain_jobs_at_exit)  # registered once, whatever the number of runners
            atexit.register(drain_jobs_at_exit)
        _live_runners.add(self)

    def is_running(self, key: Hashable | None = None, job: str | None = None) -> bool:
        """Whether a job (named ``job``, if given) runs on ``key``: an image key or a :class:`ReadOnlyKey`
        (default: on any image; read-only jobs are not counted then)."""
        entries = ([e for e in self.jobs.values() if not e.read_only] if key is None
                   else [e for e in (self.jobs.get(key),) if e])
        return any(job is None or e.name == job for e in entries)

    def start(self, key: Hashable, job: str, fn: Callable, *args: Any, name: str | None = None,
              on_result: Callable[[Any], None] | None = None,
              on_error: Callable[[str, BaseException], None] | None = None,
              progress_label: str | None = None, prepare: Any = None, **kwargs: Any) -> bool:
        """Run ``fn(*args, progress=..., cancel=..., **kwargs)`` in a worker thread for image ``key``.

        ``prepare`` (a generator) runs on the GUI thread while the job works, one step per event-loop turn
        (e.g. creating the layers the result will fill); steps it has not run when the result arrives run
        first, and it is closed when the job fails or is cancelled (``on_error`` then undoes what it made).

        ``on_result(value)`` runs on the GUI thread when it succeeds — when it returns a generator, each of
        its steps runs in its own event-loop turn, and the image stays busy until the last;
        ``on_error(outcome, error)`` when it
        fails or is cancelled (default: a napari notification). Returns False (and tells the user) when
        the image is busy.
        """
        from napari.utils.notifications import show_warning

        try:
            self.state.begin_job(key, job, name)
        except Busy as exc:
            show_warning(f"Cardiac motion: {exc}")
            return False
        try:
            self._launch(_Job(key, job, None, threading.Event(), prep=prepare), fn, args, kwargs, on_result,
                         on_error, progress_label)
        except Exception:
            self.state.end_job(key)
            raise
        return True

    def start_read_only(self, owner: Hashable, job: str, fn: Callable, *args: Any,
                        on_result: Callable[[Any], None] | None = None,
                        on_error: Callable[[str, BaseException], None] | None = None,
                        progress_label: str | None = None, **kwargs: Any) -> bool:
        """Like :meth:`start` for a job that changes no image (no busy mark, no edits): its slot is
        ``ReadOnlyKey(owner, job)`` (the ``key`` of its signals). Returns False, saying nothing, while
        the same slot's job still runs."""
        key = ReadOnlyKey(owner, job)
        if key in self.jobs:
            return False
        self._launch(_Job(key, job, None, threading.Event(), read_only=True), fn, args, kwargs, on_result,
                     on_error, progress_label)
        return True

    def _launch(self, entry: _Job, fn: Callable, args: tuple, kwargs: dict, on_result, on_error,
                progress_label: str | None) -> None:
        """Create and start the worker of ``entry`` (GUI thread)."""
        from napari.qt.threading import create_worker

        key, cancel_event = entry.key, entry.cancel
        holder: dict[str, Any] = {}
        relay = self._relay

        def cancel() -> bool:
            w = holder.get("worker")
            return cancel_event.is_set() or bool(w is not None and w.abort_requested)

        def progress(done: int, total: int, info: Any = None) -> None:
            relay.emit(key, int(done), int(total), JobProgress.of(done, total, info))

        worker = create_worker(_guarded, fn, args, kwargs, progress, cancel, _start_thread=False)
        holder["worker"] = entry.worker = worker
        if progress_label:  # in the next event-loop turn: napari builds a widget for it (~0.1–0.3 s)
            QTimer.singleShot(NEXT_TURN_MS, lambda: self._open_pbar(entry, progress_label))
        self.jobs[key] = entry
        worker.returned.connect(lambda out: self._on_returned(entry, out, on_result, on_error))
        worker.finished.connect(lambda: self._on_finished(entry))
        worker.start()
        if entry.prep is not None:
            QTimer.singleShot(NEXT_TURN_MS, lambda: self._prep_step(entry))

    def _prep_step(self, entry: _Job) -> None:
        """One step of the job's preparation (see :meth:`start`); a failing one only ends the preparation."""
        if entry.prep is None:
            return
        try:
            next(entry.prep)
        except Exception:  # StopIteration, or a preparation that failed: the landing makes what is missing
            entry.prep = None
            return
        QTimer.singleShot(NEXT_TURN_MS, lambda: self._prep_step(entry))

    @staticmethod
    def _after(prep, steps):
        """The rest of ``prep``, then the landing ``steps`` (each a step of its own)."""
        try:
            yield from prep
        except Exception:
            pass
        return (yield from steps)

    def _open_pbar(self, entry: _Job, label: str) -> None:
        """napari's progress bar (activity dock) for a job still running."""
        if self.jobs.get(entry.key) is not entry or entry.worker_done:
            return
        try:
            from napari.utils import progress as napari_progress

            entry.pbar = napari_progress(total=0, desc=label)
        except Exception:  # the activity dock is a nicety
            entry.pbar = None

    def cancel(self, key: Hashable | None = None) -> None:
        """Ask the job on ``key`` (default: every job) to stop at its next check."""
        for k, entry in list(self.jobs.items()):
            if key is None or k == key:
                entry.cancel.set()

    def cancelling(self, key: Hashable) -> bool:
        entry = self.jobs.get(key)
        return bool(entry is not None and entry.cancel.is_set())

    # -- GUI-thread callbacks -------------------------------------------------------------------
    def _on_progress(self, key, done: int, total: int, info: JobProgress) -> None:
        entry = self.jobs.get(key)
        if entry is None:
            return
        self.progress.emit(key, done, total, info)
        pbar = entry.pbar
        if pbar is not None:
            try:
                if pbar.total != total:
                    pbar.total = total
                if info.message:
                    pbar.set_description(f"Cardiac motion: {info.message}")
                pbar.update(done - pbar.n)  # last: may process events re-entrantly
            except Exception:
                pass

    def _on_returned(self, entry: _Job, out, on_result, on_error) -> None:
        from napari.utils.notifications import show_error, show_info

        prep, entry.prep = entry.prep, None
        if prep is not None and (isinstance(out, _Failure) or entry.cancel.is_set() or on_result is None):
            prep.close()
            prep = None
        if isinstance(out, _Failure):
            error = out.error
            if entry.cancel.is_set() or isinstance(error, CancelledError):
                entry.outcome = "cancelled"
            else:
                entry.outcome = "error"
            if on_error is not None:
                on_error(entry.outcome, error)
            elif entry.outcome == "cancelled":
                show_info(f"Cardiac motion: {entry.name} cancelled; nothing was changed.")
            else:
                show_error(f"Cardiac motion: {user_message(error)}")
            return
        if entry.cancel.is_set():
            entry.outcome = "cancelled"
            if on_error is not None:
                on_error("cancelled", CancelledError("Cancelled by the user."))
            return
        entry.outcome = "done"
        if on_result is not None:
            try:
                steps = on_result(out)
            except Exception as exc:  # never a traceback in the user's face
                self._failed(entry, exc, on_error)
                return
            if prep is not None:
                steps = self._after(prep, steps if inspect.isgenerator(steps) else iter(()))
            if inspect.isgenerator(steps):  # apply in steps, one per event-loop turn
                entry.steps = steps
                entry.on_error = on_error
                QTimer.singleShot(NEXT_TURN_MS, lambda: self._step(entry))

    def _failed(self, entry: _Job, exc: BaseException, on_error) -> None:
        from napari.utils.notifications import show_error

        entry.outcome = "error"
        if on_error is not None:
            on_error("error", exc)
        else:
            show_error(f"Cardiac motion: could not show the results ({user_message(exc)})")

    def _step(self, entry: _Job) -> None:
        try:
            next(entry.steps)
        except StopIteration:
            entry.steps = None
        except Exception as exc:
            entry.steps = None
            self._failed(entry, exc, entry.on_error)
        else:
            QTimer.singleShot(NEXT_TURN_MS, lambda: self._step(entry))
            return
        if entry.worker_done:
            self._complete(entry)

    def _on_finished(self, entry: _Job) -> None:
        entry.worker_done = True
        if entry.steps is None:
            self._complete(entry)

    def _complete(self, entry: _Job) -> None:
        if entry.outcome is None:  # aborted from napari's activity dock
            entry.outcome = "cancelled"
        if entry.pbar is not None:
            try:
                entry.pbar.close()
            except Exception:
                pass
            entry.pbar = None
        if self.jobs.get(entry.key) is entry:
            del self.jobs[entry.key]
        self.outcomes[entry.key] = entry.outcome
        if not entry.read_only:
            self.state.end_job(entry.key)
        self.finished.emit(entry.key, entry.name, entry.outcome)
