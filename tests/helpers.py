"""Test helpers: the slow exact references fast paths are compared with, and a CLI runner."""

from __future__ import annotations

import sys
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO

import torch

from attrib.data import DataRef, open_dataset, undecoded
from attrib.featurize.batch import Featurizer
from attrib.featurize.modules import select_modules
from attrib.featurize.projection import ProjectionSpec
from attrib.tasks import ModelRef, TaskOptions, load_task


def load(model_dir, data_path, options: TaskOptions = TaskOptions(), adapter=None):
    ref = ModelRef(str(model_dir), adapter=str(adapter) if adapter else None)
    task = load_task(ref, None, torch.float32, options)
    dataset = open_dataset(DataRef(str(data_path)))
    columns = task.bind_columns(dataset)
    return task, undecoded(dataset, columns.get("image"))


def features(task, dataset, projection: ProjectionSpec, rows: range, output="loss", batch=None):
    """Features of `rows`, computed in batches of `batch` rows (all at once by default)."""
    selected = select_modules(task.model, adapter=task.info["adapter"] is not None)
    featurizer = Featurizer(task, task.bind_columns(dataset), selected, projection, output)
    batch = batch or len(rows)
    parts = []
    for lo in range(rows.start, rows.stop, batch):
        positions = range(lo, min(lo + batch, rows.stop))
        parts.append(featurizer(dataset[positions.start : positions.stop], positions).features)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def autograd_gradients(task, dataset, rows: range, output="loss") -> dict[str, torch.Tensor]:
    """Per-example gradients from one backward pass per example, as (out x in+bias) rows."""
    columns = task.bind_columns(dataset)
    selected = select_modules(task.model, adapter=task.info["adapter"] is not None)
    for _, module in selected:
        # Untie shared weights (GPT-2's lm_head and wte): a module's group is the gradient
        # through that module's own use of the weight.
        module.weight = torch.nn.Parameter(module.weight.detach().clone(), requires_grad=False)
    result = {spec.name: [] for spec, _ in selected}
    for row in rows:
        batch = task.prepare(dataset[row : row + 1], range(row, row + 1), task.device, columns)
        params = []
        for _, module in selected:
            params += [module.weight] + ([module.bias] if module.bias is not None else [])
        for p in params:
            p.requires_grad_(True)
        value = task.outputs(batch, output).values.sum()
        grads = iter(torch.autograd.grad(value, params))
        for p in params:
            p.requires_grad_(False)
        for spec, module in selected:
            weight = next(grads)
            if spec.kind == "conv1d":
                weight = weight.T
            matrix = weight.reshape(weight.shape[0], -1)
            if module.bias is not None:
                matrix = torch.cat([matrix, next(grads)[:, None]], dim=1)
            result[spec.name].append(matrix.reshape(-1))
    return {k: torch.stack(v) for k, v in result.items()}


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `attrib ARGS` in-process through the real entry point; (exit code, stdout, stderr)."""
    from attrib_cli.app import main

    out, err = StringIO(), StringIO()
    argv = sys.argv
    sys.argv = ["attrib", *map(str, args)]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        from attrib import log

        log.set_quiet(False)  # a -q run must not silence the next test's library calls
    return code, out.getvalue(), err.getvalue()


# `attrib train`'s flags for the tests' tiny runs: small batches on the CPU, quiet.
TRAIN_FLAGS = ["--batch-size", "8", "--device", "cpu", "-q"]


def train_run(model, data, out, *extra):
    """Record a run with `attrib train` into `out` (asserting it succeeded); `out`."""
    code, _, err = run_cli(
        "train", "--model", model, "--data", data, "--out", out, *TRAIN_FLAGS, *extra
    )
    assert code == 0, err
    return out


def featurize_store(model, data, out, *extra):
    """Featurize `data` with `model` into the store `out` at p = 4 (asserting it succeeded)."""
    code, _, err = run_cli(
        "featurize", "--model", model, "--data", data, "--out", out, "--proj-dim", "4", "-q", *extra
    )
    assert code == 0, err
    return out
