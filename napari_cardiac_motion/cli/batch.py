"""``napari-cardiac-motion batch INPUT... --out DIR``: a cohort on Dask distributed, resumable.

Every case (a NIfTI cine, a DICOM cine folder, or each of those inside a given folder) runs the same
code as ``predict`` on a Dask worker and gets the ``predict`` outputs in ``DIR/<case>/`` (labels, flow,
result.json, measurements.json). When they are all written, ``DIR/<case>/done.json`` (the case's
cohort row) is written atomically, last: a case is finished exactly when that file exists, so a killed
batch resumes where it stopped. A failing case is recorded (``DIR/failures.csv``: case, one-line
reason) and never stops the others. ``DIR/measurements.csv`` holds one row per finished case, worst
quality control first: ``qc_flagged`` (the case's flagged (frame, slice) pairs, see ``qc.json``),
``qc_worst_score`` (its highest score) and ``qc_worst_reason`` (why, when that slice is flagged) come right
after the case, and the rows are sorted by ``qc_worst_score``, highest first, so that the cases to review
surface first.

The cluster is a :class:`distributed.LocalCluster` of ``--workers`` processes (one thread each) unless
``--scheduler ADDRESS`` names a running Dask scheduler, whose workers need this package installed and
the inputs and ``DIR`` at the same paths (a shared file system).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..devices import DEVICE_CHOICES
from ..errors import CardiacMotionError, InputError

DONE_FILE = "done.json"
#: the cohort table's first columns; rows are sorted by ``qc_worst_score`` (highest first)
COHORT_FIRST = ("case", "qc_flagged", "qc_worst_score", "qc_worst_reason", "input")


@dataclass(frozen=True)
class CaseSpec:
    """One case: its name (the output folder) and its input path."""

    name: str
    path: str


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch", help="run a cohort on Dask (resumable); one measurements row per case",
        description="Run predict on every case (NIfTI cines, DICOM cine folders, or folders of them) on a Dask "
                    "cluster: per case the predict outputs in DIR/<case>/, for the cohort DIR/measurements.csv "
                    "and DIR/failures.csv. Re-running skips finished cases.")
    p.add_argument("input", nargs="+", help="NIfTI files, DICOM folders, or folders holding them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler (e.g. tcp://host:8786); default: a local cluster")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes of the local cluster (default: half the CPU cores, at least 1)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--model", default=None,
                   help="'default' (the shipped MR model), 'echo' (the shipped echo model) or a model checkpoint")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="passed to predict: flip test-time augmentation (default: the model's, on for MR)")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- cases

def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "case"


def discover_cases(inputs: list[str]) -> tuple[list[CaseSpec], list[dict[str, str]]]:
    """Cases under ``inputs`` and ``{"case", "reason"}`` records for inputs that hold none.

    A NIfTI file is a case; a folder holding DICOM files is a case; another folder contributes its NIfTI
    files and its DICOM sub-folders. Names are the file stem or folder name, made unique with the parent
    folder's name (then a number).
    """
    from ..io.dicom import dicom_files_in
    from ..io.nifti import is_nifti_path, nifti_stem

    found: list[tuple[str, Path]] = []
    bad: list[dict[str, str]] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            bad.append({"case": _safe(p.name), "reason": f"not found: {p}"})
        elif p.is_file():
            if is_nifti_path(p):
                found.append((nifti_stem(p), p))
            else:
                bad.append({"case": _safe(p.name), "reason": f"not a NIfTI file (.nii/.nii.gz): {p}"})
        elif dicom_files_in(p):
            found.append((p.name, p))
        else:
            before = len(found)
            for child in sorted(p.iterdir()):
                if child.name.startswith("."):
                    continue
                if child.is_file() and is_nifti_path(child):
                    found.append((nifti_stem(child), child))
                elif child.is_dir() and dicom_files_in(child):
                    found.append((child.name, child))
            if len(found) == before:
                bad.append({"case": _safe(p.name), "reason": f"no NIfTI cine or DICOM cine folder in {p}"})
    names: dict[str, int] = {}
    for stem, _ in found:
        names[_safe(stem)] = names.get(_safe(stem), 0) + 1
    cases: list[CaseSpec] = []
    used: set[str] = set()
    for stem, path in found:
        name = _safe(stem)
        if names[name] > 1:
            name = _safe(f"{path.parent.name}_{stem}")
        base, k = name, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        cases.append(CaseSpec(name, str(path.resolve())))
    return cases, bad


def is_finished(case_dir: Path) -> bool:
    """True when the case's outputs were all written (its ``done.json`` exists and parses)."""
    try:
        json.loads((case_dir / DONE_FILE).read_text())
        return True
    except (OSError, ValueError):
        return False


# ----------------------------------------------------------------------------- worker side

def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if isinstance(exc, CardiacMotionError) else f"{type(exc).__name__}: {msg}"


def process_case(case: CaseSpec, out_dir: str, model: str | None, device: str,
                 extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``predict`` on one case (on a Dask worker). Returns ``{"case", "ok", "row" | "reason"}``; never raises."""
    import contextlib
    import io

    from ..atomic import atomic_write_json
    from . import build_parser

    case_dir = Path(out_dir) / case.name
    argv = (["predict", case.path, "--out", str(case_dir), "--device", device]
            + (["--model", model] if model else []) + list(extra))
    try:
        args = build_parser().parse_args(argv)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args.func(args)
        meas = json.loads((case_dir / "measurements.json").read_text())
        from ..analysis.measurements import SCALAR_MEASURES

        row: dict[str, Any] = {"case": case.name, "input": case.path}
        qc = json.loads((case_dir / "result.json").read_text()).get("qc") or {}
        row.update({"qc_flagged": qc.get("flagged"), "qc_worst_score": qc.get("worst_score"),
                    "qc_worst_reason": qc.get("worst_reason", "")})
        row.update({k: meas.get(k) for k in SCALAR_MEASURES})
        model_meta = meas.get("model") or {}
        row.update({"model_name": model_meta.get("name"), "model_version": model_meta.get("version")})
        atomic_write_json(case_dir / DONE_FILE, row)  # last: marks the case finished
        return {"case": case.name, "ok": True, "row": row}
    except SystemExit as exc:  # argparse
        return {"case": case.name, "ok": False, "reason": f"bad arguments (exit {exc.code})"}
    except Exception as exc:  # one bad case never stops the others
        return {"case": case.name, "ok": False, "reason": _one_line(exc)}


# ----------------------------------------------------------------------------- driver

def _default_workers() -> int:
    return max(1, (os.cpu_count() or 2) // 2)


def _client(scheduler: str | None, workers: int | None):
    """A Dask client of the given scheduler, or of a new local cluster (closed with the client)."""
    import logging

    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise InputError(f"Cannot reach the Dask scheduler at {scheduler} ({exc}). Start one "
                             "(`dask scheduler`) or leave out --scheduler for a local cluster.") from None
    n = workers if workers is not None else _default_workers()
    if n < 1:
        raise InputError(f"--workers must be at least 1 (got {n}).")
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


def sort_by_qc(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cohort rows, highest ``qc_worst_score`` first (rows without one last, in their order)."""
    def key(r: dict[str, Any]) -> tuple[int, float]:
        s = r.get("qc_worst_score")
        return (1, 0.0) if s is None else (0, -float(s))

    return sorted(rows, key=key)


def _write_failures(out: Path, failures: list[dict[str, str]]) -> Path:
    from ..analysis.report import write_cohort_csv

    return write_cohort_csv([{"case": f["case"], "reason": f["reason"]} for f in failures],
                            out / "failures.csv", first=("case", "reason"))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..analysis.report import write_cohort_csv

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out '{out}' exists and is not a folder; choose a folder for the outputs.")
    out.mkdir(parents=True, exist_ok=True)
    cases, failures = discover_cases(list(args.input))
    if not cases and not failures:
        raise InputError("No cases given.")
    todo = [c for c in cases if not is_finished(out / c.name)]
    print(f"batch: {len(cases)} cases, {len(cases) - len(todo)} already finished, {len(todo)} to run"
          + (f", {len(failures)} inputs unusable" if failures else ""), file=sys.stderr)
    from ..model_store import SHIPPED_MODELS  # "default" and "echo" pass as names, files as absolute paths

    model = (args.model if args.model in SHIPPED_MODELS else str(Path(args.model).resolve())) if args.model else None
    if todo:
        from distributed import as_completed

        client, cluster = _client(args.scheduler, args.workers)
        try:
            extra = () if args.tta is None else ("--tta",) if args.tta else ("--no-tta",)
            futures = {client.submit(process_case, c, str(out.resolve()), model, args.device, extra, pure=False): c
                       for c in todo}
            with tqdm(total=len(cases), initial=len(cases) - len(todo), desc="batch", unit="case",
                      file=sys.stderr, dynamic_ncols=True) as bar:
                for fut in as_completed(futures):
                    case = futures[fut]
                    try:
                        res = fut.result()
                    except Exception as exc:  # a worker died (KilledWorker), a lost connection, ...
                        res = {"case": case.name, "ok": False, "reason": _one_line(exc)}
                    if not res["ok"]:
                        failures.append({"case": res["case"], "reason": res["reason"]})
                        _write_failures(out, failures)
                        bar.write(f"batch: {res['case']} failed: {res['reason']}", file=sys.stderr)
                    bar.update(1)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    rows = []
    for c in cases:
        try:
            rows.append(json.loads((out / c.name / DONE_FILE).read_text()))
        except (OSError, ValueError):
            pass
    write_cohort_csv(sort_by_qc(rows), out / "measurements.csv", first=COHORT_FIRST)
    _write_failures(out, failures)
    print(f"batch: {len(rows)} of {len(cases)} cases finished; {len(failures)} failed "
          f"(see {out / 'failures.csv'}); cohort table {out / 'measurements.csv'}", file=sys.stderr)
    return 0 if not failures else 1
