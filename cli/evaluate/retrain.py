"""`attrib evaluate retrain`."""

from __future__ import annotations

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup

from attrib.evaluate.options import RetrainOptions


def retrain(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = RetrainOptions(**values, progress=not quiet)
    from attrib.evaluate.run import run_retrain

    run_retrain(options)


retrain.__doc__ = RetrainOptions.__doc__
OPTIONS = RetrainOptions
command = options_command(RetrainOptions, retrain, (quiet_extra(),))
