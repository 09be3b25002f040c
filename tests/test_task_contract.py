"""The contract every registered task keeps, checked for each one (a task added later must
add an example here, or the first test fails): per-example hook gradients equal a
per-example autograd loop for each output function, features do not depend on the batch
size, and a killed featurize resumes to the bytes of an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from helpers import autograd_gradients, features, run_cli

from attrib.data import DataRef, open_dataset, undecoded
from attrib.featurize.projection import ProjectionSpec
from attrib.store.writer import StoreWriter
from attrib.tasks import ModelRef, TaskOptions, load_task, task_names

FULL = ProjectionSpec("none", None)
# task -> fixtures giving a tiny checkpoint and its data: (model folder, data file) or one
# fixture returning both.
EXAMPLES = {
    "causal-lm": ("gpt2_dir", "text_data"),
    "image-classification": ("resnet_dir", "image_data"),
    "diffusion": ("ddpm",),
}
OPTIONS = TaskOptions(timesteps=2, noise_seed=3)


def _example(request, name):
    fixtures = [request.getfixturevalue(f) for f in EXAMPLES[name]]
    return tuple(fixtures[0]) if len(fixtures) == 1 else tuple(fixtures)


def _load(model, data):
    task = load_task(ModelRef(str(model)), None, torch.float32, OPTIONS)
    dataset = open_dataset(DataRef(str(data)))
    columns = task.bind_columns(dataset)
    return task, undecoded(dataset, columns.get("image")), columns


def test_every_task_has_an_example():
    assert set(EXAMPLES) == set(task_names())


def test_the_registrys_output_functions_are_the_tasks():
    from attrib.tasks.output_functions import OUTPUT_FUNCTIONS
    from attrib.tasks.registry import TASK_OUTPUTS, task_class

    assert {n: task_class(n).output_functions for n in task_names()} == TASK_OUTPUTS
    assert {f for outputs in TASK_OUTPUTS.values() for f in outputs} == set(OUTPUT_FUNCTIONS)
    assert [f.name for f in OUTPUT_FUNCTIONS.values() if f.higher_is_better] == ["margin"]


def _outputs(task, columns):
    """Output functions a plain dataset supports, except those normalized per pass (DAS),
    whose reference is the diffusion tests' own."""
    return [f for f in task.available_outputs(columns) if f not in task.normalized_outputs]


@pytest.mark.parametrize("name", task_names())
def test_hook_gradients_equal_per_example_autograd(request, name):
    task, dataset, columns = _load(*_example(request, name))
    assert task.name == name
    rows = range(0, 4)
    for output in _outputs(task, columns):
        got = features(task, dataset, FULL, rows, output)
        want = autograd_gradients(task, dataset, rows, output)
        assert set(got) == set(want) and got
        for module in want:
            scale = want[module].abs().max().clamp(min=1e-12)
            assert (got[module] - want[module]).abs().max() / scale < 1e-4, (output, module)


@pytest.mark.parametrize("name", task_names())
def test_features_do_not_depend_on_the_batch_size(request, name):
    task, dataset, columns = _load(*_example(request, name))
    spec = ProjectionSpec("factored", 4, seed=1)
    for output in task.available_outputs(columns):
        whole = features(task, dataset, spec, range(0, 6), output)
        single = features(task, dataset, spec, range(0, 6), output, batch=1)
        for module in whole:
            torch.testing.assert_close(single[module], whole[module], rtol=1e-4, atol=1e-6)


class Killed(Exception):
    pass


@pytest.mark.parametrize("name", task_names())
def test_a_killed_featurize_resumes_to_the_same_bytes(request, tmp_path, monkeypatch, name):
    model, data = _example(request, name)
    args = [
        "--model",
        model,
        "--data",
        data,
        "--proj-dim",
        "4",
        "--shard-size",
        "3",
        "--max-examples",
        "8",
        "--device",
        "cpu",
        "--timesteps",
        "2",
        "-q",
    ]
    code, _, err = run_cli("featurize", *args, "--out", tmp_path / "whole")
    assert code == 0, err
    original, written = StoreWriter.write_shard, []

    def die_after_two(self, start, end, data):
        if len(written) == 2:
            raise Killed
        written.append(start)
        return original(self, start, end, data)

    monkeypatch.setattr(StoreWriter, "write_shard", die_after_two)
    with pytest.raises(Killed):
        run_cli("featurize", *args, "--out", tmp_path / "resumed")
    monkeypatch.setattr(StoreWriter, "write_shard", original)
    code, _, err = run_cli("featurize", *args, "--out", tmp_path / "resumed")
    assert code == 0, err

    def shard_bytes(store):
        return {p.name: p.read_bytes() for p in sorted((store / "shards").glob("*"))}

    assert shard_bytes(tmp_path / "resumed") == shard_bytes(tmp_path / "whole")
    assert len(shard_bytes(tmp_path / "whole")) == 3


@pytest.mark.parametrize("name", task_names())
def test_task_options_round_trip_through_the_manifest(request, tmp_path, name):
    from attrib.store import Store
    from attrib.tasks.loading import load_task_from_settings

    model, data = _example(request, name)
    out = tmp_path / "s"
    code, _, err = run_cli(
        "featurize",
        "--model",
        model,
        "--data",
        data,
        "--out",
        out,
        "--max-examples",
        "3",
        "--max-length",
        "7",
        "--timesteps",
        "3",
        "--noise-seed",
        "4",
        "--padding-side",
        "left",
        "--device",
        "cpu",
        "-q",
    )
    assert code == 0, err
    settings = Store(out).settings
    reloaded = load_task_from_settings(settings)
    assert reloaded.options == TaskOptions(
        max_length=7, timesteps=3, noise_seed=4, padding_side="left"
    )
    assert reloaded.options.record() == settings["task_options"]["options"]
    # The manifest records every option of the run, from the same object the CLI built.
    recorded = Store(out).manifest["options"]
    assert recorded["max_length"] == 7 and recorded["model"] == str(model)
    # the defaults resolved for the task family are what is recorded (docs/quality.md)
    want = ("trak", 16, "float16") if name == "diffusion" else ("shampoo", 45, "int8")
    assert (recorded["method"], recorded["proj_dim"], recorded["store_dtype"]) == want
