"""One rule for every path a command writes (`--out`, `--plot`, ...), checked when the options
object is built, so the CLI and the library refuse a bad path alike and before any work:

- the nearest existing folder above it is a writable folder (not a file, not read-only);
- a file output is not an existing folder, and its name ends in one of the format's suffixes;
- it does not lie inside an attrib folder (a store, a run or ground-truth folder, an index
  cache, a replacement's staging folder): those folders hold only their own command's files.

It also remembers the paths it checked, so that an I/O failure later (a full disk) can be
reported as "could not write PATH" even where the operating system names no file.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from attrib.errors import AttribError

FILE, FOLDER = "file", "folder"
_declared: list[Path] = []  # outputs this process checked, most recent last


def check_output(path: Path, flag: str, kind: str, suffixes: tuple[str, ...] = ()) -> None:
    path = Path(path)
    if kind == FILE and path.is_dir():
        raise AttribError(f"{flag} {path} is a folder; name a file to write")
    if kind == FOLDER and path.exists() and not path.is_dir():
        raise AttribError(f"{flag} {path} is a file; name a folder to write")
    owner = enclosing_attrib_folder(path)
    if owner is not None:
        raise AttribError(
            f"{flag} {path} lies inside {owner}, a folder attrib manages; write it elsewhere"
        )
    if kind == FILE and suffixes and path.suffix.lower() not in suffixes:
        raise AttribError(f"{flag} {path}: the file name must end in {' or '.join(suffixes)}")
    parent = nearest_existing(path.parent)
    if not parent.is_dir():
        raise AttribError(f"{flag} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only(parent) else "permission denied"
        raise AttribError(f"{flag} {path}: cannot write in {parent} ({why})")
    _declared.append(path)


def declare(path: Path) -> None:
    """Name a path this command writes that no option names (a cache), for I/O errors."""
    _declared.append(Path(path))


def nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def enclosing_attrib_folder(path: Path) -> Path | None:
    """The attrib folder strictly above `path`, if any (the path itself may be one: a store
    being resumed or replaced is its command's own product)."""
    here = Path(os.path.abspath(path)).parent
    while True:
        if here.name.startswith(".") and here.name.endswith((".new", ".old", ".part")):
            return here  # a replacement's staging or retired folder, a temporary
        if is_attrib_folder(here):
            return here
        if here == here.parent:
            return None
        here = here.parent


def is_attrib_folder(folder: Path) -> bool:
    """A store (an attrib manifest), a recorded run (`attrib train`'s run.json) or a resumable
    run's folder (perturb's copies, a ground truth's parts: a meta.json with their keys).
    Other folders that merely hold a file of that name (a web app's manifest.json) are not
    attrib's."""
    from attrib.jsonio import load_json_or_none

    # upward: what makes a folder a store is the store's own manifest check; outputs sits
    # below store because every stage (store's writers too) checks its --out through it.
    from attrib.store.replace import is_attrib_store  # upward

    if (folder / "manifest.json").is_file() and is_attrib_store(folder):
        return True
    if (folder / "run.json").is_file():
        run = load_json_or_none(folder / "run.json")
        if isinstance(run, dict) and str(run.get("format", "")).startswith("attrib-run/"):
            return True
    meta = load_json_or_none(folder / "meta.json") if (folder / "meta.json").is_file() else None
    return isinstance(meta, dict) and ("subsets" in meta or "train" in meta)


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


IO_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "input/output error",
    errno.EFBIG: "file too large for the file system",
}
WRITE_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG)


def io_error_message(exc: BaseException) -> str | None:
    """One line for an I/O failure while writing (a full disk, a read-only or vanished
    device), or None for other errors. Naming the output, the cause and the free space."""
    code = getattr(exc, "errno", None)
    if code is None:
        code = _errno_in_text(str(exc))  # safetensors and PIL wrap the OS error in text
    if code not in IO_ERRORS:
        return None
    filename = getattr(exc, "filename", None)
    target = Path(filename) if filename else (_declared[-1] if _declared else None)
    where = f" {target}" if target is not None else ""
    verb = "could not write" if code in WRITE_ERRORS else "could not access"
    message = f"{verb}{where}: {IO_ERRORS[code]}"
    if code in (errno.ENOSPC, errno.EDQUOT) and target is not None:
        try:
            free = shutil.disk_usage(nearest_existing(target)).free / 2**20
            message += f" ({free:.1f} MiB free there)"
        except OSError:
            pass
    if code in WRITE_ERRORS:
        message += "; free space or choose another output, then rerun (finished parts are kept)"
    return message


def _errno_in_text(text: str) -> int | None:
    import re

    match = re.search(r"(?:code: |Errno )(\d+)", text)
    if match:
        return int(match.group(1))
    if "No space left" in text or "StorageFull" in text:
        return errno.ENOSPC
    return None
