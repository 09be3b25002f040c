"""Model families: one module each, registered here by name.

The registry names the module of each task so that listing tasks (the CLI's `--task`
choices) imports neither torch nor transformers; `task_class` imports one when it is used.
Each task module exposes its class as `TASK`. Detection asks every task's `matches`.
"""

from __future__ import annotations

from attrib.tasks.options import ModelRef, TaskOptions
from attrib.tasks.registry import TASK_MODULES, task_class, task_names

__all__ = [
    "TASK_MODULES",
    "ModelRef",
    "TaskOptions",
    "detect_task",
    "load_task",
    "load_task_from_settings",
    "task_class",
    "task_names",
]


def detect_task(ref):
    from attrib.tasks.loading import detect_task as detect

    return detect(ref)


def load_task(ref, task, dtype, options):
    from attrib.tasks.loading import load_task as load

    return load(ref, task, dtype, options)


def load_task_from_settings(settings: dict, trust_remote_code: bool = False):
    from attrib.tasks.loading import load_task_from_settings as load

    return load(settings, trust_remote_code)
