"""The `attrib` command line (installed as the `attrib_cli` package)."""

from __future__ import annotations

INTERRUPTED = "interrupted; run the same command again to resume (finished work is kept)"


_STOPPED: list[bool] = []  # set by the SIGTERM handler: click reports any interrupt as 130


def _stopped(signum, frame) -> None:
    """SIGTERM under torchrun/accelerate: the launcher ends the others when one process fails
    (or the scheduler cancels the job). An interrupt, told apart from Ctrl-C by the flag."""
    _STOPPED.append(True)
    raise KeyboardInterrupt


def interrupted_message() -> tuple[str, int]:
    """(message, exit code) of an interrupt: the launcher's SIGTERM, or Ctrl-C."""
    return (stopped_message(), 143) if _STOPPED else (INTERRUPTED, 130)


def stopped_message() -> str:
    import os

    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    return (
        f"process {rank} of {world} was stopped by its launcher (another process failed or the "
        "job was cancelled; the launcher's summary names it); run the same command again to "
        "resume (finished work is kept)"
    )


def main() -> None:
    """The console script: Ctrl-C is one line even while the CLI is still importing."""
    import os
    import signal
    import sys

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under a launcher: its SIGTERM, one line
        signal.signal(signal.SIGTERM, _stopped)

    try:
        from attrib_cli.app import main as run
    except KeyboardInterrupt:
        message, code = interrupted_message()
        sys.stderr.write(f"error: {message}\n")
        sys.exit(code)
    try:
        run()
    except SystemExit as exc:
        sharding = sys.modules.get("attrib.sharding")
        if sharding is not None and sharding.SHARDED_HERE:
            _exit_now(exc.code)  # everything is written: skip the teardown (sharding.py)
        raise


def _exit_now(code) -> None:
    """End the process at once with `code` (as sys.exit reads it), its output flushed."""
    import os
    import sys

    if isinstance(code, str):
        sys.stderr.write(code + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
