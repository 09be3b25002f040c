"""Diffusion: per-example gradients, shared noise, D-TRAK vs TRAK, DAS and Journey-TRAK
against brute force, and determinism (the CLI end to end: test_diffusion_cli.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import autograd_gradients, features, run_cli

from attrib.data import DataRef, open_dataset, undecoded
from attrib.featurize.projection import ProjectionSpec
from attrib.store import Store
from attrib.tasks import ModelRef, TaskOptions, load_task

FULL = ProjectionSpec("none", None)
OPTIONS = TaskOptions(timesteps=3, noise_seed=5)


def _load(pipe, data, adapter=None, options=OPTIONS):
    ref = ModelRef(str(pipe), adapter=str(adapter) if adapter else None)
    task = load_task(ref, None, torch.float32, options)
    dataset = open_dataset(DataRef(str(data)))
    columns = task.bind_columns(dataset)
    return task, undecoded(dataset, columns["image"])


def _close(got, want, rtol=1e-4):
    scale = want.abs().max().clamp(min=1e-12)
    assert (got - want).abs().max() / scale < rtol


@pytest.mark.parametrize("which", ["ddpm", "sd-lora"])
def test_per_example_gradients_equal_an_autograd_loop(request, which):
    if which == "ddpm":
        pipe, data = request.getfixturevalue("ddpm")
        task, dataset = _load(pipe, data)
    else:
        pipe, adapter, data = request.getfixturevalue("sd")
        task, dataset = _load(pipe, data, adapter)
    rows = range(0, 4)
    got = features(task, dataset, FULL, rows, "loss")
    if which == "sd-lora":
        assert got and all(".lora_" in n and not n.startswith("base_model") for n in got)
    want = autograd_gradients(task, dataset, rows, "loss")  # outputs() averages over timesteps
    for name in want:
        _close(got[name], want[name])


def test_noise_is_the_same_for_every_example_and_batch(ddpm):
    task, dataset = _load(*ddpm)
    small, large = torch.zeros(1, 3, 8, 8), torch.zeros(5, 3, 8, 8)
    for t in task.timesteps():
        a, b = task.noise(int(t), small), task.noise(int(t), large)
        assert torch.equal(a[0], b[3]) and torch.equal(b[0], b[4])
    assert not torch.equal(task.noise(0, small), task.noise(33, small))
    alone = features(task, dataset, ProjectionSpec("factored", 4), range(6), "loss", batch=1)
    together = features(task, dataset, ProjectionSpec("factored", 4), range(6), "loss", batch=6)
    for name in alone:
        _close(together[name], alone[name])


def test_dtrak_differs_from_trak_only_through_the_target_noise_term(ddpm):
    """L_simple = L_square - 2 mean(eps . eps_theta) + const, so the two gradients differ by
    exactly 2 * grad mean(eps . eps_theta)."""
    task, dataset = _load(*ddpm)
    rows = range(0, 3)
    simple = features(task, dataset, FULL, rows, "loss")
    square = features(task, dataset, FULL, rows, "square")
    original = task.outputs

    def cross_term(batch, output_function):
        values = []
        for t in task.timesteps():
            eps = task.noise(int(t), batch["x0"])
            noisy = task.scheduler.add_noise(batch["x0"], eps, torch.tensor([int(t)]))
            values.append((eps * task._predict(noisy, int(t), batch)).flatten(1).mean(1))
        return type(original(batch, "loss"))(sum(values) / len(values))

    task.outputs = cross_term
    cross = autograd_gradients(task, dataset, rows, "loss")
    task.outputs = original
    for name in simple:
        _close(square[name] - simple[name], 2 * cross[name])


def test_das_features_are_normalized_per_timestep(ddpm):
    task, dataset = _load(*ddpm)
    rows = range(0, 3)
    got = features(task, dataset, FULL, rows, "das")
    names = list(got)
    total = torch.zeros(3, sum(got[n].shape[1] for n in names))
    original = task.timesteps
    for t in original():
        task.timesteps = lambda t=t: torch.tensor([int(t)])
        per_t = autograd_gradients(task, dataset, rows, "das")
        flat = torch.cat([per_t[n] for n in names], 1)
        total += flat / flat.norm(dim=1, keepdim=True)
    task.timesteps = original
    _close(torch.cat([got[n] for n in names], 1), total / len(original()))


def _featurize(pipe, data, out, method, *extra):
    code, _, err = run_cli(
        "featurize",
        "--model",
        pipe,
        "--data",
        data,
        "--out",
        out,
        "--method",
        method,
        "--timesteps",
        "3",
        "--noise-seed",
        "5",
        "--store-dtype",
        "float32",
        "--proj-dim",
        "6",
        "--device",
        "cpu",
        "-q",
        *extra,
    )
    assert code == 0, err
    return Store(out)


def _phi(store: Store) -> np.ndarray:
    return np.concatenate([store.matrix(n).astype(np.float64) for n in store.module_names], 1)


def _trak_kernel(phi: np.ndarray, damping: float) -> np.ndarray:
    gram = phi.T @ phi
    return np.linalg.inv(gram + damping * np.trace(gram) / len(gram) * np.eye(len(gram)))


def test_das_scores_equal_the_papers_formula(tmp_path, ddpm):
    pipe, data = ddpm
    store = _featurize(pipe, data, tmp_path / "das", "das")
    out = tmp_path / "scores.npy"
    code, _, err = run_cli(
        "score",
        "--train",
        store.path,
        "--queries",
        store.path,
        "--method",
        "das",
        "--lambda",
        "0.5",
        "--out",
        out,
        "--no-preview",
        "-q",
    )
    assert code == 0, err
    phi = _phi(store)
    kernel = _trak_kernel(phi, 0.5)
    leverage = np.einsum("nd,de,ne->n", phi, kernel, phi)
    residual = store.column("residual").astype(np.float64)
    want = (phi @ kernel @ phi.T * (residual / (1 - leverage))) ** 2
    np.testing.assert_allclose(np.load(out), want, rtol=2e-3, atol=1e-4 * np.abs(want).max())


def test_journey_trak_queries_and_scores(tmp_path, ddpm):
    pipe, data = ddpm
    generated = tmp_path / "generated"
    code, _, err = run_cli(
        "generate",
        "--model",
        pipe,
        "--out",
        generated,
        "--n",
        "2",
        "--steps",
        "6",
        "--trajectory",
        "3",
        "--seed",
        "7",
        "-q",
    )
    assert code == 0, err
    train = _featurize(pipe, data, tmp_path / "train", "trak")
    queries = _featurize(pipe, generated, tmp_path / "queries", "jtrak")
    assert queries.settings["output_function"] == "journey"
    # Query features: L_simple gradients at each recorded x0_hat re-noised at its own t,
    # averaged over the steps; the reference takes one autograd pass per query.
    task, dataset = _load(pipe, generated)
    batch = task.prepare(dataset[0:2], range(2), torch.device("cpu"), task.bind_columns(dataset))
    steps = batch["trajectory_timesteps"][0].tolist()
    assert len(steps) == 3 and steps == sorted(steps, reverse=True)
    got = features(task, dataset, FULL, range(2), "journey")
    original = task.outputs

    def along_trajectory(batch, output_function):
        parts = [
            task._pass(x0, int(t), batch, "loss")
            for x0, t in zip(batch["trajectory"], batch["trajectory_timesteps"][0])
        ]
        return type(parts[0])(sum(p.values for p in parts) / len(parts))

    task.outputs = along_trajectory
    want = autograd_gradients(task, dataset, range(2), "loss")
    task.outputs = original
    for name in want:
        _close(got[name], want[name])
    out = tmp_path / "scores.npy"
    code, _, err = run_cli(
        "score",
        "--train",
        train.path,
        "--queries",
        queries.path,
        "--method",
        "jtrak",
        "--lambda",
        "0.5",
        "--out",
        out,
        "--no-preview",
        "-q",
    )
    assert code == 0, err
    phi, g = _phi(train), _phi(queries)
    want_scores = g @ _trak_kernel(phi, 0.5) @ phi.T
    np.testing.assert_allclose(
        np.load(out), want_scores, rtol=2e-3, atol=1e-4 * np.abs(want_scores).max()
    )


def test_same_seed_same_bytes(tmp_path, ddpm):
    pipe, data = ddpm
    a = _featurize(pipe, data, tmp_path / "a", "dtrak")
    b = _featurize(pipe, data, tmp_path / "b", "dtrak")
    assert [p.read_bytes() for p in sorted((a.path / "shards").glob("*"))] == [
        p.read_bytes() for p in sorted((b.path / "shards").glob("*"))
    ]
    for name in ("g1", "g2"):
        code, _, err = run_cli(
            "generate",
            "--model",
            pipe,
            "--out",
            tmp_path / name,
            "--n",
            "2",
            "--steps",
            "4",
            "--trajectory",
            "2",
            "-q",
        )
        assert code == 0, err
    first = sorted((tmp_path / "g1" / "png").glob("*.png"))
    assert [p.read_bytes() for p in first] == [
        p.read_bytes() for p in sorted((tmp_path / "g2" / "png").glob("*.png"))
    ]
