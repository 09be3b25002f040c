"""`attrib demo` end to end on a shrunken digits task; a second run reuses the cache."""

from __future__ import annotations

import json

from browser import browser, images_decode
from helpers import run_cli

from attrib.examples import digits
from attrib.training.loop import Recipe


def test_demo_runs_offline_and_reuses_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(digits, "SIZES", {"train": 120, "learn": 30, "val": 10, "eval": 20})
    monkeypatch.setattr(
        digits, "RECIPE", Recipe(init="scratch", epochs=2, lr=3e-3, batch_size=32, seed=0)
    )
    out = tmp_path / "demo"
    # 8 subsets: with fewer, Spearman over a handful of values may not see the weights at all.
    code, stdout, err = run_cli("demo", "--task", "image", "--out", out, "--subsets", "8")
    assert code == 0, err
    result = json.loads(stdout)
    assert len(result["proponents"]) == 8 and len(result["opponents"]) == 8
    assert [r["score"] for r in result["proponents"]] > [r["score"] for r in result["opponents"]]
    # The method is the better candidate on the validation queries, whatever eval says.
    assert set(result["validation"]) == {"ekfac", "shampoo"}
    assert result["method"] == max(result["validation"], key=result["validation"].get)
    lds = result["lds"]
    assert set(lds) == {"unweighted", "weighted"}
    change = result["weights_effect"]
    assert abs(change["lds"] - (lds["weighted"]["lds"] - lds["unweighted"]["lds"])) < 1e-9
    assert 0 < change["ci"] < 100
    assert (out / "query-and-proponents.png").stat().st_size > 500
    assert result["report"] == str(out / "report.html")
    page = (out / "report.html").read_text()
    assert page.count('class="row"') == 16 and 'class="list opp"' in page
    cached = tmp_path / "cache" / "attrib" / "demo" / "image"
    assert (cached / "model" / "config.json").exists()
    assert (cached / "groundtruth-8-val+eval.npz").exists()
    assert (cached / f"weights-{result['method']}.safetensors").exists()
    before = {p: p.stat().st_mtime_ns for p in cached.rglob("*") if p.is_file()}
    code, stdout2, err = run_cli("demo", "--task", "image", "--out", out, "--subsets", "8")
    assert code == 0, err
    after = {p: p.stat().st_mtime_ns for p in cached.rglob("*") if p.is_file()}
    assert before == after  # nothing rebuilt
    assert json.loads(stdout2)["lds"] == result["lds"]


def test_diffusion_demo_explains_a_digit_and_measures_lds(tmp_path, monkeypatch):
    from attrib.examples import digits_ddpm

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(digits, "SIZES", {"train": 40, "learn": 10, "val": 4, "eval": 8})
    monkeypatch.setattr(
        digits_ddpm, "RECIPE", Recipe(init="scratch", epochs=1, lr=2e-3, batch_size=16, seed=0)
    )
    out = tmp_path / "demo"
    code, stdout, err = run_cli("demo", "--task", "diffusion", "--out", out, "--subsets", "3")
    assert code == 0, err
    result = json.loads(stdout)
    assert len(result["proponents"]) == 8 and set(result["lds"]) == {"unweighted", "weighted"}
    assert (out / "query-and-proponents.png").stat().st_size > 500
    cached = tmp_path / "cache" / "attrib" / "demo" / "diffusion"
    assert (cached / "model" / "model_index.json").exists()
    assert (cached / "groundtruth-3-val+eval.npz").exists()
    # The report of a diffusion query, opened in a real browser.
    report = out / "report.html"
    assert images_decode(report.read_text()) == 1 + 8 + 8  # the query, 8 + 8 training images
    dom, console = browser(report, tmp_path / "diffusion.png")
    assert dom.count('class="row"') == 16 and "<svg" in dom and console == []


def test_the_shipped_diffusion_ground_truth_fits_the_demo_task():
    """Without --subsets the diffusion demo measures LDS against the ground truth shipped in
    the package: it must cover the task's training rows and evaluation queries."""
    from attrib.demo.run import _shipped
    from attrib.evaluate.groundtruth import load_groundtruth

    truth = load_groundtruth(_shipped("diffusion"))
    assert truth.masks.shape == (64, digits.SIZES["train"])
    assert truth.outputs.shape == (64, digits.SIZES["eval"])
    assert truth.extra["outputs_by_seed"].shape == (2, 64, digits.SIZES["eval"])
    assert not truth.higher_is_better


def test_text_demo_draws_its_answer_as_a_token_heat_map(tmp_path, monkeypatch):
    from attrib.examples import pydoc_text

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(pydoc_text, "SIZES", {"train": 60, "learn": 12, "val": 8, "eval": 8})
    monkeypatch.setattr(
        pydoc_text, "RECIPE", Recipe(init="scratch", epochs=1, lr=3e-3, batch_size=16, seed=0)
    )
    out = tmp_path / "demo"
    out.mkdir()
    (out / "query-and-proponents.png").write_bytes(b"an image demo's grid, from before")
    code, stdout, err = run_cli("demo", "--task", "text", "--out", out, "--subsets", "3")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["method"] in result["validation"] and result["grid"] is None
    assert not (out / "query-and-proponents.png").exists()  # it would show another query
    page = (out / "report.html").read_text()
    # Every token of the query's text is drawn, each with its top rows behind a click.
    assert page.count('class="tok"') == page.count('class="tokrows') > 10
    assert result["query"]["text"][:20] in page


def test_a_shipped_ground_truth_is_used_only_for_the_data_it_was_made_for(tmp_path):
    """The text demo ships its ground truth for one Python's pydoc topics; other data (another
    Python's topics) gets None, and the demo retrains its own."""
    import datasets as hf
    import numpy as np

    from attrib.demo import quality
    from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth

    data = {}
    for role, count in (("train", 6), ("val", 2), ("eval", 3)):
        data[role] = tmp_path / f"{role}.parquet"
        hf.Dataset.from_dict({"text": [f"{role} {i}" for i in range(count)]}).to_parquet(
            str(data[role])
        )
    outputs = np.arange(4 * 5, dtype=float).reshape(4, 5)
    truth = GroundTruth(np.ones((4, 6), bool), outputs, False, {"val_rows": 2})
    truth.extra.update(quality.data_fingerprints(data))
    save_groundtruth(tmp_path / "gt.npz", truth)
    split = quality.shipped(tmp_path / "gt.npz", data)
    np.testing.assert_array_equal(split["val"].outputs, outputs[:, :2])
    np.testing.assert_array_equal(split["eval"].outputs, outputs[:, 2:])
    hf.Dataset.from_dict({"text": ["other"] * 6}).to_parquet(str(data["train"]))
    assert quality.shipped(tmp_path / "gt.npz", data) is None
