"""The task registry: names to modules, read without importing torch or transformers (the
CLI lists `--task` choices at start-up); `task_class` imports a task's module when used."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from attrib.errors import AttribError

if TYPE_CHECKING:
    from attrib.tasks.base import Task

# Detection order: a diffusers pipeline first (it has no transformers config of its own).
TASK_MODULES = {
    "diffusion": "attrib.tasks.diffusion",
    "causal-lm": "attrib.tasks.causal_lm",
    "image-classification": "attrib.tasks.image_classifier",
}


# Each task's output functions, readable without importing it (`attrib inspect` lists the
# methods a store serves from them); tests/test_task_contract.py holds them to the classes.
TASK_OUTPUTS = {
    "diffusion": ("loss", "square", "das", "journey"),
    "causal-lm": ("loss",),
    "image-classification": ("loss", "margin"),
}


def task_names() -> tuple[str, ...]:
    return tuple(TASK_MODULES)


def task_class(name: str) -> type[Task]:
    if name not in TASK_MODULES:
        raise AttribError(f"unknown --task {name!r}; choose one of {', '.join(TASK_MODULES)}")
    return import_module(TASK_MODULES[name]).TASK
