"""Shared CLI plumbing: output mode for pipes, quiet flag, error handling."""

from __future__ import annotations

import json
import sys

import typer

from attrib import log

QUIET = typer.Option(False, "--quiet", "-q", help="No progress or logs on stderr.")


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def emit_json(record: dict) -> None:
    """One JSON record per line on stdout, for shell pipelines."""
    sys.stdout.write(json.dumps(record) + "\n")


def setup(quiet: bool) -> None:
    log.set_quiet(quiet)
