"""Shared CLI plumbing: the quiet flag and the output mode for pipes."""

from __future__ import annotations

import sys

from attrib import log


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def setup(quiet: bool) -> None:
    log.set_quiet(quiet)
