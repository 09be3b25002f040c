"""`attrib perturb`."""

from __future__ import annotations

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup

from attrib.perturb.options import PerturbOptions


def perturb(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = PerturbOptions(**values, progress=not quiet)
    from attrib import log
    from attrib.perturb.run import run_perturb

    for path in run_perturb(options):
        log.info(f"wrote {path}")
        print(path)  # the stores, one per line, for a pipe


perturb.__doc__ = PerturbOptions.__doc__
OPTIONS = PerturbOptions
command = options_command(PerturbOptions, perturb, (quiet_extra(),))
