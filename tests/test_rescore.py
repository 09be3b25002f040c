"""Two-stage scoring (`score --rescore N`, `evaluate lds --rescore N`): candidates from the
projected store re-scored on exact gradients recomputed from the checkpoint must equal what
the method gives on a `--proj-dim full` store of the same rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli
from test_cli_errors import _assert_one_line_error
from test_score import _store

from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
from attrib.training.parts import make_masks

ROWS, QUERIES = 14, 4
# float32 products over ~10^3-10^4 features, summed in another order than the full store's
# streamed scoring: 1e-4 of the largest score is far above that and far below any ranking gap
# (a wrong preconditioner or gradient changes scores by tens of percent).
RTOL = 1e-4


@pytest.fixture(scope="module")
def stores(tmp_path_factory, resnet_dir, image_data):
    root = tmp_path_factory.mktemp("rescore")
    made = {}
    for kind, dim in (("p", 3), ("full", "full")):
        for role, rows in (("train", ROWS), ("queries", QUERIES)):
            made[kind, role] = _store(
                resnet_dir, image_data, root / f"{role}-{kind}", method="ekfac", proj_dim=dim,
                max_examples=rows,
            )  # fmt: skip
    return root, made


def _score(store, queries, out, *extra):
    code, stdout, stderr = run_cli(
        "score", "-t", store.path, "--queries", queries.path, "--out", out, "--device", "cpu",
        "--top", "5", *extra,
    )  # fmt: skip
    assert code == 0, stderr
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.mark.parametrize("method", ["ekfac", "kfac", "shampoo", "tracin"])
def test_rescoring_every_row_equals_the_method_on_exact_gradients(stores, method, tmp_path):
    root, made = stores
    exact_out, mixed_out = tmp_path / "exact.npy", tmp_path / "mixed.npy"
    exact = _score(made["full", "train"], made["full", "queries"], exact_out, "--method", method)
    mixed = _score(
        made["p", "train"], made["p", "queries"], mixed_out, "--method", method,
        "--rescore", str(ROWS),
    )  # fmt: skip
    want, got = np.load(exact_out), np.load(mixed_out)
    np.testing.assert_allclose(got, want, rtol=0, atol=RTOL * np.abs(want).max())
    assert [r["index"] for r in mixed] == [r["index"] for r in exact]
    # the projected answer alone is another one: the test can tell them apart
    _score(made["p", "train"], made["p", "queries"], tmp_path / "p.npy", "--method", method)
    assert np.abs(np.load(tmp_path / "p.npy") - want).max() > 100 * RTOL * np.abs(want).max()


def test_few_candidates_are_ranked_by_their_exact_scores(stores, tmp_path):
    """With 6 of 14 rows re-scored (3 a side), the first 3 listed rows are the candidates,
    with their exact scores and in their order, the other 2 follow in projected order, and
    --out holds the exact scores at the candidates and the projected ones, rescaled, elsewhere."""
    root, made = stores
    exact_out = tmp_path / "exact.npy"
    _score(made["full", "train"], made["full", "queries"], exact_out, "--method", "ekfac")
    want = np.load(exact_out)
    p_out, mixed_out = tmp_path / "p.npy", tmp_path / "mixed.npy"
    _score(made["p", "train"], made["p", "queries"], p_out, "--method", "ekfac")
    records = _score(
        made["p", "train"], made["p", "queries"], mixed_out, "--method", "ekfac", "--rescore",
        "6", "--opponents",
    )  # fmt: skip
    mixed, projected = np.load(mixed_out), np.load(p_out)
    for record in [r for r in records if r["rank"] <= 3]:
        exact_score = want[record["query"], record["index"]]  # store order = row order here
        tolerance = float(RTOL * np.abs(want).max())
        assert record["score"] == pytest.approx(float(exact_score), rel=RTOL, abs=tolerance)
    for q in range(QUERIES):
        listed = [r["score"] for r in records if r["query"] == q and r["list"] == "proponents"]
        assert listed[:3] == sorted(listed[:3], reverse=True) and len(listed) == 5
        assert listed[3:] == sorted(listed[3:], reverse=True)
        exact_here = np.isclose(mixed[q], want[q], rtol=1e-5, atol=1e-6 * np.abs(want).max())
        assert exact_here.sum() >= 6  # the candidates
        rest = ~exact_here
        ratio = mixed[q, rest] / projected[q, rest]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)  # one factor per query


def test_evaluate_lds_rescore_measures_the_dense_answer_score_writes(stores, tmp_path, monkeypatch):
    root, made = stores
    mixed_out = tmp_path / "mixed.npy"
    _score(
        made["p", "train"], made["p", "queries"], mixed_out, "--method", "ekfac", "--rescore", "6"
    )
    masks = make_masks(ROWS, 20, 0.5, seed=0)
    rng = np.random.default_rng(0)
    outputs = masks.astype(float) @ np.load(mixed_out).T + rng.normal(0, 1e-3, (20, QUERIES))
    truth = tmp_path / "truth.npz"
    save_groundtruth(truth, GroundTruth(masks, outputs, True))
    command = (
        "evaluate", "lds", "--train", made["p", "train"].path, "--queries",
        made["p", "queries"].path, "--groundtruth", truth, "--method", "ekfac", "--rescore", "6",
        "--scores", mixed_out, "--device", "cpu",
    )  # fmt: skip
    code, stdout, stderr = run_cli(*command)
    assert code == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert rows[0]["method"] == "ekfac+rescore6"
    assert rows[0]["lds"] == pytest.approx(rows[1]["lds"], abs=1e-9)
    assert rows[0]["lds"] > 90  # the outputs were made from that very answer
    # queries re-scored one at a time (a small --memory-gb) measure the same answer
    from attrib.score import rescore

    monkeypatch.setattr(rescore, "plan_queries", lambda *args: 1)
    code, stdout, stderr = run_cli(*command)
    assert code == 0, stderr
    assert json.loads(stdout.splitlines()[0])["lds"] == pytest.approx(rows[0]["lds"], abs=1e-6)


def test_methods_without_an_exact_form_are_refused_in_one_line(stores, tmp_path):
    root, made = stores
    code, out, err = run_cli(
        "score", "-t", made["p", "train"].path, "--queries", made["p", "queries"].path,
        "--method", "trak-block", "--rescore", "6", "--device", "cpu",
    )  # fmt: skip
    _assert_one_line_error(code, err, "--rescore needs a method")
    code, out, err = run_cli(
        "score", "-t", made["full", "train"].path, "--queries", made["full", "queries"].path,
        "--method", "ekfac", "--rescore", "6", "--device", "cpu",
    )  # fmt: skip
    _assert_one_line_error(code, err, "already exact")
    code, out, err = run_cli(
        "score", "-t", made["p", "train"].path, "--queries", made["p", "queries"].path,
        "--method", "ekfac", "--rescore", "6", "--rif",
    )  # fmt: skip
    _assert_one_line_error(code, err, "drop --per-token")


def test_text_queries_on_a_language_model_are_rescored_exactly(gpt2_dir, text_data, tmp_path):
    """--text values (featurized on the fly) on a tiny GPT-2: every row re-scored equals the
    full store's answer, with the query's exact gradient recomputed from its text."""
    made = {
        dim: _store(
            gpt2_dir,
            text_data,
            tmp_path / str(dim),
            method="ekfac",
            proj_dim=dim,
            max_examples=10,
            modules=("transformer.h.1.*",),
        )  # fmt: skip
        for dim in (2, "full")
    }
    outs = {dim: tmp_path / f"{dim}.npy" for dim in made}
    for dim, extra in ((2, ("--rescore", "10")), ("full", ())):
        code, stdout, stderr = run_cli(
            "score", "-t", made[dim].path, "--text", "the cat sat on the mat", "--text",
            "a dog ran", "--method", "ekfac", "--out", outs[dim], "--device", "cpu", *extra,
        )  # fmt: skip
        assert code == 0, stderr
    want = np.load(outs["full"])
    np.testing.assert_allclose(np.load(outs[2]), want, rtol=0, atol=RTOL * np.abs(want).max())


@pytest.mark.parametrize("solver", ["none", "cg"])
def test_queries_rescored_in_blocks_equal_all_at_once(stores, tmp_path, monkeypatch, solver):
    """A --memory-gb that fits one query's full-space vectors at a time gives the answer of
    all queries together (each query is its own system; a solve's steps are per query)."""
    from attrib.score import rescore

    root, made = stores
    extra = ("--method", "ekfac", "--rescore", "6", "--opponents", "--solver", solver)
    if solver == "cg":
        extra += ("--iterations", "2", "--tolerance", "0")
    whole = _score(made["p", "train"], made["p", "queries"], tmp_path / "all.npy", *extra)
    original, planned = rescore.plan_queries, []

    def one_at_a_time(*args):
        planned.append(original(*args))
        return 1

    monkeypatch.setattr(rescore, "plan_queries", one_at_a_time)
    blocked = _score(made["p", "train"], made["p", "queries"], tmp_path / "one.npy", *extra)
    want, got = np.load(tmp_path / "all.npy"), np.load(tmp_path / "one.npy")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    assert [r["index"] for r in blocked] == [r["index"] for r in whole]
    assert planned == [QUERIES]  # the default budget held every query in one block


def test_the_rescoring_plan_follows_the_memory_budget(stores):
    from attrib.errors import AttribError
    from attrib.methods import get_method
    from attrib.score.rescore import RESCORE_COPIES, SOLVE_COPIES, plan_queries

    root, made = stores
    store = made["p", "train"]
    method = get_method("ekfac", store)
    dims = sum(s.d_out * s.d_in for s in store.modules)
    assert plan_queries(6.0, store, method, QUERIES, 6, 16, solving=True) == QUERIES  # all fit
    # a budget that leaves room for about two queries' solve vectors
    per_query = RESCORE_COPIES * dims * 4 + SOLVE_COPIES * dims * 8
    fixed = 2 * 16 * dims * 4 + 4 * QUERIES * 6 * 8
    eigen = sum(4 * (s.d_out**2 + s.d_in**2) + 8 * s.d_out * s.d_in for s in store.modules)
    budget_gb = (eigen + fixed + 2.5 * per_query) / 2**30
    assert plan_queries(budget_gb, store, method, QUERIES, 6, 16, solving=True) == 2
    assert plan_queries(budget_gb, store, method, QUERIES, 6, 16, solving=False) == QUERIES
    with pytest.raises(
        AttribError, match="exact query vectors .* raise --memory-gb, or drop --solver"
    ):
        plan_queries((eigen + fixed) / 2**30, store, method, QUERIES, 6, 16, solving=True)


def test_a_budget_too_small_to_rescore_is_one_line(stores, tmp_path):
    root, made = stores
    out = tmp_path / "scores.npy"
    code, _, err = run_cli(
        "score", "-t", made["p", "train"].path, "--queries", made["p", "queries"].path,
        "--method", "ekfac", "--rescore", "6", "--device", "cpu", "--memory-gb", "0.0005",
        "--out", out,
    )  # fmt: skip
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert "--memory-gb 0.0005" in last and "exact gradients" in last, last
    assert not out.exists()


def test_exact_gradients_get_their_own_default_damping(stores):
    # Chosen on the fine-tuning tasks' validation queries (docs/quality.md, "How many
    # candidates"): 1e-3 on projected features, 0.1 on exact gradients; --lambda sets both.
    from attrib.methods import get_method
    from attrib.store import Store

    _, made = stores
    projected, full = Store(made["p", "train"].path), Store(made["full", "train"].path)
    for name in ("ekfac", "kfac", "shampoo"):
        on_projected, on_full = get_method(name, projected), get_method(name, full)
        assert (on_projected.damping, on_projected.exact_damping) == (1e-3, 0.1)
        assert (on_full.damping, on_full.exact_damping) == (0.1, 0.1)
        given = get_method(name, projected, 0.5)
        assert (given.damping, given.exact_damping) == (0.5, 0.5)
    tracin = get_method("tracin", projected)
    assert tracin.exact_damping == tracin.damping
