"""`attrib evaluate recall`."""

from __future__ import annotations

from attrib_cli.build import format_extra, options_command, quiet_extra
from attrib_cli.common import setup
from attrib_cli.output import FORMATS, choose_format, print_rows

from attrib.evaluate.options import RecallOptions

COLUMNS = [
    ("method", "method"),
    ("weights", "weights"),
    ("k", "k"),
    ("recall", "recall@k"),
    ("ci", "± 95% CI"),
    ("queries", "queries"),
]


def recall(values: dict, quiet: bool, fmt: str | None) -> None:
    setup(quiet)
    fmt = choose_format(fmt)
    options = RecallOptions(**values)
    from attrib.evaluate.run import run_recall

    print_rows(run_recall(options), fmt, COLUMNS, "recall@k")


recall.__doc__ = RecallOptions.__doc__
command = options_command(RecallOptions, recall, (quiet_extra(), format_extra(FORMATS)))
