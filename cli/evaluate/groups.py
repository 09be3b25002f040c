"""`attrib evaluate groups`."""

from __future__ import annotations

from attrib_cli.build import format_extra, options_command, quiet_extra
from attrib_cli.common import setup
from attrib_cli.output import FORMATS, choose_format, print_rows

from attrib.evaluate.options import GroupsOptions

COLUMNS = [("group", "group"), ("lds", "LDS %"), ("ci", "± 95% CI")]


def groups(values: dict, quiet: bool, fmt: str | None) -> None:
    setup(quiet)
    fmt = choose_format(fmt)
    options = GroupsOptions(**values)
    from attrib.evaluate.run import run_groups

    print_rows(run_groups(options), fmt, COLUMNS, f"per-group LDS ({options.method})")


groups.__doc__ = GroupsOptions.__doc__
command = options_command(GroupsOptions, groups, (quiet_extra(), format_extra(FORMATS)))
