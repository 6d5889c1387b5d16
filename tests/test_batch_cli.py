"""``napari-cardiac-motion batch`` on a real local Dask cluster: killed midway, resumed; bad cases recorded."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_cardiac_motion.cine import Cine
from napari_cardiac_motion.cli import main
from napari_cardiac_motion.cli.batch import DONE_FILE, discover_cases, is_finished, sort_by_qc
from napari_cardiac_motion.io import write_nifti_image
from conftest import tiny_net
from napari_cardiac_motion.model import save_checkpoint

N_GOOD = 5


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(0)
    net = tiny_net()
    with torch.no_grad():  # make the random model label LV blood pool somewhere
        net.seg_head[-1].bias.copy_(torch.tensor([0.0, 3.0, 0.0, 0.0]))
    return save_checkpoint(net, tmp_path_factory.mktemp("m") / "tiny.pt", {"name": "tiny-batch", "version": "7"})


def _cohort(folder: Path, n: int = N_GOOD, shape=(10, 2, 48, 48)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        data = rng.random(shape, dtype=np.float32)
        write_nifti_image(folder / f"case{i}.nii.gz",
                          Cine(data, (8.0, 1.5, 1.5), 40.0, np.diag([1.5, 1.5, 8.0, 1.0]), f"case{i}"))
    (folder / "broken.nii.gz").write_bytes(b"this is not a NIfTI file")
    return folder


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DISPLAY", None)
    return env


def test_discover_cases(tmp_path):
    a = _cohort(tmp_path / "a", n=2, shape=(2, 1, 16, 16))
    (tmp_path / "b").mkdir()
    write_nifti_image(tmp_path / "b" / "case0.nii.gz", Cine(np.random.rand(2, 1, 16, 16), name="x"))
    dcm = tmp_path / "dicoms" / "patientX"
    dcm.mkdir(parents=True)
    (dcm / "im1.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    cases, bad = discover_cases([str(a), str(tmp_path / "b" / "case0.nii.gz"), str(tmp_path / "dicoms"),
                                 str(tmp_path / "missing"), str(tmp_path / "notes.txt"), str(tmp_path / "empty")])
    names = [c.name for c in cases]
    # duplicate stems are told apart by their folder; a folder of DICOM folders gives one case per series
    assert names == ["broken", "a_case0", "case1", "b_case0", "patientX"]
    assert {b["case"] for b in bad} == {"missing", "notes.txt", "empty"}


def test_kill_midway_then_resume(tmp_path, tiny_model):
    inp = _cohort(tmp_path / "in")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_cardiac_motion", "batch", str(inp), "--out", str(out),
           "--workers", "1", "--device", "cpu", "--model", str(tiny_model)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(),
                            start_new_session=True)  # its own process group: the cluster's processes too
    deadline = time.monotonic() + 240
    try:
        while not any((out / f"case{i}" / DONE_FILE).exists() for i in range(N_GOOD)):
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
            assert time.monotonic() < deadline, "no case finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the batch, its scheduler and its workers, all at once
        proc.wait(timeout=30)
    finished_before = {i for i in range(N_GOOD) if is_finished(out / f"case{i}")}
    assert 1 <= len(finished_before) < N_GOOD  # killed midway
    stamps = {i: (out / f"case{i}" / "labels.nii.gz").stat().st_mtime_ns for i in finished_before}

    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 1, res.stderr  # 1: some case (the broken file) failed
    assert f"{len(finished_before)} already finished" in res.stderr
    for i in range(N_GOOD):
        d = out / f"case{i}"
        assert is_finished(d)
        for f in ("labels.nii.gz", "flow.nii.gz", "result.json", "measurements.json"):
            assert (d / f).is_file(), (i, f)
    for i, stamp in stamps.items():  # finished cases were not run again
        assert (out / f"case{i}" / "labels.nii.gz").stat().st_mtime_ns == stamp
    rows = list(csv.DictReader((out / "measurements.csv").open()))
    assert sorted(r["case"] for r in rows) == [f"case{i}" for i in range(N_GOOD)]
    meas = json.loads((out / "case0" / "measurements.json").read_text())
    row0 = next(r for r in rows if r["case"] == "case0")
    assert float(row0["lv_edv_ml"]) == pytest.approx(meas["lv_edv_ml"])
    assert meas["lv_edv_ml"] > 0 and row0["model_name"] == "tiny-batch"
    fails = list(csv.DictReader((out / "failures.csv").open()))
    assert [f["case"] for f in fails] == ["broken"] and "NIfTI" in fails[0]["reason"]
    assert "\n" not in fails[0]["reason"]


def test_running_scheduler(tmp_path, tiny_model):
    """``--scheduler`` uses an already running cluster (here one in this process)."""
    from distributed import LocalCluster

    inp = _cohort(tmp_path / "in", n=2, shape=(4, 1, 32, 32))
    (inp / "broken.nii.gz").unlink()
    out = tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        rc = main(["batch", str(inp), "--out", str(out), "--scheduler", cluster.scheduler_address,
                   "--device", "cpu", "--model", str(tiny_model), "--tta"])
        assert cluster.scheduler is not None
    assert rc == 0
    assert is_finished(out / "case0") and is_finished(out / "case1")
    assert list(csv.DictReader((out / "failures.csv").open())) == []
    assert json.loads((out / "case0" / "result.json").read_text())["tta"] is True  # --tta reached predict
    # per-case quality control columns, right after the case, worst case first
    rows = list(csv.DictReader((out / "measurements.csv").open()))
    assert list(rows[0])[:4] == ["case", "qc_flagged", "qc_worst_score", "qc_worst_reason"]
    worst = [float(r["qc_worst_score"]) for r in rows]
    assert worst == sorted(worst, reverse=True)
    for r in rows:
        qc = json.loads((out / r["case"] / "qc.json").read_text())
        assert int(r["qc_flagged"]) == qc["flagged"]
        assert float(r["qc_worst_score"]) == pytest.approx(qc["slices"][0]["score"], abs=1e-3)
        assert r["qc_worst_reason"] == qc["slices"][0].get("reason", "")
    assert main(["batch", str(tmp_path / "nothing-here"), "--out", str(out), "--scheduler", "tcp://127.0.0.1:9"]) == 1


def test_sort_by_qc():
    rows = [{"case": "a", "qc_worst_score": 0.1}, {"case": "b"}, {"case": "c", "qc_worst_score": 2.5},
            {"case": "d", "qc_worst_score": -1.0}]
    assert [r["case"] for r in sort_by_qc(rows)] == ["c", "a", "d", "b"]
