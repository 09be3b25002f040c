"""Models by hub id, from huggingface_hub's cache (offline, as the tests always are): the
resolved snapshot is recorded, and a query store made from another revision of the same hub
id is refused instead of scored."""

from __future__ import annotations

import shutil
from pathlib import Path

from builders import save_tiny_gpt2, sentences
from helpers import run_cli
from test_cli_errors import _assert_one_line_error

from attrib.store import Store

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def _cached_repo(tmp_path, texts) -> str:
    """A hub repo `tiny/gpt2` in the cache: revision main -> A, revision `other` -> B."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / "models--tiny--gpt2"
    shutil.rmtree(repo, ignore_errors=True)
    for commit, ref, seed in ((COMMIT_A, "main", 0), (COMMIT_B, "other", 1)):
        model = save_tiny_gpt2(tmp_path / f"model-{ref}", texts, seed=seed)
        shutil.copytree(model, repo / "snapshots" / commit)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return "tiny/gpt2"


def test_the_snapshot_is_recorded_and_other_revisions_refused(tmp_path, text_data, monkeypatch):
    from attrib.tasks import diffusion

    probes = []  # a cached transformers model must not be probed for model_index.json
    monkeypatch.setattr(diffusion, "_model_index", lambda ref: probes.append(ref) or {})
    hub_id = _cached_repo(tmp_path, sentences(24))
    common = ["--data", text_data, "--max-examples", "6", "--proj-dim", "4", "--device", "cpu"]
    train, queries = tmp_path / "train", tmp_path / "queries"
    code, _, err = run_cli("featurize", "--model", hub_id, *common, "--out", train, "-q")
    assert code == 0, err
    model = Store(train).settings["model"]
    assert model["commit"] == COMMIT_A and model["fingerprint"] == f"commit:{COMMIT_A}"
    code, _, err = run_cli(
        "featurize", "--model", hub_id, "--revision", "other", *common, "--out", queries, "-q"
    )
    assert code == 0, err
    assert Store(queries).settings["model"]["commit"] == COMMIT_B
    code, _, err = run_cli("score", "--train", train, "--queries", queries, "-q")
    _assert_one_line_error(code, err, "other settings", "model.fingerprint")
    assert probes == []


def test_an_unreachable_hub_is_said_at_once(tmp_path, gpt2_dir, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    out = tmp_path / "out"
    code, _, err = run_cli("featurize", "--model", gpt2_dir, "--data", "someone/data", "--out", out)
    _assert_one_line_error(code, err, "cannot be reached", "HF_HUB_OFFLINE=1")
    assert not out.exists()
