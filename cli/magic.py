"""`attrib magic`."""

from __future__ import annotations

from attrib_cli.build import format_extra, options_command, quiet_extra
from attrib_cli.common import setup
from attrib_cli.output import FORMATS, choose_format, print_records

from attrib.training.magic_options import MagicOptions


def magic(values: dict, quiet: bool, fmt: str | None) -> None:
    setup(quiet)
    fmt = choose_format(fmt)
    options = MagicOptions(**values, progress=not quiet)
    from attrib import log
    from attrib.training.magic_run import run_magic

    records, smooth = run_magic(options)
    if records is None:  # another process of the launch, or blocks still missing
        return
    if smooth is not None:
        say = log.info if smooth["correlation"] >= 0.8 else log.warn
        say(
            f"smoothness: {smooth['checks']} replays without {smooth['drop']:.0%} of the rows; "
            f"predicted vs actual output change: correlation {smooth['correlation']:.3f}, "
            f"slope {smooth['slope']:.2f}: {smooth['verdict']}"
        )
    print_records(records, fmt)


magic.__doc__ = MagicOptions.__doc__
OPTIONS = MagicOptions
command = options_command(MagicOptions, magic, (quiet_extra(), format_extra(FORMATS)))
