"""`attrib ensemble`."""

from __future__ import annotations

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup

from attrib.store.ensemble_options import EnsembleOptions


def ensemble(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = EnsembleOptions(**values)
    from attrib import log
    from attrib.store.ensemble import merge, trainer_learning_rates

    members = list(options.members)
    weights = trainer_learning_rates(members) if options.lr_weights else options.weights
    if options.lr_weights:
        log.info(f"learning rates of the members: {', '.join(f'{w:g}' for w in weights)}")
    path = merge(options.out, members, weights, options.overwrite)
    log.info(f"wrote {path}: {len(options.members)} members")
    print(path)


ensemble.__doc__ = EnsembleOptions.__doc__
OPTIONS = EnsembleOptions
command = options_command(EnsembleOptions, ensemble, (quiet_extra(),))
