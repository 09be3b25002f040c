"""MAGIC on recorded runs: metagradients equal central finite differences of the replayed run
(float64); snapshot spacing and killed runs do not change the scores; the same-run ground
truth is the replay without the removed rows; per-token rows sum to the sequence's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import featurize_store, run_cli, train_run
from test_cli_errors import _assert_one_line_error

from attrib.training.engine import run_steps, state_from_snapshot
from attrib.training.load import load_run
from attrib.training.magic import metagradients, output_gradients
from attrib.training.record import Run


def _f(run, loaded, batch, weights, output):
    start = state_from_snapshot(run, 0, loaded.stepper, loaded.optimizer)
    state = run_steps(
        loaded.stepper,
        loaded.optimizer,
        loaded.source,
        loaded.batches,
        start,
        0,
        run.steps,
        weights=weights,
    )
    return output_gradients(loaded, state, batch, output)[0]


def _finite_differences(path, output, rows=(1, 6), eps=1e-4):
    run = Run.open(path)
    loaded = load_run(run, "cpu")
    batch = loaded.source.batch([0, 3])
    exact = metagradients(run, loaded, batch, output)
    # A segment's step graphs kept (the default where they fit) against states recomputed
    # and each graph built again: the same steps, the same float64 values up to rounding.
    kept = metagradients(run, loaded, batch, output, graph_bytes=2**34)
    np.testing.assert_allclose(kept, exact, rtol=1e-10, atol=1e-13 * np.abs(exact).max())
    for i in rows:
        up, down = np.ones(run.meta["rows"]), np.ones(run.meta["rows"])
        up[i], down[i] = 1 + eps, 1 - eps
        numeric = (_f(run, loaded, batch, up, output) - _f(run, loaded, batch, down, output)) / (
            2 * eps
        )
        # Central differences err by O(eps^2) ~ 1e-8 relative; float64 rounding adds ~1e-7.
        np.testing.assert_allclose(exact[:, i], numeric, rtol=1e-4, atol=1e-9)
        assert np.abs(numeric).max() > 1e-6  # the rows matter: the test can fail


def test_metagradients_equal_finite_differences_adamw(lm_run):
    _finite_differences(lm_run, "loss")


def test_metagradients_equal_finite_differences_sgd_momentum(tmp_path, vit_dir, image_data):
    flags = [
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--optimizer",
        "sgd",
        "--momentum",
        "0.9",
        "--weight-decay",
        "0.01",
        "--schedule",
        "cosine",
        "--dtype",
        "float64",
    ]
    run = train_run(vit_dir, image_data, tmp_path / "vit", *flags)
    _finite_differences(run, "margin", rows=(2, 9))


def test_metagradients_follow_batchnorm_running_statistics(tmp_path, resnet_dir, image_data):
    """The evaluated ResNet reads BatchNorm's running averages, which every step moves: the
    metagradient must carry them (held constant, it was off by 2x on digits)."""
    flags = ["--epochs", "2", "--lr", "0.05", "--optimizer", "sgd", "--dtype", "float64"]
    flags += ["--batch-size", "8", "--weight-decay", "0.01", "--schedule", "cosine"]
    run = train_run(resnet_dir, image_data, tmp_path / "resnet", *flags)
    _finite_differences(run, "margin", rows=(2, 9))


@pytest.fixture(scope="module")
def magic_inputs(lm_run, text_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("magic")
    for name, extra in (("train", []), ("q", ["--max-examples", "3"])):
        featurize_store(lm_run / "model", text_data, root / name, *extra)
    return root


def _magic(run, queries, out, *extra):
    code, stdout, err = run_cli(
        "magic",
        "--run",
        run,
        "--queries",
        queries,
        "--out",
        out,
        "--device",
        "cpu",
        "--format",
        "jsonl",
        "-q",
        *extra,
    )
    assert code == 0, err
    return np.load(out), [json.loads(line) for line in stdout.splitlines()]


def test_magic_scores_resume_and_do_not_depend_on_snapshot_spacing(
    lm_run, magic_inputs, gpt2_dir, text_data, tmp_path
):
    scores, records = _magic(lm_run, magic_inputs / "q", tmp_path / "a.npy", "--block", "1")
    assert scores.shape == (3, 40) and records[0]["rank"] == 1
    assert records[0]["score"] == pytest.approx(scores[0].max())
    parts = sorted((lm_run / "magic").rglob("*.npy"))
    assert len(parts) == 3
    parts[1].unlink()  # killed before the second block was written
    again, _ = _magic(lm_run, magic_inputs / "q", tmp_path / "b.npy", "--block", "1")
    assert np.array_equal(again, scores)
    flags = [
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--weight-decay",
        "0.1",
        "--schedule",
        "cosine",
        "--warmup",
        "2",
        "--dtype",
        "float64",
        "--snapshot-every",
        "1",
    ]
    dense = train_run(gpt2_dir, text_data, tmp_path / "dense", *flags)
    other, _ = _magic(dense, magic_inputs / "q", tmp_path / "c.npy", "--block", "3")
    np.testing.assert_allclose(other, scores, rtol=1e-10, atol=1e-14)


def test_the_same_run_ground_truth_is_the_replay_without_the_rows(
    lm_run, magic_inputs, tmp_path, text_data
):
    out = tmp_path / "gt.npz"
    code, _, err = run_cli(
        "evaluate",
        "retrain",
        "--train",
        magic_inputs / "train",
        "--queries",
        magic_inputs / "q",
        "--out",
        out,
        "--same-run",
        lm_run,
        "--subsets",
        "3",
        "--alpha",
        "0.9",
        "--device",
        "cpu",
        "-q",
    )
    assert code == 0, err
    with np.load(out) as truth:
        masks, values = truth["masks"], truth["outputs"]
    run = Run.open(lm_run)
    loaded = load_run(run, "cpu")
    batch = loaded.source.batch([0, 1, 2])
    expected = _f(run, loaded, batch, masks[1].astype(float), "loss")
    np.testing.assert_allclose(values[1], expected, rtol=1e-12)
    code, stdout, err = run_cli(
        "evaluate",
        "lds",
        "-t",
        magic_inputs / "train",
        "--queries",
        magic_inputs / "q",
        "--groundtruth",
        out,
        "--method",
        "tracin",
        "--scores",
        tmp_path / "missing.npy",
        "--format",
        "jsonl",
    )
    _assert_one_line_error(code, err, "missing.npy")
    # The same rows featurized for another method: the ground truth serves that store too.
    featurize_store(lm_run / "model", text_data, tmp_path / "ekfac", "--method", "ekfac")
    code, _, err = run_cli(
        "evaluate",
        "lds",
        "-t",
        tmp_path / "ekfac",
        "--queries",
        magic_inputs / "q",
        "--groundtruth",
        out,
        "--method",
        "ekfac",
        "-q",
    )
    assert code == 0, err
    code, _, err = run_cli(
        "evaluate",
        "retrain",
        "--train",
        magic_inputs / "q",
        "--queries",
        magic_inputs / "q",
        "--out",
        tmp_path / "x.npz",
        "--same-run",
        lm_run,
    )
    _assert_one_line_error(code, err, "does not hold the rows")


def test_the_smoothness_check_compares_predictions_with_replays(lm_run, magic_inputs, tmp_path):
    code, _, err = run_cli(
        "magic",
        "--run",
        lm_run,
        "--queries",
        magic_inputs / "q",
        "--device",
        "cpu",
        "--smoothness",
        "3",
        "--drop",
        "0.1",
        "--format",
        "jsonl",
    )
    assert code == 0, err
    assert "smoothness: 3 replays" in err and "correlation" in err


def test_prompt_completion_and_chat_runs_train_on_the_completion_only(tmp_path, gpt2_dir):
    """Runs on TRL-format data train on the completion tokens only (the rule featurize uses),
    and metagradients go through them."""
    import datasets
    from builders import sentences
    from test_completions import _chat_model

    model, _ = _chat_model(tmp_path, gpt2_dir)
    words = [s.split() for s in sentences(8, seed=5)]
    pairs = tmp_path / "pairs.parquet"
    datasets.Dataset.from_dict(
        {"prompt": [" ".join(w[:2]) for w in words], "completion": [" " + w[-1] for w in words]}
    ).to_parquet(str(pairs))
    chats = tmp_path / "chats.parquet"
    datasets.Dataset.from_dict(
        {
            "messages": [
                [
                    {"role": "user", "content": " ".join(w[:2])},
                    {"role": "assistant", "content": w[-1]},
                ]
                for w in words
            ]
        }
    ).to_parquet(str(chats))
    for name, data in (("pairs", pairs), ("chats", chats)):
        run = train_run(model, data, tmp_path / name, "--epochs", "1", "--batch-size", "4")
        loaded = load_run(Run.open(run), "cpu")
        batch = loaded.source.batch([0, 1])
        assert "completion_mask" in batch  # only completion tokens are targets
        grads = metagradients(Run.open(run), loaded, batch, "loss")
        assert np.isfinite(grads).all() and np.abs(grads).max() > 0


def test_per_token_rows_sum_to_the_sequence_row(lm_run, magic_inputs, tmp_path):
    sequence, _ = _magic(lm_run, magic_inputs / "q", tmp_path / "seq.npy")
    tokens, records = _magic(lm_run, magic_inputs / "q", tmp_path / "tok.npy", "--per-token")
    owners = sorted({(r["query"], r["token"]) for r in records})
    assert len(owners) == len(tokens) > len(sequence) and "token_text" in records[0]
    queries = np.array([q for q, _ in owners])
    for q in range(len(sequence)):
        # --out is float32: equal to its rounding (the float64 sums agree to ~1e-15).
        np.testing.assert_allclose(tokens[queries == q].sum(0), sequence[q], rtol=1e-6, atol=1e-9)
