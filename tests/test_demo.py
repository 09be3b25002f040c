"""`attrib demo` end to end on a shrunken digits task; a second run reuses the cache."""

from __future__ import annotations

import json

from helpers import run_cli

from attrib.examples import digits
from attrib.train import Recipe


def test_demo_runs_offline_and_reuses_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(digits, "SIZES", {"train": 120, "learn": 30, "val": 10, "eval": 20})
    monkeypatch.setattr(
        digits, "RECIPE", Recipe(init="scratch", epochs=2, lr=3e-3, batch_size=32, seed=0)
    )
    out = tmp_path / "demo"
    code, stdout, err = run_cli("demo", "--task", "image", "--out", out, "--subsets", "3")
    assert code == 0, err
    result = json.loads(stdout)
    assert len(result["proponents"]) == 8
    assert set(result["lds"]) == {"unweighted", "weighted"}
    assert (out / "query-and-proponents.png").stat().st_size > 500
    cached = tmp_path / "cache" / "attrib" / "demo" / "image"
    assert (cached / "model" / "config.json").exists()
    assert (cached / "groundtruth-3.npz").exists()
    before = {p: p.stat().st_mtime_ns for p in cached.rglob("*") if p.is_file()}
    code, stdout2, err = run_cli("demo", "--task", "image", "--out", out, "--subsets", "3")
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
    assert (cached / "groundtruth-3.npz").exists()


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
