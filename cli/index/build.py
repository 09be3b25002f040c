"""`attrib index build`."""

from __future__ import annotations

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup

from attrib.index.options import IndexOptions


def build(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = IndexOptions(**values)
    from attrib.index.build import build_index

    print(build_index(options))


build.__doc__ = IndexOptions.__doc__
OPTIONS = IndexOptions
command = options_command(IndexOptions, build, (quiet_extra(),))
