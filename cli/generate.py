"""`attrib generate`."""

from __future__ import annotations

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup

from attrib.generate.options import GenerateOptions


def generate(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = GenerateOptions(**values)
    from attrib.generate.run import run_generate

    run_generate(options)


generate.__doc__ = GenerateOptions.__doc__
OPTIONS = GenerateOptions
command = options_command(GenerateOptions, generate, (quiet_extra(),))
