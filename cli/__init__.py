"""The `attrib` command line (installed as the `attrib_cli` package)."""

from __future__ import annotations

INTERRUPTED = "interrupted; run the same command again to resume (finished work is kept)"


def main() -> None:
    """The console script: Ctrl-C is one line even while the CLI is still importing."""
    import sys

    try:
        from attrib_cli.app import main as run
    except KeyboardInterrupt:
        sys.stderr.write(f"error: {INTERRUPTED}\n")
        sys.exit(130)
    run()
