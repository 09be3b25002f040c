"""LoRA adapters saved in diffusers' own format load as the same PEFT layers as a PEFT folder."""

from __future__ import annotations

import json

import pytest
import torch
from builders import CAPTIONS, save_plain_images, save_tiny_sd, save_unet_lora
from helpers import features, run_cli

from attrib.data import DataRef, open_dataset, undecoded
from attrib.featurize.projection import ProjectionSpec
from attrib.store import Store
from attrib.tasks import ModelRef, TaskOptions, load_task

OPTIONS = TaskOptions(timesteps=2, noise_seed=3)


def save_diffusers_lora(pipe, peft_dir, out):
    """The PEFT adapter's weights written by diffusers' `save_lora_weights`, with its config
    as the adapter metadata (what recent diffusers training scripts write)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(pipe, subfolder="unet")
    model = PeftModel.from_pretrained(unet, peft_dir)
    state = get_peft_model_state_dict(model)
    layers = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    config = model.peft_config["default"].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    StableDiffusionPipeline.save_lora_weights(
        out, unet_lora_layers=layers, unet_lora_adapter_metadata=config
    )
    return out


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora-formats")
    pipe = save_tiny_sd(root / "pipe")
    peft_dir = save_unet_lora(pipe, root / "peft")
    diffusers_dir = save_diffusers_lora(pipe, peft_dir, root / "diffusers")
    data = save_plain_images(root / "train.parquet", 4, seed=2, size=16, captions=CAPTIONS)
    return pipe, peft_dir, diffusers_dir, data


def _features(pipe, adapter, data):
    task = load_task(ModelRef(str(pipe), adapter=str(adapter)), None, torch.float32, OPTIONS)
    dataset = open_dataset(DataRef(str(data)))
    columns = task.bind_columns(dataset)
    rows = range(3)
    return task, features(
        task, undecoded(dataset, columns["image"]), ProjectionSpec("none", None), rows, "loss"
    )


def test_diffusers_format_gives_the_peft_folders_layers_and_gradients(adapters):
    pipe, peft_dir, diffusers_dir, data = adapters
    assert (diffusers_dir / "pytorch_lora_weights.safetensors").exists()
    assert not (diffusers_dir / "adapter_config.json").exists()
    _, want = _features(pipe, peft_dir, data)
    for source in (diffusers_dir, diffusers_dir / "pytorch_lora_weights.safetensors"):
        task, got = _features(pipe, source, data)
        assert task.info["adapter"]["format"] == "diffusers"
        assert sorted(got) == sorted(want)  # the same `...lora_A.default` layers
        for name in want:
            # Same weights, same layers: equal up to float32 summation order.
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7)


def test_featurize_reads_a_diffusers_lora_and_records_it(adapters, tmp_path):
    pipe, _, diffusers_dir, data = adapters
    out = tmp_path / "store"
    code, _, err = run_cli(
        "featurize", "--model", pipe, "--adapter", diffusers_dir, "--data", data,
        "--out", out, "--timesteps", "2", "--proj-dim", "4", "--device", "cpu", "-q",
    )  # fmt: skip
    assert code == 0, err
    adapter = Store(out).settings["model"]["adapter"]
    assert adapter["format"] == "diffusers" and adapter["fingerprint"].startswith("sha256:")
    assert all(".lora_" in name for name in Store(out).module_names)


def test_a_lora_file_without_unet_layers_is_refused(adapters, tmp_path):
    from safetensors.torch import save_file

    pipe, _, _, data = adapters
    file = tmp_path / "te_only" / "pytorch_lora_weights.safetensors"
    file.parent.mkdir()
    save_file({"text_encoder.x.lora_A.weight": torch.zeros(2, 4)}, str(file))
    code, _, err = run_cli(
        "featurize", "--model", pipe, "--adapter", file.parent, "--data", data,
        "--out", tmp_path / "s", "--device", "cpu", "-q",
    )  # fmt: skip
    assert code == 2 and "no UNet LoRA layers" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()
    json.dumps(err)
