"""`attrib evaluate lds`."""

from __future__ import annotations

from attrib_cli.build import format_extra, options_command, quiet_extra
from attrib_cli.common import setup
from attrib_cli.output import FORMATS, choose_format, print_rows

from attrib.evaluate.options import LdsOptions

COLUMNS = [
    ("method", "method"),
    ("weights", "weights"),
    ("lds", "LDS %"),
    ("ci", "± 95% CI"),
    ("subsets", "subsets"),
    ("queries", "queries"),
]


def lds(values: dict, quiet: bool, fmt: str | None) -> None:
    setup(quiet)
    fmt = choose_format(fmt)
    options = LdsOptions(**values)
    from attrib.evaluate.run import run_lds

    print_rows(run_lds(options), fmt, COLUMNS, "LDS")


lds.__doc__ = LdsOptions.__doc__
command = options_command(LdsOptions, lds, (quiet_extra(), format_extra(FORMATS)))
