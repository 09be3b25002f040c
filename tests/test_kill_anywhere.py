"""Kill anywhere: every command that writes is started as a real process, SIGKILLed (its whole
process group) at a random moment, and run again to completion; the result must equal an
uninterrupted run's, with no temporaries, staging folders or rank reports left behind.

A few kills per command keep the suite fast; `ATTRIB_KILLS=20` makes the long run (and
`ATTRIB_KILL_TABLE=path` writes its table: command, kills, identical resumes, litter)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

ATTRIB = str(Path(sys.executable).parent / "attrib")
KILLS = int(os.environ.get("ATTRIB_KILLS", "1"))
STORE_ARGS = ["--proj-dim", "4", "--shard-size", "6", "--batch-size", "6", "--device", "cpu"]
LITTER = re.compile(r"\.part($|\.)|^\..*\.(new|old)$|\.rank-")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, resnet_dir, image_data, ddpm, gpt2_dir, text_data):
    root = tmp_path_factory.mktemp("kills")
    common = ["--model", resnet_dir, "--data", image_data, *STORE_ARGS, "-q"]
    for name, extra in (("train", []), ("q", ["--max-examples", "4"])):
        code, _, err = run_cli("featurize", *common, "--out", root / name, *extra)
        assert code == 0, err
    shutil.copytree(root / "train", root / "train2")  # a second member (same model: allowed)
    code, _, err = run_cli("train", *_train_args(resnet_dir, image_data, root / "run"))
    assert code == 0, err
    for name, extra in (("run-train", ["--proj-dim", "4"]), ("run-q", ["--max-examples", "4"])):
        model = root / "run" / "model"
        code, _, err = run_cli("featurize", "--model", model, "--data", image_data, "--out",
                               root / name, "--device", "cpu", "-q", *extra)  # fmt: skip
        assert code == 0, err
    return {"root": root, "model": resnet_dir, "data": image_data, "pipe": ddpm[0],
            "gpt2": gpt2_dir, "text": text_data}  # fmt: skip


def _train_args(model, data, out) -> list:
    return ["--model", model, "--data", data, "--out", out, "--epochs", "3", "--batch-size", "4",
            "--device", "cpu", "-q"]  # fmt: skip


def _run_products(run: Path) -> dict:
    """A recorded run's files, and its record without the wall time and environment."""
    meta = json.loads((run / "run.json").read_text())
    out = {"meta": json.dumps({k: v for k, v in meta.items() if k not in ("seconds",)})}
    for path in sorted(run.rglob("*")):
        if path.is_file() and path.name not in (".lock", "run.json"):
            out[str(path.relative_to(run))] = path.read_bytes()
    return out


def _store_products(store: Path) -> dict:
    manifest = json.loads((store / "manifest.json").read_text())
    out = {"settings": json.dumps(manifest["settings"], sort_keys=True)}
    out["complete"] = manifest["complete"]
    for path in sorted(store.rglob("*.arrow")) + sorted(store.rglob("factors/*")):
        out[str(path.relative_to(store))] = path.read_bytes()
    return out


def _files(folder: Path, pattern: str = "*") -> dict:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob(pattern))
        if p.is_file() and p.name != ".lock" and p.suffix != ".json"
    }


# Each case: (argv in work folder W given the inputs, setup of W, products to compare).
def _featurize(i, w, *extra):
    return ["featurize", "--model", i["model"], "--data", i["data"], "--out", w / "s", *STORE_ARGS,
            *extra]  # fmt: skip


def _copy_store(i, w, name="train", to="s"):
    shutil.copytree(i["root"] / name, w / to, ignore=shutil.ignore_patterns(".lock", "cache"))


TRAINER_RUNS = Path(__file__).parent / "trainer_runs.py"


def _ensemble_products(store: Path, work: Path) -> dict:
    """An ensemble store's shards and settings, its members' paths relative to `work`."""
    products = _store_products(store)
    products["settings"] = products["settings"].replace(str(work), "WORK")
    return products


def _copy_run(i, w):
    shutil.copytree(i["root"] / "run", w / "run", ignore=shutil.ignore_patterns(".lock", "magic"))


CASES = {
    "train": (
        lambda i, w: ["train", *_train_args(i["model"], i["data"], w / "r")],
        None,
        lambda w: _run_products(w / "r"),
    ),
    "magic": (
        lambda i, w: [
            "magic",
            "--run",
            w / "run",
            "--queries",
            i["root"] / "run-q",
            "--out",
            w / "m.npy",
            "--block",
            "1",
            "--device",
            "cpu",
        ],  # fmt: skip
        _copy_run,
        lambda w: _files(w, "*.npy"),
    ),
    "Trainer callback, resumed": (
        lambda i, w: [
            "python",
            TRAINER_RUNS,
            i["gpt2"],
            i["text"],
            w / "out",
            w / "stores",
            "--resume",
        ],  # fmt: skip
        None,
        lambda w: _ensemble_products(w / "stores" / "tracincp" / "train", w),
    ),
    "evaluate retrain --same-run": (
        lambda i, w: [
            "evaluate",
            "retrain",
            "--same-run",
            i["root"] / "run",
            "--train",
            i["root"] / "run-train",
            "--queries",
            i["root"] / "run-q",
            "--out",
            w / "gt.npz",
            "--subsets",
            "3",
            "--device",
            "cpu",
        ],  # fmt: skip
        None,
        lambda w: _npz(w / "gt.npz"),
    ),
    "featurize": (lambda i, w: _featurize(i, w), None, lambda w: _store_products(w / "s")),
    "featurize --overwrite": (
        lambda i, w: _featurize(i, w, "--seed", "2", "--overwrite"),
        _copy_store,
        lambda w: _store_products(w / "s"),
    ),
    "score --out": (
        lambda i, w: [
            "score",
            "-t",
            i["root"] / "train",
            "--queries",
            i["root"] / "q",
            "--out",
            w / "s.npy",
            "--method",
            "tracin",
        ],  # fmt: skip
        None,
        lambda w: _files(w),
    ),
    "learn-weights": (
        lambda i, w: [
            "learn-weights",
            "-t",
            i["root"] / "train",
            "--queries",
            i["root"] / "q",
            "--out",
            w / "w.safetensors",
            "--k",
            "3",
            "--method",
            "tracin",
        ],  # fmt: skip
        None,
        lambda w: _files(w),
    ),
    "ensemble": (
        lambda i, w: ["ensemble", i["root"] / "train", i["root"] / "train2", "--out", w / "e"],
        None,
        lambda w: _store_products(w / "e"),
    ),
    "ensemble --overwrite": (
        lambda i, w: [
            "ensemble",
            i["root"] / "train2",
            i["root"] / "train",
            "--out",
            w / "e",
            "--overwrite",
        ],  # fmt: skip
        lambda i, w: _copy_store(i, w, "train", "e"),
        lambda w: _store_products(w / "e"),
    ),
    "perturb": (
        lambda i, w: [
            "perturb",
            "--train",
            i["root"] / "train",
            "--queries",
            i["root"] / "q",
            "--out",
            w / "p",
            "--copies",
            "2",
            "--batch-size",
            "8",
            "--lr",
            "0.01",
            "--device",
            "cpu",
        ],  # fmt: skip
        None,
        lambda w: _files(w / "p", "*.arrow"),
    ),
    "index build": (
        lambda i, w: ["index", "build", w / "s", "--method", "tracin", "--kind", "flat"],
        _copy_store,
        lambda w: _files(w / "s" / "cache", "*.faiss"),
    ),
    "evaluate retrain": (
        lambda i, w: [
            "evaluate",
            "retrain",
            "--train",
            i["root"] / "train",
            "--queries",
            i["root"] / "q",
            "--out",
            w / "gt.npz",
            "--subsets",
            "3",
            "--epochs",
            "1",
            "--device",
            "cpu",
        ],  # fmt: skip
        None,
        lambda w: _npz(w / "gt.npz"),
    ),
    "generate": (
        lambda i, w: [
            "generate",
            "--model",
            i["pipe"],
            "--out",
            w / "g",
            "--n",
            "2",
            "--steps",
            "4",
            "--trajectory",
            "2",
            "--seed",
            "7",
            "--device",
            "cpu",
        ],  # fmt: skip
        None,
        lambda w: _files(w / "g"),
    ),
}


def _npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k].tobytes() for k in data.files}


def _command(argv) -> list[str]:
    """`attrib ARGV -q`, or a Python script when ARGV starts with "python"."""
    if argv[0] == "python":
        return [sys.executable, *map(str, argv[1:])]
    return [ATTRIB, *map(str, argv), "-q"]


def _run(argv) -> float:
    start = time.perf_counter()
    done = subprocess.run(_command(argv), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def startup() -> float:
    """Seconds a command's process spends starting (the interpreter and the imports)."""
    start = time.perf_counter()
    imports = "import attrib_cli.app, torch, transformers, datasets, diffusers"
    subprocess.run([sys.executable, "-c", imports], check=True)
    return time.perf_counter() - start


def _reference(argv, startup: float) -> float:
    """The uninterrupted run, in-process (a process start saved a case); the seconds a
    process would take, so that the kills land across the same span."""
    if argv[0] == "python":
        return _run(argv)
    start = time.perf_counter()
    code, _, err = run_cli(*argv, "-q")
    assert code == 0, err[-2000:]
    return time.perf_counter() - start + startup


def _killed(argv, after: float) -> None:
    process = subprocess.Popen(
        _command(argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: workers die with it
    )
    try:
        process.wait(timeout=after)  # finished before the kill: a kill at the very end
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _litter(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if LITTER.search(p.name)]


def _fresh(inputs, tmp_path, name, setup) -> Path:
    work = tmp_path / name
    work.mkdir()
    if setup is not None:
        setup(inputs, work)
    return work


@pytest.mark.parametrize("command", list(CASES))
def test_a_killed_command_resumes_to_the_same_result(inputs, startup, tmp_path, command):
    argv_of, setup, products = CASES[command]
    reference = _fresh(inputs, tmp_path, "reference", setup)
    duration = _reference(argv_of(inputs, reference), startup)
    expected = products(reference)
    rng = np.random.default_rng(zlib.crc32(command.encode()))
    identical, litter = 0, []
    for kill in range(KILLS):
        work = _fresh(inputs, tmp_path, f"kill-{kill}", setup)
        argv = argv_of(inputs, work)
        _killed(argv, after=float(rng.uniform(0.3, 1.0)) * duration)
        _run(argv)
        identical += products(work) == expected
        litter += _litter(work)
    _table_row(command, KILLS, identical, litter)
    assert identical == KILLS and litter == []


def _table_row(command: str, kills: int, identical: int, litter: list[str]) -> None:
    table = os.environ.get("ATTRIB_KILL_TABLE")
    if table:
        with open(table, "a") as handle:
            handle.write(f"| {command} | {kills} | {identical} | {len(litter)} |\n")
