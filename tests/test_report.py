"""`score --html`: a self-contained report, opened in headless Chromium (Debian's package;
the tests skip, saying why, where it is not installed): the DOM holds the query, k
proponents and k opponents with decoded images, the per-token answer, no console errors."""

from __future__ import annotations

import json

from browser import browser, images_decode
from helpers import run_cli

from attrib.weights.artifact import WeightsArtifact, save_weights

ARGS = ["--proj-dim", "4", "--batch-size", "8", "--device", "cpu", "-q"]


def test_an_image_report_shows_the_query_and_both_lists(tmp_path, resnet_dir, image_data):
    for name, extra in (("train", []), ("q", ["--max-examples", "2"])):
        code, _, err = run_cli(
            "featurize",
            "--model",
            resnet_dir,
            "--data",
            image_data,
            "--out",
            tmp_path / name,
            *ARGS,
            *extra,
        )
        assert code == 0, err
    from attrib.store import Store

    names = Store(tmp_path / "train").module_names
    weights = tmp_path / "w.safetensors"
    save_weights(weights, WeightsArtifact([1.0] * len(names), names, {n: n for n in names}))
    report = tmp_path / "report.html"
    code, _, err = run_cli(
        "score",
        "-t",
        tmp_path / "train",
        "--queries",
        tmp_path / "q",
        "--top",
        "3",
        "--opponents",
        "--weights",
        weights,
        "--html",
        report,
        "--format",
        "jsonl",
        "-q",
    )
    assert code == 0, err
    text = report.read_text()
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched from anywhere
    assert images_decode(text) == 2 + 2 * 2 * 3  # 2 queries, 3 proponents + 3 opponents each
    dom, console = browser(report, tmp_path / "image.png")
    assert dom.count('class="list pro"') == 2 and dom.count('class="list opp"') == 2
    assert dom.count('class="row"') == 12 and "<svg" in dom and console == []
    assert (tmp_path / "image.png").stat().st_size > 10_000


def test_a_per_token_report_colours_the_answer(tmp_path, gpt2_dir, text_data):
    code, _, err = run_cli(
        "featurize", "--model", gpt2_dir, "--data", text_data, "--out", tmp_path / "train", *ARGS
    )
    assert code == 0, err
    report = tmp_path / "tokens.html"
    code, out, err = run_cli(
        "score",
        "-t",
        tmp_path / "train",
        "--text",
        "the cat sat on the mat",
        "--per-token",
        "--opponents",
        "--top",
        "2",
        "--html",
        report,
        "--format",
        "jsonl",
    )
    assert code == 0, err
    tokens = {line.split('"token": ')[1].split(",")[0] for line in out.splitlines()}
    text = report.read_text()
    assert text.count('class="tok"') == len(tokens) and "the cat sat on the mat" in text
    dom, console = browser(report, tmp_path / "tokens.png")
    assert dom.count('class="tokrows') == len(tokens) and console == []
    assert dom.count('class="tokrows open"') == 1  # the strongest token's rows, at first view
    # Each token's box lists its 2 proponents beside its 2 opponents.
    assert dom.count('class="list opp"') == dom.count('class="list pro"') == len(tokens)


def test_control_characters_in_the_data_are_drawn_not_written_raw(tmp_path, gpt2_dir):
    data = tmp_path / "hostile.jsonl"
    rows = ["the cat\x00 sat", "a dog \x1b[31mran\x1b[0m", "the bird\x07 flew", "on the mat"]
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    code, _, err = run_cli(
        "featurize", "--model", gpt2_dir, "--data", data, "--out", tmp_path / "train", *ARGS
    )
    assert code == 0, err
    report = tmp_path / "r.html"
    code, _, err = run_cli("score", "-t", tmp_path / "train", "--text", "the cat\x1b sat",
                           "--top", "4", "--html", report, "-q")  # fmt: skip
    assert code == 0, err
    text = report.read_text()
    assert not any(c in text for c in "\x00\x1b\x07")
    assert "\u2400" in text and "\u241b" in text  # NUL and ESC, drawn
