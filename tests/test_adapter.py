"""PEFT LoRA adapters: gradients default to the LoRA layers and equal an autograd loop."""

from __future__ import annotations

import pytest
import torch
from builders import save_lora_adapter
from helpers import autograd_gradients, features, load, run_cli

from attrib.featurize.projection import ProjectionSpec
from attrib.store import Store

CASES = [
    ("gpt2_dir", "text_data", ["c_attn", "c_fc"], "loss"),
    ("resnet_dir", "image_data", ["convolution"], "margin"),
]


@pytest.mark.parametrize("model, data, targets, output", CASES)
def test_lora_gradients_equal_per_example_autograd(request, tmp_path, model, data, targets, output):
    model_dir = request.getfixturevalue(model)
    adapter = save_lora_adapter(model_dir, tmp_path / "adapter", targets)
    task, dataset = load(model_dir, request.getfixturevalue(data), adapter=adapter)
    rows = range(0, 5)
    got = features(task, dataset, ProjectionSpec("none", None), rows, output)
    assert got and all(".lora_A." in n or ".lora_B." in n for n in got)
    want = autograd_gradients(task, dataset, rows, output)
    for name in want:
        scale = want[name].abs().max()
        assert scale > 0
        assert (got[name] - want[name]).abs().max() <= 1e-4 * scale


def test_featurize_with_adapter_from_the_cli(tmp_path, gpt2_dir, text_data):
    adapter = save_lora_adapter(gpt2_dir, tmp_path / "adapter", ["c_attn"])
    out = tmp_path / "store"
    code, _, err = run_cli(
        "featurize",
        "--model",
        gpt2_dir,
        "--data",
        text_data,
        "--adapter",
        adapter,
        "--out",
        out,
        "--max-examples",
        "6",
        "-q",
    )
    assert code == 0, err
    store = Store(out)
    adapter_record = store.settings["model"]["adapter"]
    assert adapter_record["source"] == str(adapter.resolve())
    assert adapter_record["fingerprint"].startswith("sha256:")
    assert len(store.module_names) == 4  # lora_A and lora_B of c_attn in 2 blocks
    assert all(".lora_" in name for name in store.module_names)
    assert torch.tensor(store.matrix(store.module_names[0])).abs().sum() > 0
