"""What a new user stumbled on (issue 40): each finding, checked where the user meets it."""

from __future__ import annotations

import json

import numpy as np
from builders import png_bytes
from helpers import run_cli

ARGS = ["--proj-dim", "4", "--batch-size", "8", "--device", "cpu", "-q"]


def test_the_per_token_strip_draws_the_first_token_and_the_prompt(tmp_path, gpt2_dir, text_data):
    code, _, err = run_cli("featurize", "--model", gpt2_dir, "--data", text_data, "--out",
                           tmp_path / "s", *ARGS)  # fmt: skip
    assert code == 0, err
    report = tmp_path / "r.html"
    query = json.dumps({"prompt": "the cat", "completion": " sat on the mat"})
    code, out, err = run_cli("score", "-t", tmp_path / "s", "--query", query, "--per-token",
                             "--top", "1", "--html", report, "--format", "jsonl")  # fmt: skip
    assert code == 0, err
    targets = {json.loads(line)["token"] for line in out.splitlines()}
    page = report.read_text()
    context = page.count('class="tok ctx"')
    assert context >= 1 and min(targets) == context  # "the", " cat" drawn before the answer
    strip = page.split('<div class="tokens">')[1].split("</div>")[0]
    assert strip.index('class="tok ctx"') < strip.index('class="tok"')


def test_an_unlabelled_image_query_says_which_class_is_explained(tmp_path, resnet_dir, image_data):
    code, _, err = run_cli("featurize", "--model", resnet_dir, "--data", image_data, "--out",
                           tmp_path / "s", *ARGS)  # fmt: skip
    assert code == 0, err
    image = tmp_path / "q.png"
    image.write_bytes(png_bytes(np.full((20, 20, 3), 200, dtype=np.uint8)))
    report = tmp_path / "r.html"
    code, out, err = run_cli("score", "-t", tmp_path / "s", "--query", image, "--top", "1",
                             "--html", report, "--format", "jsonl")  # fmt: skip
    assert code == 0, err
    explains = json.loads(out.splitlines()[0])["explains"]
    assert explains in ("c0", "c1", "c2")  # the data's class names, not LABEL_N
    assert f"explains class {explains}" in report.read_text()


def test_query_titles_name_a_store_row_once():
    from attrib_cli.output import _query_title

    row = {"query": 0, "query_id": 12, "query_preview": "text: the cat"}
    assert _query_title(row, "query_id") == "query 0 (row 12): text: the cat"
    assert _query_title({"query": 1, "query_id": "cat.png"}, "query_id") == "query 1: cat.png"


def test_a_scores_file_is_a_row_of_its_own_not_a_weights_file(tmp_path):

    from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
    from attrib.store.arrays import write_arrays

    rng = np.random.default_rng(0)
    train = write_arrays(tmp_path / "train", {n: rng.standard_normal((30, 4)) for n in "ab"})
    queries = write_arrays(tmp_path / "q", {n: rng.standard_normal((5, 4)) for n in "ab"})
    masks = rng.random((8, 30)) < 0.5
    save_groundtruth(tmp_path / "gt.npz", GroundTruth(masks, rng.standard_normal((8, 5)), False))
    np.save(tmp_path / "magic.npy", rng.standard_normal((5, 30)).astype(np.float32))
    code, out, err = run_cli(
        "evaluate", "lds", "-t", train, "--queries", queries, "--groundtruth", tmp_path / "gt.npz",
        "--method", "tracin", "--scores", tmp_path / "magic.npy", "--format", "jsonl", "-q",
    )  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[1]["method"] == "magic.npy" and rows[1]["weights"] is None
    assert rows[0]["weights"] == "none" and all(r["unit"] == "percent" for r in rows)


def test_the_demos_next_commands_fit_80_columns_and_exist():
    from attrib_cli.demo import NEXT
    from test_docs import _commands, test_every_command_shown_exists_with_those_flags

    assert max(len(line) for line in NEXT.splitlines()) <= 80
    commands = _commands(NEXT)
    assert len(commands) == 7
    for argv in commands:
        test_every_command_shown_exists_with_those_flags("attrib demo", argv)


def test_on_a_pipe_a_long_phase_says_where_it_is_while_it_runs(capsys, monkeypatch):
    """A bar draws nothing on a pipe until it ends: plain lines come from a timer instead, so
    even one step longer than the interval is not silent; a short phase prints nothing."""
    import time

    from attrib.progress import progress_bar

    monkeypatch.setenv("ATTRIB_PROGRESS_SECONDS", "0.05")
    with progress_bar(True, unit="models") as bar:
        task = bar.add_task("retrain", total=3)
        for _ in range(3):
            time.sleep(0.12)  # each "model" longer than the interval
            bar.advance(task)
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("retrain: 0/3 models") for line in lines)  # before the first
    assert any("models/s" in line and "left" in line for line in lines)
    assert lines[-1].startswith("retrain: 3/3 models in")
    monkeypatch.setenv("ATTRIB_PROGRESS_SECONDS", "30")
    with progress_bar(True, unit="models") as bar:
        bar.advance(bar.add_task("quick", total=1))
    assert capsys.readouterr().err == ""
