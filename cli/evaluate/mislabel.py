"""`attrib evaluate mislabel`."""

from __future__ import annotations

from attrib_cli.build import format_extra, options_command, quiet_extra
from attrib_cli.common import setup
from attrib_cli.output import FORMATS, choose_format, print_rows

from attrib.evaluate.options import MislabelOptions

COLUMNS = [
    ("method", "method"),
    ("weights", "weights"),
    ("auc", "AUC"),
    ("norm_k", "norm k"),
    ("examples", "examples"),
    ("mislabeled", "mislabeled"),
]


def mislabel(values: dict, quiet: bool, fmt: str | None) -> None:
    setup(quiet)
    fmt = choose_format(fmt)
    options = MislabelOptions(**values)
    from attrib.evaluate.run import run_mislabel

    print_rows(run_mislabel(options), fmt, COLUMNS, "mislabeled-data detection")


mislabel.__doc__ = MislabelOptions.__doc__
command = options_command(MislabelOptions, mislabel, (quiet_extra(), format_extra(FORMATS)))
