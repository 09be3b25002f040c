"""`attrib train --check RUN`: replay a recorded run with w = 1 and compare every snapshot it
passes. The record itself (every file's checksum), the model it started from and its data are
verified first, so a difference found here is the replay's (threads, device, kernels), never
a damaged or changed input."""

from __future__ import annotations

from pathlib import Path

import torch

from attrib.training.engine import State, run_steps, state_from_snapshot
from attrib.training.load import load_run
from attrib.training.record import Run


def check_run(path: Path, device: str = "auto") -> dict:
    """{"steps", "identical", "max_abs_diff", "first_difference", "threads",
    "recorded_threads"}."""
    run = Run.open(path)
    run.verify_all()
    loaded = load_run(run, device)
    state = state_from_snapshot(run, 0, loaded.stepper, loaded.optimizer)
    worst, first = 0.0, None
    checked = set(run.snapshots[1:])

    def compare(step: int, current: State) -> None:
        nonlocal worst, first
        if step not in checked:
            return
        recorded = state_from_snapshot(run, step, loaded.stepper, loaded.optimizer)
        for a, b in zip(current.params, recorded.params):
            diff = float((a - b).abs().max()) if a.numel() else 0.0
            if diff > 0 and first is None:
                first = step
            worst = max(worst, diff)

    run_steps(
        loaded.stepper,
        loaded.optimizer,
        loaded.source,
        loaded.batches,
        state,
        0,
        run.steps,
        after_step=compare,
    )
    return {
        "steps": run.steps,
        "identical": worst == 0.0,
        "max_abs_diff": worst,
        "first_difference": first,
        "threads": torch.get_num_threads(),
        "recorded_threads": run.meta.get("environment", {}).get("threads"),
    }
