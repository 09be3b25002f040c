"""One way to write a file or folder so that readers see the old version or the new one,
never half of one: write under a temporary name in the same folder, fsync, rename over the
target. Temporaries are created exclusively (a planted file or symlink is never followed),
with the umask's permissions, and named `.<name>.<pid>.<random>.part*`: a failure removes
its own, and the next write of the same target removes those whose process has died (a
SIGKILL's litter), never a live writer's."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary file path to write; renamed over `path` when the block succeeds. `suffix`
    keeps an extension that a writer insists on (numpy's .npz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, name = tempfile.mkstemp(prefix=_prefix(path), suffix=f".part{suffix}", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: keep files shareable as usual
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # Some writers (safetensors) replace the file they are given with one of mode 0600:
        # the umask's permissions are set again on what is renamed into place.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary folder to fill; it replaces `path` (and whatever was there) on success."""
    tmp = temporary_dir(path)
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def temporary_dir(path: Path) -> Path:
    """A new, uniquely named folder beside `path` (permissions as the umask says)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".part", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def clean_stale(path: Path) -> None:
    """Remove temporaries of `path` left by processes that no longer run."""
    for leftover in path.parent.glob(f".{path.name}.*.*.part*"):
        pid = leftover.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_or_write_meta(folder: Path, meta: dict, what: str, counts: tuple = ()) -> None:
    """A resumable run's settings in `folder/meta.json`: written by the first run, and a later
    run with other settings is refused (its parts would mix with these). Keys in `counts` are
    how many independent parts the run has: a later run may change them (more extend the
    run, fewer use the first parts), and the latest values are recorded."""
    import json

    from attrib.errors import AttribError

    path = Path(folder) / "meta.json"
    if path.exists():
        from attrib.jsonio import load_json

        old = load_json(path)
        fixed = [k for k in {*old, *meta} if k not in counts]
        changed = sorted(k for k in fixed if old.get(k) != meta.get(k))
        if changed:
            raise AttribError(
                f"{folder} holds {what} made with other settings ({', '.join(changed)}); "
                "remove it or choose another --out"
            )
        if old == meta:
            return
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(meta, indent=2, sort_keys=True))
