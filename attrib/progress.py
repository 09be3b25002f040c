"""A rich progress bar with examples/s on stderr (silent with --quiet and on ranks > 0)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from attrib import log


class RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            text = f"- {self.unit}/s"
        elif speed < 1:  # slow steps (retraining a model): seconds per step reads better
            text = f"{1 / speed:,.1f} s/{self.unit.removesuffix('s')}"
        else:
            text = f"{speed:,.1f} {self.unit}/s"
        return Text(text, style="progress.data.speed")


def progress_bar(enabled: bool, unit: str = "examples") -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=log.console(),
        disable=not enabled or log.is_quiet(),
    )
