"""`attrib score`."""

from __future__ import annotations

import sys

from attrib_cli.build import format_extra, options_command, quiet_extra
from attrib_cli.common import setup
from attrib_cli.output import FORMATS, choose_format, print_records

from attrib.score.options import ScoreOptions


def stdin_expanded(values: tuple[str, ...]) -> tuple[str, ...]:
    """`--query -` reads one query per line from stdin (UTF-8; a bad line is named)."""
    from attrib.score.queries import read_query_lines

    out: list[str] = []
    for value in values:
        if value == "-":
            raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else None
            if raw is None:  # a text stream put in stdin's place (tests, notebooks)
                raw = sys.stdin.read().encode("utf-8", "surrogateescape")
            out += read_query_lines(raw, "stdin")
        else:
            out.append(value)
    return tuple(out)


def score(values: dict, quiet: bool, fmt: str | None) -> None:
    setup(quiet)
    fmt = choose_format(fmt)
    values["query"] = stdin_expanded(values["query"])
    options = ScoreOptions(**values, progress=not quiet)
    from attrib import log
    from attrib.score.run import run_score

    records = run_score(options)
    if log.is_main_process():  # under a launcher rank 0 prints the merged results
        print_records(records, fmt)


score.__doc__ = ScoreOptions.__doc__
OPTIONS = ScoreOptions
command = options_command(ScoreOptions, score, (quiet_extra(), format_extra(FORMATS)))
