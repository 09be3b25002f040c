"""AttribCallback: the stores a Trainer's callback writes are the stores `attrib featurize`
writes for the saved checkpoints, and the TracInCP ensemble is their lr-weighted sum."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from attrib.integrations.trainer import AttribCallback
from attrib.store import Store
from attrib.store.factors import FACTOR_DIR
from tests.helpers import run_cli
from tests.trainer_runs import train_image_classifier, train_lm


def assert_same_store(ours: Path, theirs: Path) -> None:
    """Equal settings (what identifies a store) and the same shard (and factor) files, byte
    for byte; the manifests differ only in the command line and the time."""
    a, b = Store(ours), Store(theirs)
    assert a.settings == b.settings

    def files(root: Path) -> list[Path]:
        found = [p for d in ("shards", FACTOR_DIR) for p in (root / d).rglob("*") if p.is_file()]
        return sorted(p.relative_to(root) for p in found)

    files_ours = files(ours)
    assert files_ours and files_ours == files(theirs)
    if a.settings["factors"]:
        assert any(p.parts[0] == FACTOR_DIR for p in files_ours)
    for name in files_ours:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name


def _featurize_saved(checkpoint: Path, data: Path, out: Path, *extra) -> Path:
    code, _, err = run_cli(
        *["featurize", "--model", str(checkpoint), "--data", str(data), "--out", str(out),
         "--device", "cpu", *extra]
    )  # fmt: skip
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def lm_callback_run(tmp_path_factory, gpt2_dir, text_data):
    root = tmp_path_factory.mktemp("trainer-lm")
    queries = root / "queries.parquet"
    datasets.Dataset.from_dict({"text": ["def add(a, b):", "import os"]}).to_parquet(str(queries))
    callback = AttribCallback(
        root / "stores", data=str(text_data), queries={"eval": str(queries)}, method="tracin",
        proj_dim=32, max_length=32,
    )  # fmt: skip
    train_lm(gpt2_dir, text_data, root / "out", callback)
    return root, queries, callback


def test_the_callbacks_stores_are_featurizes_stores_of_the_saved_checkpoints(
    lm_callback_run, text_data
):
    root, queries, _ = lm_callback_run
    saved = sorted((root / "out").glob("checkpoint-*"))
    assert [p.name for p in saved] == ["checkpoint-2", "checkpoint-4"]
    for checkpoint in saved:
        for name, data in (("train", text_data), ("eval", queries)):
            flags = ["--method", "tracin", "--proj-dim", "32", "--max-length", "32"]
            cli = _featurize_saved(checkpoint, data, root / "cli" / checkpoint.name / name, *flags)
            assert_same_store(root / "stores" / checkpoint.name / name, cli)


def test_the_tracincp_store_is_the_lr_weighted_sum_of_the_checkpoints(lm_callback_run):
    root, _, callback = lm_callback_run
    rates = [rate for _, rate in callback.checkpoints]
    state = json.loads((root / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    logged = {e["step"]: e["learning_rate"] for e in state["log_history"] if "learning_rate" in e}
    assert rates == pytest.approx([logged[2], logged[4]], rel=1e-12)  # what the Trainer logged

    def scores(train: Path, queries: Path) -> np.ndarray:
        code, out, err = run_cli(
            *["score", "--train", str(train), "--queries", str(queries), "--method", "tracin",
             "--top", "100", "--format", "jsonl", "--device", "cpu"]
        )  # fmt: skip
        assert code == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        matrix = np.zeros((2, Store(train).num_examples))
        for r in records:
            matrix[r["query"], r["index"]] = r["score"]
        return matrix

    stores = root / "stores"
    combined = scores(stores / "tracincp" / "train", stores / "tracincp" / "eval")
    parts = sum(
        rate * scores(stores / c / "train", stores / c / "eval")
        for c, rate in zip(["checkpoint-2", "checkpoint-4"], rates)
    )
    # float16 features summed in float32: agreement to float32 rounding of the sums.
    np.testing.assert_allclose(combined, parts, rtol=1e-4, atol=1e-6 * np.abs(parts).max())
    assert np.abs(parts).max() > 0


def test_an_image_classifier_under_the_trainer(tmp_path, vit_dir, image_data):
    callback = AttribCallback(
        tmp_path / "stores", data=str(image_data), method="ekfac", proj_dim=16
    )
    train_image_classifier(vit_dir, image_data, tmp_path / "out", callback)
    checkpoint = tmp_path / "out" / "checkpoint-4"
    flags = ["--method", "ekfac", "--proj-dim", "16"]  # ekfac: the factors are compared too
    cli = _featurize_saved(checkpoint, image_data, tmp_path / "cli", *flags)
    assert_same_store(tmp_path / "stores" / "checkpoint-4" / "train", cli)
    assert Store(tmp_path / "stores" / "tracincp" / "train").num_examples == 24


def test_trackstar_stores_use_each_checkpoints_own_optimizer_state(tmp_path, gpt2_dir, text_data):
    """method="trackstar": every checkpoint's stores are divided by the optimizer.pt the
    Trainer saved beside it (what featurize --optimizer-state CHECKPOINT writes), and no
    TracInCP ensemble mixes their normalizers."""
    callback = AttribCallback(tmp_path / "stores", data=str(text_data), method="trackstar",
                              max_examples=8, max_length=32)  # fmt: skip
    train_lm(gpt2_dir, text_data, tmp_path / "out", callback)
    for step in (2, 4):
        checkpoint = tmp_path / "out" / f"checkpoint-{step}"
        flags = ["--method", "trackstar", "--optimizer-state", str(checkpoint), "--max-examples",
                 "8", "--max-length", "32"]  # fmt: skip
        cli = _featurize_saved(checkpoint, text_data, tmp_path / f"cli-{step}", *flags)
        assert_same_store(tmp_path / "stores" / f"checkpoint-{step}" / "train", cli)
    assert not (tmp_path / "stores" / "tracincp").exists()


def test_two_processes_write_the_stores_one_process_writes(tmp_path, gpt2_dir, text_data):
    """The Trainer's own DDP (torchrun, gloo): each rank featurizes its shards of the
    checkpoint the ranks trained together; the stores equal one process's featurize of it."""
    script = Path(__file__).parent / "trainer_runs.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += [str(script), str(gpt2_dir), str(text_data)]
    command += [str(tmp_path / "out"), str(tmp_path / "stores")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        ours = tmp_path / "stores" / checkpoint / "train"
        assert len(list((ours / "shards").glob("*.arrow"))) == 3  # split across the ranks
        cli = _featurize_saved(tmp_path / "out" / checkpoint, text_data, tmp_path / checkpoint,
                               "--method", "trak", "--proj-dim", "16",
                               "--shard-size", "16")  # fmt: skip
        assert_same_store(ours, cli)
    assert Store(tmp_path / "stores" / "tracincp" / "train").num_examples == 40


def test_sft_trainer_with_lora_on_prompt_completion_data(tmp_path, gpt2_dir):
    pytest.importorskip("trl", reason="TRL is an optional extra: pip install 'attrib[trl]'")
    from tests.trainer_runs import train_sft_lora

    words = [f"alpha beta {w}" for w in "one two three four five six seven eight".split()] * 2
    data = tmp_path / "pc.parquet"
    datasets.Dataset.from_dict(
        {"prompt": [" ".join(w.split()[:2]) for w in words],
         "completion": [" " + w.split()[-1] for w in words]}
    ).to_parquet(str(data))  # fmt: skip
    callback = AttribCallback(tmp_path / "stores", data=str(data), method="tracin", proj_dim=8)
    train_sft_lora(gpt2_dir, data, tmp_path / "out", callback)
    ours = tmp_path / "stores" / "checkpoint-4" / "train"
    modules = [m["spec"]["name"] for m in Store(ours).settings["modules"]]
    assert modules and all("lora_" in m for m in modules)  # the adapter's layers only
    cli = _featurize_saved(gpt2_dir, data, tmp_path / "cli", "--adapter",
                           str(tmp_path / "out" / "checkpoint-4"), "--method", "tracin",
                           "--proj-dim", "8")  # fmt: skip
    assert_same_store(ours, cli)


def test_the_readme_example_runs_as_it_is(tmp_path):
    """A newcomer copies the docs' Trainer example into a script: it runs, and so do the
    score commands under it."""
    import shlex

    readme = (Path(__file__).parent.parent / "docs" / "trainer.md").read_text()
    after = readme.split("<!-- tested: tests/test_trainer_callback.py runs this block -->")[1]
    script = after.split("```python\n")[1].split("```")[0]
    commands = after.split("```bash\n")[1].split("```")[0].strip().splitlines()
    (tmp_path / "train.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "train.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    attrib = Path(sys.executable).parent / "attrib"
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "attrib"
        argv = [str(attrib), *argv[1:], "--format", "jsonl", "--device", "cpu"]
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(done.stdout.splitlines()) >= 3


def test_a_trainer_without_a_processor_is_refused_before_training(tmp_path, gpt2_dir, text_data):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(gpt2_dir)
    rows = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3]] * 4, "labels": [[1, 2, 3]] * 4})
    args = transformers.TrainingArguments(str(tmp_path / "out"), max_steps=2, report_to=[],
                                          use_cpu=True)  # fmt: skip
    callback = AttribCallback(tmp_path / "stores", data=str(text_data))
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=[callback])
    with pytest.raises(ValueError, match="pass processing_class"):
        trainer.train()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("checkpoint-*"))
