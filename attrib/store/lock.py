"""One writer or many readers per store: an advisory `flock` on `STORE/.lock`.

A writer (featurize) holds it exclusively for its whole run and writes its process id into
the file; readers (score, learn-weights, evaluate, ...) hold it shared while they read. A
second writer, or a reader of a store being written, or a writer replacing a store that is
being read, gets a one-line error instead of a silently mixed result. Locks are released when
the process ends, however it ends, so a killed run never leaves a store locked.
A store on a read-only file system cannot be locked; readers then go on without one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from attrib.errors import AttribError

LOCK_FILE = ".lock"
_held: dict[str, tuple[int, bool]] = {}  # folder -> (file descriptor, exclusive), per process


def _holder(path: Path) -> str:
    """Who holds the lock: the writer's process id when a live writer left it there."""
    from attrib.atomic import alive

    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() and alive(int(pid)) else "another process"


def lock_store(folder: Path, exclusive: bool) -> None:
    """Hold the store's lock for the rest of this process (or until `unlock_store`). One lock
    per folder and process: asking for exclusive while holding shared converts it."""
    folder = Path(folder).resolve()
    path = folder / LOCK_FILE
    fd, held_exclusive = _held.get(str(folder), (None, False))
    if fd is not None and (held_exclusive or not exclusive):
        return
    if fd is None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            if exclusive:
                raise AttribError(f"cannot lock {folder} for writing ({exc})") from None
            return  # a read-only store: nobody can write it while we read
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        _held.pop(str(folder), None)
        if exclusive:
            raise AttribError(
                f"{folder} is in use by {_holder(path)} (being written or read); "
                "wait for it to finish, or write to another --out"
            ) from None
        raise AttribError(
            f"{folder} is being written by {_holder(path)}; wait for it to finish"
        ) from None
    if exclusive:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held[str(folder)] = (fd, exclusive)


def probe_unlocked(folder: Path) -> None:
    """Raise AttribError, naming the writer, when another process holds `folder`'s write lock;
    return at once otherwise (a shared probe: processes of one run may probe together)."""
    folder = Path(folder).resolve()
    if str(folder) in _held:
        return
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody ever locked it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise AttribError(
            f"{folder} is being written by {_holder(folder / LOCK_FILE)}; wait for it to "
            "finish, or write to another --out"
        ) from None
    finally:
        os.close(fd)


def unlock_store(folder: Path) -> None:
    fd, exclusive = _held.pop(str(Path(folder).resolve()), (None, False))
    if fd is not None:
        if exclusive:
            os.ftruncate(fd, 0)
        os.close(fd)
