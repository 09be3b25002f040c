"""One training stack: retraining (`evaluate retrain`, perturb, tail-patch, the demo) runs the
functional steps `attrib train` records and magic differentiates, so a recipe means the same
thing everywhere (the warm-up was ignored by retraining), and no second optimizer loop may
appear in attrib."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch
from helpers import run_cli

from attrib.training.load import load_run
from attrib.training.loop import InitialState, train, trainable_parameters
from attrib.training.recipe import Recipe
from attrib.training.record import Run

ATTRIB = Path(__file__).resolve().parents[1] / "attrib"


def _trained(loaded, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights before, weights after) one training call from the run's starting weights."""
    task = loaded.task
    initial = InitialState(task)
    before = torch.cat([p.detach().flatten().clone() for p in trainable_parameters(task)])
    train(task, loaded.source, np.arange(8), recipe, recipe.seed)
    after = torch.cat([p.detach().flatten().clone() for p in trainable_parameters(task)])
    initial.restore_checkpoint()
    return before, after


def _delta(loaded, recipe: Recipe) -> torch.Tensor:
    before, after = _trained(loaded, recipe)
    return after - before


def test_retraining_follows_the_recipes_warmup_and_matches_a_recorded_run(
    tmp_path, resnet_dir, image_data
):
    flags = ["--epochs", "2", "--lr", "0.05", "--optimizer", "sgd", "--momentum", "0"]
    flags += ["--batch-size", "8", "--warmup", "4", "--max-examples", "8", "--dtype", "float64"]
    code, _, err = run_cli("train", "--model", resnet_dir, "--data", image_data, "--out",
                           tmp_path / "run", "--device", "cpu", "-q", *flags)  # fmt: skip
    assert code == 0, err
    run = Run.open(tmp_path / "run")
    loaded = load_run(run, "cpu")
    recipe = Recipe(**run.meta["recipe"])
    # The same recipe through retraining's entry point ends at the recorded run's final
    # weights, bitwise: one set of functional steps (float64, one process).
    final = run.load_snapshot(run.steps)
    recorded = torch.cat([final[f"param.{n}"].flatten() for n in loaded.stepper.names])
    assert torch.equal(_trained(loaded, recipe)[1], recorded)
    # One step (one epoch of one batch) of plain SGD under a 4-step warm-up moves the
    # weights a quarter as far as without it (lr * 1/4): the warm-up is applied.
    one = Recipe(**{**recipe.to_dict(), "epochs": 1})
    warm = _delta(loaded, one)
    plain = _delta(loaded, Recipe(**{**one.to_dict(), "warmup": 0}))
    assert plain.abs().max() > 1e-6
    torch.testing.assert_close(warm, plain / 4, rtol=1e-12, atol=1e-15)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            if isinstance(node.value.value, ast.Name):
                yield f"{node.value.value.id}.{node.value.attr}.{node.attr}", node.lineno


def test_no_second_optimizer_loop_appears():
    """torch.optim trains nothing in attrib but the group weights of learn-weights (a few
    numbers, not a model); a model's parameters are only updated by training/optim.py."""
    allowed = {"weights/learn.py"}
    found = []
    for path in sorted(ATTRIB.rglob("*.py")):
        name = str(path.relative_to(ATTRIB))
        tree = ast.parse(path.read_text())
        for call, line in _calls(tree):
            if call.startswith("torch.optim.") and name not in allowed:
                found.append(f"{name}:{line} {call}")
        for node in ast.walk(tree):
            is_step = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if is_step and node.func.attr == "step" and not node.args and name not in allowed:
                found.append(f"{name}:{node.lineno} .step()")
            is_backward = is_step and node.func.attr == "backward"
            # featurize's hooks, and the sharded stepper's gradients (FSDP's own backward;
            # its update is still optim.py's) are backward passes, not training loops.
            gradients = name.startswith("featurize/") or name == "training/sharded.py"
            if is_backward and name not in allowed and not gradients:
                found.append(f"{name}:{node.lineno} .backward()")
    assert found == [], f"a second training loop: {found}; train through attrib.training"
