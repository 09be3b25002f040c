"""Recorded runs: `attrib train` replays bitwise (`train --check`) and resumes; adapter and
diffusion runs replay too; its checkpoint loads as a model. MAGIC on these runs:
tests/test_magic.py."""

from __future__ import annotations

import json

from builders import save_lora_adapter
from helpers import TRAIN_FLAGS, featurize_store, run_cli, train_run
from test_cli_errors import _assert_one_line_error

from attrib.training.record import snapshot_path


def test_a_recorded_run_replays_bitwise_and_its_checkpoint_loads(
    lm_run, tmp_path, gpt2_dir, text_data
):
    code, out, err = run_cli("train", "--check", lm_run, "--device", "cpu")
    assert code == 0, err
    result = json.loads(out)
    assert result["identical"] and result["steps"] == 10
    featurize_store(lm_run / "model", text_data, tmp_path / "s")
    code, _, err = run_cli(
        "train", "--model", gpt2_dir, "--data", text_data, "--out", lm_run, *TRAIN_FLAGS
    )
    _assert_one_line_error(code, err, "other settings")


def test_a_killed_train_resumes_to_the_same_run(tmp_path, gpt2_dir, text_data):
    whole = train_run(
        gpt2_dir, text_data, tmp_path / "whole", "--epochs", "2", "--snapshot-every", "3"
    )
    cut = train_run(gpt2_dir, text_data, tmp_path / "cut", "--epochs", "2", "--snapshot-every", "3")
    meta = json.loads((cut / "run.json").read_text())
    (cut / "run.json").write_text(json.dumps({**meta, "complete": False}))
    for step in (9, 10):  # killed after the snapshot before step 6
        snapshot_path(cut, step).unlink()
    train_run(gpt2_dir, text_data, cut, "--epochs", "2", "--snapshot-every", "3")
    for name in ("model/model.safetensors", "snapshots/step-00000010.safetensors"):
        assert (cut / name).read_bytes() == (whole / name).read_bytes()


def test_a_lora_run_trains_only_the_adapter(tmp_path, gpt2_dir, text_data):
    adapter = save_lora_adapter(gpt2_dir, tmp_path / "adapter", ["c_attn"])
    run = train_run(
        gpt2_dir,
        text_data,
        tmp_path / "lora",
        "--adapter",
        adapter,
        "--epochs",
        "1",
        "--lr",
        "1e-2",
    )
    meta = json.loads((run / "run.json").read_text())
    assert meta["trainable"] and all("lora_" in n for n in meta["trainable"])
    assert (run / "model" / "adapter_config.json").is_file()
    code, out, err = run_cli("train", "--check", run, "--device", "cpu")
    assert code == 0 and json.loads(out)["identical"], err


def test_a_diffusion_run_replays_with_its_noise(tmp_path, ddpm):
    pipe, data = ddpm
    run = train_run(pipe, data, tmp_path / "ddpm", "--epochs", "1", "--batch-size", "4")
    assert (run / "model" / "model_index.json").is_file()
    code, out, err = run_cli("train", "--check", run, "--device", "cpu")
    assert code == 0 and json.loads(out)["identical"], err
