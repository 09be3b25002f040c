"""Ensemble stores (`attrib ensemble`): tracin, trak, trak-block, kfac and ekfac on them equal
the (weighted) sum of the members' scores, weights learned on one member apply, and methods
that do not add up over members are refused."""

from __future__ import annotations

import numpy as np
import pytest
from builders import save_tiny_resnet
from helpers import run_cli
from test_cli_errors import _assert_one_line_error

from attrib.weights.groups import group_modules


@pytest.fixture(scope="module")
def members(tmp_path_factory, resnet_dir, image_data):
    """Two checkpoints' training and query stores (ekfac features, factored p = 4)."""
    root = tmp_path_factory.mktemp("ensemble")
    other = save_tiny_resnet(root / "other-model", seed=1)
    stores = {}
    for j, model in enumerate((resnet_dir, other)):
        for role, extra in (("train", []), ("queries", ["--max-examples", "6"])):
            out = root / f"{role}-{j}"
            args = ["featurize", "--model", model, "--data", image_data, "--out", out]
            code, _, err = run_cli(*args, "--method", "ekfac", "--proj-dim", "4", "-q", *extra)
            assert code == 0, err
            stores[role, j] = out
    return root, stores


def _ensemble(root, stores, role, weights=None, name="ens"):
    out = root / f"{name}-{role}"
    extra = ["--member-weights", weights] if weights else []
    args = ["ensemble", stores[role, 0], stores[role, 1], "--out", out, "--overwrite", "-q"]
    code, stdout, err = run_cli(*args, *extra)
    assert code == 0, err
    assert stdout.strip() == str(out)
    return out


def _dense(train, queries, method, path, *extra):
    args = ["score", "-t", train, "--method", method, "--out", path]
    args += ["--queries", queries] if queries is not None else []
    code, _, err = run_cli(*args, "-q", *extra)
    assert code == 0, err
    return np.load(path)


@pytest.mark.parametrize(
    "method, weights",
    [
        ("tracin", "1,0.5"),
        ("ekfac", "1,0.5"),
        ("kfac", None),
        ("trak-block", "1,0.5"),
        ("trak", "1,0.5"),  # each member's own global kernel (TRAK over several models)
    ],
)
def test_ensemble_scores_are_the_sum_of_the_members(tmp_path, members, method, weights):
    root, stores = members
    train = _ensemble(root, stores, "train", weights, name=f"{method}")
    queries = _ensemble(root, stores, "queries", weights, name=f"{method}")
    got = _dense(train, queries, method, tmp_path / "ens.npy")
    parts = [
        _dense(stores["train", j], stores["queries", j], method, tmp_path / f"m{j}.npy")
        for j in (0, 1)
    ]
    # tracin sums w_j tau_j; a kernel fit to the (scaled) features is unchanged by w_j.
    w = [1.0, 0.5] if weights and method == "tracin" else [1.0, 1.0]
    want = w[0] * parts[0] + w[1] * parts[1]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_weights_learned_on_one_member_apply_to_the_ensemble(tmp_path, members):
    root, stores = members
    weights = tmp_path / "w.safetensors"
    code, _, err = run_cli(
        "learn-weights", "-t", stores["train", 0], "--queries", stores["queries", 0],
        "--method", "tracin", "--k", "3", "--epochs", "2", "--out", weights, "-q",
    )  # fmt: skip
    assert code == 0, err
    train = _ensemble(root, stores, "train", name="weighted")
    queries = _ensemble(root, stores, "queries", name="weighted")
    got = _dense(train, queries, "tracin", tmp_path / "ens.npy", "--weights", weights)
    want = sum(
        _dense(
            stores["train", j], stores["queries", j], "tracin", tmp_path / f"{j}.npy",
            "--weights", weights,
        )
        for j in (0, 1)
    )  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def _query_files(tmp_path) -> list:
    from builders import png_bytes

    rng = np.random.default_rng(3)
    args = []
    for i in range(2):
        path = tmp_path / f"q{i}.png"
        path.write_bytes(png_bytes((rng.random((20, 20, 3)) * 255).astype(np.uint8)))
        args += ["--query", path]
    return args


@pytest.mark.parametrize("method", ["ekfac", "trak"])
def test_query_files_on_an_ensemble_are_featurized_by_every_member(tmp_path, members, method):
    root, stores = members
    train = _ensemble(root, stores, "train", "1,0.5", name=f"query-{method}")
    query = _query_files(tmp_path)
    got = _dense(train, None, method, tmp_path / "ens.npy", *query)
    want = sum(
        _dense(stores["train", j], None, method, tmp_path / f"m{j}.npy", *query) for j in (0, 1)
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_query_files_need_the_member_stores(tmp_path, members):
    import shutil

    root, stores = members
    train = _ensemble(root, stores, "train", name="gone")
    moved = root / "moved"
    shutil.move(stores["train", 1], moved)
    try:
        code, _, err = run_cli("score", "-t", train, "--method", "ekfac", *_query_files(tmp_path))
        _assert_one_line_error(code, err, "member store", "is gone", "--queries")
    finally:
        shutil.move(moved, stores["train", 1])


def test_member_prefixes_are_not_groups():
    modules = ["member-0/a.x", "member-0/b.y", "member-1/a.x", "member-1/b.y"]
    groups, mapping = group_modules(modules, "module")
    assert groups == ["a.x", "b.y"] and mapping["member-1/b.y"] == "b.y"


def test_what_does_not_add_up_is_refused(tmp_path, members, gpt2_dir, text_data):
    root, stores = members
    train = _ensemble(root, stores, "train", name="refused")
    queries = _ensemble(root, stores, "queries", name="refused")
    code, _, err = run_cli("score", "-t", train, "--queries", queries, "--method", "cosine")
    _assert_one_line_error(code, err, "is an ensemble store", "tracin, trak, trak-block")
    code, _, err = run_cli("score", "-t", train, "--query", "x.png", "--method", "ekfac")
    _assert_one_line_error(code, err, "--query x.png: no such image file")
    code, _, err = run_cli("ensemble", stores["train", 0], stores["queries", 0], "-o", root / "x")
    _assert_one_line_error(code, err, "has 6 rows", "same data")
    code, _, err = run_cli("ensemble", stores["train", 1], stores["train", 0], "-o", train)
    _assert_one_line_error(code, err, "other settings", "pass --overwrite")
    code, _, err = run_cli("ensemble", stores["train", 0], stores["train", 1], "-o", train)
    assert code == 0, err  # the same ensemble again: already complete, nothing to do
    code, _, err = run_cli(
        "ensemble", stores["train", 0], stores["train", 1], "-o", root / "y",
        "--member-weights", "1",
    )  # fmt: skip
    _assert_one_line_error(code, err, "one positive weight per member (2)")


def test_tracincp_weights_come_from_the_trainer_state(tmp_path, resnet_dir, image_data):
    """Checkpoints of a Trainer run: --lr-weights reads each one's learning rate at its step,
    and tracin on the ensemble is the learning-rate-weighted sum (TracInCP)."""
    import json
    import shutil

    stores = {}
    for j, (step, rate) in enumerate(((100, 4e-3), (200, 1e-3))):
        checkpoint = tmp_path / f"run/checkpoint-{step}"
        shutil.copytree(resnet_dir, checkpoint)
        rates = {50: 5e-3, 100: 4e-3, 200: 1e-3, 300: 5e-4}  # the run's logged schedule
        history = [{"step": s, "learning_rate": r, "loss": 1.0} for s, r in rates.items()]
        state = {"global_step": step, "log_history": history}
        (checkpoint / "trainer_state.json").write_text(json.dumps(state))
        assert rates[step] == rate
        for role, extra in (("train", []), ("queries", ["--max-examples", "6"])):
            out = tmp_path / f"{role}-{j}"
            args = ["featurize", "--model", checkpoint, "--data", image_data, "--out", out]
            code, _, err = run_cli(*args, "--proj-dim", "4", "-q", *extra)
            assert code == 0, err
            stores[role, j] = out
    ensembles = {}
    for role in ("train", "queries"):
        out = tmp_path / f"ens-{role}"
        args = ["ensemble", stores[role, 0], stores[role, 1], "--lr-weights", "-o", out]
        code, _, err = run_cli(*args)
        assert code == 0 and "4e-03, 0.001" in err.replace("0.004", "4e-03"), err
        ensembles[role] = out
    got = _dense(ensembles["train"], ensembles["queries"], "tracin", tmp_path / "ens.npy")
    parts = [
        _dense(stores["train", j], stores["queries", j], "tracin", tmp_path / f"m{j}.npy")
        for j in (0, 1)
    ]
    want = 4e-3 * parts[0] + 1e-3 * parts[1]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    code, _, err = run_cli("ensemble", *(stores["train", j] for j in (0, 0)), "--lr-weights",
                           "-o", tmp_path / "x", "--member-weights", "1,2")  # fmt: skip
    _assert_one_line_error(code, err, "not both")


def test_an_ensemble_written_over_one_of_its_members_keeps_the_factors(tmp_path, members):
    """--out naming a member: the member's factors are read before it is replaced, and the
    factor files are in place when the store is (written with each shard, not afterwards)."""
    import shutil

    from attrib.store import Store
    from attrib.store.factors import shard_factor_path

    root, stores = members
    first = tmp_path / "train-0"
    shutil.copytree(stores["train", 0], first, ignore=shutil.ignore_patterns(".lock", "cache"))
    reference = _ensemble(root, stores, "train", "1,0.5", name="reference")
    args = ["ensemble", first, stores["train", 1], "--out", first, "--overwrite", "-q"]
    code, _, err = run_cli(*args, "--member-weights", "1,0.5")
    assert code == 0, err
    merged, want = Store(first), Store(reference)
    assert merged.shards and len(merged.shards) == len(want.shards)
    for shard, expected in zip(merged.shards, want.shards):
        got = shard_factor_path(first, shard.file).read_bytes()
        assert got == shard_factor_path(reference, expected.file).read_bytes()
