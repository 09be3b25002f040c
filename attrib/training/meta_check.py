"""The structure of a run's run.json, checked before anything in it is used: a damaged or
planted record fails as one line naming the first bad key, never as a KeyError or TypeError
deep inside a replay, and a value of the wrong kind (`"seed": "x"`, `"complete": "no"`) is
never taken for a right one."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from attrib.errors import AttribError

_SHA = re.compile(r"^[0-9a-f]{64}$")
_RUN_FILE = re.compile(r"^(batches\.npz|snapshots/step-\d{8}\.safetensors|model/[^\0]+)$")
TRAIN_DTYPES = ("float32", "float64")


def damaged(path: Path, what: str) -> AttribError:
    return AttribError(
        f"{path} is a damaged run record ({what}); run the `attrib train` command that made it "
        "again to repair it"
    )


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_meta(path: Path, meta: dict) -> None:
    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise damaged(path, f"run.json: `{key}` {what}")

    for key in ("model", "data", "recipe", "columns", "task_options"):
        need(key, isinstance(meta.get(key), dict), "is missing or not an object")
    for key in ("steps", "rows"):
        need(key, _whole(meta.get(key)) and meta[key] >= 1, "is not a positive whole number")
    need("task", isinstance(meta.get("task"), str), "is not a task name")
    need("dtype", meta.get("dtype") in TRAIN_DTYPES, f"is not one of {', '.join(TRAIN_DTYPES)}")
    need("complete", isinstance(meta.get("complete", False), bool), "is not true or false")
    trainable = meta.get("trainable")
    need("trainable", isinstance(trainable, list) and trainable, "is not a list of parameters")
    need("trainable", all(isinstance(n, str) for n in trainable), "holds a non-name")
    snapshots = meta.get("snapshots")
    ordered = (
        isinstance(snapshots, list)
        and len(snapshots) >= 2
        and all(_whole(s) for s in snapshots)
        and snapshots[0] == 0
        and snapshots[-1] == meta["steps"]
        and all(a < b for a, b in zip(snapshots, snapshots[1:]))
    )
    need("snapshots", ordered, "is not an increasing list of steps from 0 to `steps`")
    need("model", isinstance(meta["model"].get("source"), str), "has no `source`")
    need("model", isinstance(meta["model"].get("fingerprint"), str), "has no `fingerprint`")
    need("data", isinstance(meta["data"].get("source"), str), "has no `source`")
    need("data", isinstance(meta["data"].get("split"), str), "has no `split`")
    need("columns", all(isinstance(v, str) for v in meta["columns"].values()), "holds a non-name")
    _check_recipe(path, meta["recipe"])
    files = meta.get("files")
    if files is not None:
        need("files", isinstance(files, dict), "is not an object")
        for name, entry in files.items():
            plain = bool(_RUN_FILE.match(name)) and ".." not in name
            need("files", plain, f"lists {name!r}, not a file of a run")
            need("files", _is_entry(entry), f"entry of {name} is not a size and a sha256")


def _is_entry(entry) -> bool:
    return (
        isinstance(entry, dict)
        and _whole(entry.get("size"))
        and entry["size"] >= 0
        and isinstance(entry.get("sha256"), str)
        and bool(_SHA.match(entry["sha256"]))
    )


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_recipe(path: Path, recipe: dict) -> None:
    from attrib.training.recipe import Recipe

    known = {f.name: f for f in fields(Recipe)}
    unknown = sorted(set(recipe) - set(known))
    if unknown:
        raise damaged(path, f"run.json: the recipe has unknown keys {unknown}")
    kinds = {"int": _whole, "float": _number, "str": lambda v: isinstance(v, str)}
    for name, value in recipe.items():
        kind = known[name].type if isinstance(known[name].type, str) else known[name].type.__name__
        if not kinds.get(kind, lambda v: True)(value):
            raise damaged(path, f"run.json: recipe `{name}` is {value!r}, not of type {kind}")
    if recipe.get("seed", -1) < 0:
        raise damaged(path, "run.json: the recipe has no seed of 0 or more")
    try:
        Recipe(**recipe)
    except AttribError as exc:
        raise damaged(path, f"run.json: {exc}") from None
