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


def test_a_model_pinned_to_a_cached_commit_asks_the_hub_nothing(tmp_path, text_data, monkeypatch):
    """Online, with the hub unreachable: a commit hash whose files are cached loads from the
    cache without a request (no adapter_config.json probe, no update check)."""
    import socket

    from huggingface_hub import constants

    hub_id = _cached_repo(tmp_path, sentences(24))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    requests = []

    def refuse(sock, address, *args):
        requests.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    import transformers

    model = _load(transformers.AutoModelForCausalLM, hub_id, COMMIT_A)
    assert model.config.model_type == "gpt2" and requests == []


def _load(loader, source, revision):
    import torch

    from attrib.tasks.base import load_pretrained
    from attrib.tasks.options import ModelRef

    return load_pretrained(loader, ModelRef(source, revision=revision), torch.float32)
