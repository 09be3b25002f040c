"""`attrib featurize`."""

from __future__ import annotations

import sys

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup

from attrib.featurize.options import FeaturizeOptions

HELP = """Compute per-example gradient features of a model on a dataset and write them to a store.

The model and the dataset are hub ids or local paths. Each selected module's per-example
gradient is randomly projected (seeded, so every run and rank projects alike) and stored as
one Arrow column per module. A killed run resumes when started again with the same command.

Several processes: [bold]accelerate launch --num_processes N $(which attrib) featurize ...[/]
(on a machine without GPUs add [bold]--multi_gpu[/] so accelerate starts N CPU processes), or
[bold]torchrun --nproc_per_node N $(which attrib) featurize ...[/].
"""


def featurize(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = FeaturizeOptions(**values, progress=not quiet, command=tuple(sys.argv))
    from attrib.featurize.run import run_featurize

    run_featurize(options)


featurize.__doc__ = HELP
OPTIONS = FeaturizeOptions
command = options_command(FeaturizeOptions, featurize, (quiet_extra(),))
