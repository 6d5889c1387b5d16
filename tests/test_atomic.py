"""Atomic writes: umask respected, data flushed before the rename, nothing half-written left behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from napari_cardiac_motion import atomic
from napari_cardiac_motion.atomic import atomic_write, atomic_write_json, atomic_write_text, current_umask
from napari_cardiac_motion.io import write_nifti_flow, write_nifti_labels

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


class _umask:
    def __init__(self, mask: int):
        self.mask = mask

    def __enter__(self):
        self.old = os.umask(self.mask)

    def __exit__(self, *exc):
        os.umask(self.old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@posix_only
def test_current_umask_reads_the_process_umask():
    with _umask(0o027):
        assert current_umask() == 0o027
    with _umask(0o077):
        assert current_umask() == 0o077


@posix_only
@pytest.mark.parametrize("mask, expected", [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_new_files_get_the_mode_open_would_give(tmp_path, mask, expected):
    with _umask(mask):
        text = atomic_write_text(tmp_path / "a" / "r.json", "{}")
        js = atomic_write_json(tmp_path / "j.json", {"a": 1})
        lab = write_nifti_labels(tmp_path / "seg.nii.gz", np.zeros((2, 2, 16, 16), np.uint8))
        with open(tmp_path / "plain.txt", "w") as fh:  # what a normal open() gives
            fh.write("x")
    assert _mode(tmp_path / "plain.txt") == expected
    for p in (text, js, lab):
        assert _mode(p) == expected, (p.name, oct(_mode(p)))


@posix_only
def test_replacing_a_file_keeps_its_mode(tmp_path):
    p = tmp_path / "report.json"
    p.write_text("old")
    os.chmod(p, 0o640)
    with _umask(0o022):
        atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert _mode(p) == 0o640


def test_fsync_file_before_rename_and_folder_after(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else "?"))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "flow.nii.gz"
    write_nifti_flow(target, np.zeros((2, 1, 16, 16, 2), np.float32))
    kinds = [k for k, _ in events]
    assert "replace" in kinds
    i = kinds.index("replace")
    assert "fsync" in kinds[:i], "the temporary file must be flushed before it is renamed"
    if os.path.exists("/proc/self/fd"):
        assert events[i - 1][1].startswith(str(tmp_path / ".flow.nii.gz."))  # the temp file was synced
        if os.name == "posix":
            assert ("fsync", str(tmp_path)) in events[i + 1:], "the folder entry is flushed after the rename"


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "result.json"
    atomic_write_json(p, {"v": 1})

    def boom(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, boom)
    with pytest.raises(TypeError):
        atomic_write_json(p, {"bad": object()})  # not serialisable: nothing is touched
    assert json.loads(p.read_text()) == {"v": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["result.json"]


def test_json_helper_round_trip(tmp_path):
    obj = {"ed_frame": 3, "values": [1.5, 2.0], "name": "ü"}
    p = atomic_write_json(tmp_path / "deep" / "x.json", obj)
    assert json.loads(p.read_text(encoding="utf-8")) == obj
    assert p.read_text().endswith("\n")
