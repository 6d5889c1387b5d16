"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A crash, a power cut or a full disk never leaves a half-written labels file, model, sidecar or report
under its final name: the data is flushed to disk (``fsync``) before the rename, and the folder entry
after it (where the platform supports it).

Permissions: a new file gets the mode a plain ``open(path, "w")`` would give it (``0666`` minus the
process umask, so patient-derived files stay private under ``umask 077``); a file that is replaced
keeps its current mode, as it would when rewritten in place.

Every output of the package goes through :func:`atomic_write` (binary writers such as nibabel or
torch) or :func:`atomic_write_text` / :func:`atomic_write_json` (text and JSON).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read from ``/proc`` on Linux, else by setting and restoring it)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _target_mode(path: Path) -> int:
    """Mode for the file that will appear at ``path`` (see module docstring)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Flush a folder entry (the rename) to disk; silently skipped where folders cannot be opened."""
    if os.name == "nt":  # Windows cannot open a directory for fsync; NTFS journals the rename
        return
    try:
        fd = os.open(str(folder), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (e.g. certain network mounts) refuse fsync on folders
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)``, flush it to disk and rename it to ``path`` (parents created).

    ``suffix`` is the temporary file's ending (libraries such as nibabel choose the format from it).
    The temporary file is ``.<name>.<random><suffix>`` in the target's folder and is removed if
    ``write`` fails; the previous content of ``path``, if any, is then left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _target_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # mkstemp creates 0600; give the mode open() would have given
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    data = text.encode(encoding)
    return atomic_write_bytes(path, data)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, **dumps_kwargs: Any) -> Path:
    """Serialise ``obj`` with :func:`json.dumps` (``indent``, ``dumps_kwargs``) and write it atomically.

    The JSON text is built before anything is written, so an object that cannot be serialised
    raises without touching an existing file.
    """
    text = json.dumps(obj, indent=indent, **dumps_kwargs)
    return atomic_write_text(path, text + "\n")
