"""A rich progress bar with examples/s on stderr (silent with --quiet and on ranks > 0)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from attrib import log


class RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or average_speed(task)
        if not speed:
            text = f"- {self.unit}/s"
        elif speed < 1:  # slow steps (retraining a model): seconds per step reads better
            text = f"{1 / speed:,.1f} s/{self.unit.removesuffix('s')}"
        else:
            text = f"{speed:,.1f} {self.unit}/s"
        return Text(text, style="progress.data.speed")


def average_speed(task) -> float | None:
    """Steps per second over the whole run. rich's own estimate only looks at the last 30 s,
    so for steps slower than that (retraining a model) it never shows a rate or time left."""
    if task.completed and task.elapsed:
        return task.completed / task.elapsed
    return task.speed


class RemainingColumn(ProgressColumn):
    """Time left from the average speed, shown from the first completed step on."""

    def render(self, task) -> Text:
        speed = average_speed(task)
        if task.finished or not speed or task.total is None:
            return Text("-:--:--" if not task.finished else "0:00:00", style="progress.remaining")
        left = int(round((task.total - task.completed) / speed))
        return Text(
            f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d} left", style="progress.remaining"
        )


def progress_bar(enabled: bool, unit: str = "examples") -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        RemainingColumn(),
        console=log.console(),
        disable=not enabled or log.is_quiet(),
    )
