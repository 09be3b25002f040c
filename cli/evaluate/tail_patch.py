"""`attrib evaluate tail-patch`."""

from __future__ import annotations

from attrib_cli.build import format_extra, options_command, quiet_extra
from attrib_cli.common import setup
from attrib_cli.output import FORMATS, choose_format, print_rows

from attrib.evaluate.options import TailPatchOptions

COLUMNS = [
    ("method", "method"),
    ("weights", "weights"),
    ("tail_patch", "increase %"),
    ("ci", "± 95% CI"),
    ("k", "k"),
    ("queries", "queries"),
]


def tail_patch(values: dict, quiet: bool, fmt: str | None) -> None:
    setup(quiet)
    fmt = choose_format(fmt)
    options = TailPatchOptions(**values)
    from attrib.evaluate.run import run_tail_patch

    print_rows(run_tail_patch(options), fmt, COLUMNS, "tail-patch")


tail_patch.__doc__ = TailPatchOptions.__doc__
command = options_command(TailPatchOptions, tail_patch, (quiet_extra(), format_extra(FORMATS)))
