"""Progress on stderr (silent with --quiet and on ranks > 0): a rich bar on a terminal; on a
pipe or in a log file, where a bar draws nothing until it ends, a plain line every
`ATTRIB_PROGRESS_SECONDS` (default 20) while a phase runs, so a long retrain or magic under
nohup or CI never looks hung (a phase shorter than that prints nothing)."""

from __future__ import annotations

import os
import threading
import time

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


def progress_bar(enabled: bool, unit: str = "examples") -> Progress | LineProgress:
    if enabled and not log.is_quiet() and not log.console().is_terminal:
        return LineProgress(unit, float(os.environ.get("ATTRIB_PROGRESS_SECONDS", "20")))
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


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class LineProgress:
    """The progress bar's interface, as plain lines: every `every` seconds (a timer, so one
    slow step cannot silence it) each unfinished phase says where it is, with its rate and the
    time left; a phase that printed anything says when it is done."""

    def __init__(self, unit: str, every: float):
        self.unit, self.every = unit, max(every, 0.1)
        self.tasks: list[dict] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> LineProgress:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        if exc[0] is None:
            for task in self.tasks:
                if task["said"] and task["done"] < task["total"]:
                    task["done"] = task["total"]
                if task["said"]:
                    self._say(task, finished=True)

    def add_task(self, description: str, total: int, completed: int = 0) -> int:
        with self.lock:
            self.tasks.append(
                {"name": description, "total": total, "done": completed, "first": completed,
                 "start": time.monotonic(), "said": False}
            )  # fmt: skip
        return len(self.tasks) - 1

    def advance(self, task: int, advance: float = 1) -> None:
        with self.lock:
            self.tasks[task]["done"] += advance

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            with self.lock:
                for task in self.tasks:
                    if task["done"] < task["total"]:
                        self._say(task)

    def _say(self, task: dict, finished: bool = False) -> None:
        task["said"] = True
        elapsed = time.monotonic() - task["start"]
        done, total, unit = task["done"], task["total"], self.unit
        line = f"{task['name']}: {done:,.0f}/{total:,.0f} {unit}"
        if finished:
            log.info(f"{line} in {clock(elapsed)}")
            return
        made = done - task["first"]
        if made > 0:
            per = elapsed / made
            rate = (
                f"{per:,.1f} s/{unit.removesuffix('s')}" if per >= 1 else f"{1 / per:,.1f} {unit}/s"
            )
            line += f", {rate}, {clock(elapsed)} elapsed, ~{clock(per * (total - done))} left"
        else:
            line += f", {clock(elapsed)} elapsed, the first not done yet"
        log.info(line)
