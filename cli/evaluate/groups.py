"""`attrib evaluate groups`."""

from __future__ import annotations

from attrib_cli.evaluate.table import rows_command

from attrib.evaluate.options import GroupsOptions

OPTIONS = GroupsOptions
COLUMNS = [("group", "group"), ("lds", "LDS %"), ("ci", "± 95% CI")]
command = rows_command(
    OPTIONS, "run_groups", COLUMNS, lambda options: f"per-group LDS ({options.method})"
)
