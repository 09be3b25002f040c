"""`attrib ensemble`."""

from __future__ import annotations

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup

from attrib.store.ensemble_options import EnsembleOptions, run_ensemble


def ensemble(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = EnsembleOptions(**values)
    path = run_ensemble(options)
    print(path)


ensemble.__doc__ = EnsembleOptions.__doc__
OPTIONS = EnsembleOptions
command = options_command(EnsembleOptions, ensemble, (quiet_extra(),))
