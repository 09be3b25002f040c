"""Shared steps of the example tasks: splitting rows into disjoint roles, training a fresh
checkpoint from a config with a recipe, and saving it in Hugging Face format."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from attrib import log
from attrib.atomic import atomic_dir
from attrib.data import DataRef, open_dataset, undecoded
from attrib.distributed import resolve_device
from attrib.tasks import ModelRef, TaskOptions, load_task
from attrib.training.loop import BatchSource, Recipe, train

ROLES = ("train", "learn", "val", "eval")


def split_rows(count: int, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint row sets per role: model training, weight learning, validation, evaluation."""
    order = np.random.default_rng(seed).permutation(count)
    out, start = {}, 0
    for role in ROLES:
        out[role] = np.sort(order[start : start + sizes[role]])
        start += sizes[role]
    if start > count:
        raise ValueError(f"the roles need {start} rows but only {count} exist")
    return out


def trained_task(init_dir: Path, data: Path, recipe: Recipe, device="cpu"):
    """The task of the model saved (untrained) in `init_dir`, trained on `data`."""
    task = load_task(ModelRef(str(init_dir)), None, torch.float32, TaskOptions())
    device = resolve_device(device)
    task.to(device)
    dataset = open_dataset(DataRef(str(data)))
    columns = task.bind_columns(dataset)
    source = BatchSource(task, undecoded(dataset, columns.get("image")), columns, device)
    torch.manual_seed(recipe.seed)
    train(task, source, np.arange(len(dataset)), recipe, recipe.seed, progress=not log.is_quiet())
    return task


def train_checkpoint(init_dir: Path, data: Path, out_dir: Path, recipe: Recipe, device="cpu"):
    """Train the model saved (untrained) in `init_dir` on `data`; save it to `out_dir`."""
    task = trained_task(init_dir, data, recipe, device)
    with atomic_dir(out_dir) as tmp:
        task.model.to("cpu").save_pretrained(tmp)
        task.processor.save_pretrained(tmp)
    return out_dir


def train_pipeline(init_dir: Path, data: Path, out_dir: Path, recipe: Recipe, device="cpu"):
    """Train the UNet of the diffusers pipeline folder `init_dir` on `data`; `out_dir` is that
    folder with the trained UNet (scheduler, text encoder, tokenizer as they were)."""
    task = trained_task(init_dir, data, recipe, device)
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(init_dir, tmp, dirs_exist_ok=True)
        shutil.rmtree(tmp / "unet")
        task.model.to("cpu").save_pretrained(tmp / "unet")
    return out_dir
