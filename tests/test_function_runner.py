"""The "Cardiac function" panel's work goes through the viewer's one job runner, as read-only jobs
(real napari viewer, run under Xvfb: ``make test``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("qtpy")
napari = pytest.importorskip("napari")

from napari_cardiac_motion.widgets import _function_context  # noqa: E402
from napari_cardiac_motion.widgets.function_widget import FunctionWidget  # noqa: E402

SPACING = (8.0, 1.5, 1.5)
TIMEOUT_MS = 30_000
DEBOUNCE_SETTLE_MS = 600  # longer than the panel's debounce: a queued read-out would have started


def _phantom(radius_by_frame=(8, 6, 7)) -> np.ndarray:
    """(T, Z=2, 32, 32) labels: an LV disc of the given radius per frame in a 2-px myocardial ring."""
    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(yy - 16, xx - 16)
    lab = np.zeros((len(radius_by_frame), 2, 32, 32), np.uint8)
    for t, radius in enumerate(radius_by_frame):
        lab[t, :][:, (r >= radius) & (r < radius + 2)] = 2
        lab[t, :][:, r < radius] = 1
    return lab


@pytest.fixture
def panel(make_napari_viewer, qtbot):
    """A viewer with one Labels layer and the panel docked, its first read-out done."""
    viewer = make_napari_viewer()
    viewer.add_labels(_phantom(), name="segmentation", scale=(1.0, *SPACING), metadata={"spacing": SPACING})
    widget = FunctionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Cardiac function")
    qtbot.waitUntil(lambda: widget.measurements is not None and not widget.is_busy and widget.warmed_up,
                    timeout=TIMEOUT_MS)
    return viewer, widget


class Gate:
    """Replaces :func:`compute_readout`: each call waits until the test opens the gate; counts calls and
    the most calls running at once."""

    def __init__(self, monkeypatch):
        self.real = _function_context.compute_readout
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.calls = self.running = self.most = 0
        monkeypatch.setattr(_function_context, "compute_readout", self)

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            assert self.open.wait(20), "the test never opened the gate"
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


def test_readout_is_a_read_only_job_of_the_runner(panel, qtbot, monkeypatch):
    """The read-out runs in the session's runner under the panel's slot, reports progress, marks no image
    busy and does not keep a Run (a job on an image) from starting."""
    viewer, widget = panel
    runner, state = widget.runner, widget.session.state
    events, progress, finished = [], [], []
    state.subscribe(lambda st, key, what: events.append(str(what)))
    runner.progress.connect(lambda key, done, total, info: progress.append((key, info.message)))
    runner.finished.connect(lambda key, job, outcome: finished.append((key, job, outcome)))
    gate = Gate(monkeypatch)
    widget.compute()
    assert runner.is_running(widget.readout_key) and widget.is_busy
    assert widget.readout_key.job == _function_context.READOUT_JOB
    assert not runner.is_running()  # no image job: nothing is busy
    assert runner.start("an image", "run", lambda progress, cancel: 7, on_result=finished.append)
    qtbot.waitUntil(lambda: 7 in finished and ("an image", "run", "done") in finished, timeout=TIMEOUT_MS)
    assert runner.is_running(widget.readout_key)  # the Run came and went; the read-out still runs
    gate.open.set()
    done = (widget.readout_key, _function_context.READOUT_JOB, "done")
    qtbot.waitUntil(lambda: done in finished, timeout=TIMEOUT_MS)
    assert gate.calls == 1
    assert (widget.readout_key, "Computing the read-out") in progress
    assert [e for e in events if e == "busy"] == ["busy", "busy"]  # only the Run's start and end
    assert widget.measurements is not None and widget.status.text().startswith("ED frame")


def test_a_second_request_while_one_runs_starts_no_second_job(panel, qtbot, monkeypatch):
    """Requests while a read-out runs are folded into one more read-out after it (never two at once)."""
    viewer, widget = panel
    gate = Gate(monkeypatch)
    n = widget.n_computed
    widget.compute()
    qtbot.waitUntil(lambda: gate.calls == 1, timeout=TIMEOUT_MS)
    for _ in range(3):
        widget.compute()
        widget.refresh_button.click()
    assert not widget.runner.start_read_only(widget.readout_key.owner, widget.readout_key.job, lambda **_: None)
    qtbot.wait(200)
    assert gate.calls == 1
    gate.open.set()
    qtbot.waitUntil(lambda: widget.n_computed == n + 2 and not widget.is_busy, timeout=TIMEOUT_MS)
    qtbot.wait(DEBOUNCE_SETTLE_MS)
    assert gate.calls == 2 and gate.most == 1
    assert widget.n_computed == n + 2


def test_a_failure_says_so_once_and_the_panel_stays_usable(panel, qtbot, monkeypatch, notifications):
    viewer, widget = panel
    before = widget.measurements

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(_function_context, "compute_readout", broken)
    n = widget.n_computed
    widget.compute()
    qtbot.waitUntil(lambda: widget.n_computed == n + 1 and not widget.is_busy, timeout=TIMEOUT_MS)
    assert widget.status.text() == "Error: unexpected RuntimeError: disk on fire"
    assert notifications["error"] == ["Cardiac function: the read-out failed (unexpected RuntimeError: disk on fire)"]
    assert notifications["warning"] == [] and notifications["info"] == []
    assert widget.measurements is before  # the last good read-out stays on show
    monkeypatch.undo()  # fixed: the panel works again
    widget.refresh_button.click()
    qtbot.waitUntil(lambda: widget.n_computed == n + 2 and not widget.is_busy, timeout=TIMEOUT_MS)
    assert widget.status.text().startswith("ED frame") and widget.measurements is not before
    assert len(notifications["error"]) == 1


def test_a_known_problem_of_the_input_is_one_line_in_the_panel(panel, qtbot, notifications):
    """A layer whose spacing is impossible: the panel says what is wrong in its status line (the
    read-out's own words), nothing pops up."""
    viewer, widget = panel
    bad = viewer.add_labels(_phantom(), name="bad spacing", metadata={"spacing": (0.0, 1.5, 1.5)})
    n = widget.n_computed
    widget.set_layer(bad)
    qtbot.waitUntil(lambda: widget.n_computed > n and not widget.is_busy, timeout=TIMEOUT_MS)
    assert widget.status.text().startswith("Error: Voxel spacing must be three positive numbers")
    assert "\n" not in widget.status.text()
    assert notifications == {"error": [], "info": [], "warning": []}


def test_switching_layers_cancels_the_stale_readout(panel, qtbot, monkeypatch):
    viewer, widget = panel
    other = viewer.add_labels(_phantom((9, 5, 9)), name="other", scale=(1.0, *SPACING),
                              metadata={"spacing": SPACING})
    outcomes = []
    widget.runner.finished.connect(lambda key, job, outcome: outcomes.append(outcome)
                                   if key == widget.readout_key else None)
    gate = Gate(monkeypatch)
    widget.compute()
    qtbot.waitUntil(lambda: gate.calls == 1, timeout=TIMEOUT_MS)
    widget.set_layer(other)
    assert widget.runner.cancelling(widget.readout_key)
    gate.open.set()
    qtbot.waitUntil(lambda: outcomes[:1] == ["cancelled"], timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: "done" in outcomes and not widget.is_busy, timeout=TIMEOUT_MS)
    lv = (_phantom((9, 5, 9)) == 1).sum(axis=(1, 2, 3)) * np.prod(SPACING) / 1000.0
    assert widget.measurements["lv_edv_ml"] == pytest.approx(lv.max())
