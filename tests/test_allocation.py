"""The sqrt-size allocation of a factored projection's features (featurize/allocation.py)."""

from __future__ import annotations

import math

import pytest
from helpers import run_cli

from attrib.errors import AttribError
from attrib.featurize.allocation import allocate, aspect_sides, feature_counts
from attrib.featurize.options import FeaturizeOptions
from attrib.featurize.projection import ProjectionSpec
from attrib.methods.kronecker import matrix_shapes
from attrib.store import Store
from attrib.store.module_spec import ModuleSpec

# A language model's shapes: attention, its projection, the MLP's two and a wide head.
SHAPES = [(192, 65), (64, 65), (256, 65), (64, 257), (1024, 64)]


def test_counts_share_the_uniform_total_by_the_square_root_of_size():
    p = 45
    counts = feature_counts(p, SHAPES)
    uniform = sum(min(p, a) * min(p, b) for a, b in SHAPES)
    assert sum(counts) == pytest.approx(uniform)
    ratios = [c / math.sqrt(a * b) for c, (a, b) in zip(counts, SHAPES)]
    assert max(ratios) == pytest.approx(min(ratios))  # none capped here


def test_a_module_never_gets_more_than_its_gradient_and_the_rest_goes_elsewhere():
    shapes = [(8, 8), (100, 100), (10, 65)]  # a tiny layer, a wide one, a 10-class head
    counts = feature_counts(64, shapes)
    # Uniform: 8 x 8 + 64 x 64 + 10 x 64. By sqrt-size the tiny layer and the head would get
    # more than their whole gradients (287 and 916), so they keep them and the wide layer
    # takes the rest.
    assert counts == pytest.approx([64, 64 * 64 + 640 - 650, 650])


def test_a_store_s_sides_are_kept_and_refused_for_other_modules():
    modules = [ModuleSpec(f"m{i}", "linear", a, b, False) for i, (a, b) in enumerate(SHAPES)]
    fresh = allocate(ProjectionSpec("factored", 45, allocation="sqrt-size"), modules)
    assert [name for name, _, _ in fresh.sides] == [m.name for m in modules]
    assert allocate(fresh, modules) is fresh  # a store's queries get the store's sides
    with pytest.raises(AttribError, match="featurize with the model .* the store was made with"):
        allocate(fresh, modules[:-1])


@pytest.mark.parametrize("count, d_out, d_in", [(900, 192, 65), (4128, 1024, 64), (50, 3, 400),
                                                (10**6, 8, 9), (1, 100, 100)])  # fmt: skip
def test_sides_follow_the_aspect_within_the_matrix(count, d_out, d_in):
    k_out, k_in = aspect_sides(count, d_out, d_in)
    assert 1 <= k_out <= d_out and 1 <= k_in <= d_in
    if count >= d_out * d_in:
        assert (k_out, k_in) == (d_out, d_in)
    else:
        assert k_out * k_in <= 1.5 * count + k_in  # rounding one side, never doubling


def test_the_default_store_records_its_sides_in_about_the_uniform_bytes(tmp_path, gpt2_dir,
                                                                        text_data):  # fmt: skip
    out = {}
    for allocation in ("sqrt-size", "uniform"):
        path = tmp_path / allocation
        code, _, err = run_cli(
            "featurize", "--model", gpt2_dir, "--data", text_data, "--out", path, "--proj-dim",
            "6", "--proj-allocation", allocation, "--max-examples", "4", "--device", "cpu", "-q",
        )  # fmt: skip
        assert code == 0, err
        out[allocation] = Store(path)
    shared, uniform = out["sqrt-size"], out["uniform"]
    projection = shared.settings["projection"]
    assert projection["allocation"] == "sqrt-size"
    sides = {name: (k_out, k_in) for name, k_out, k_in in projection["sides"]}
    assert matrix_shapes(shared) == [sides[name] for name in shared.module_names]
    assert "sides" not in uniform.settings["projection"]  # older stores' settings still match
    total = sum(shared.feature_dims.values())
    # Each module's sides are rounded: at p = 6 that moves the total by up to a tenth.
    assert abs(total - sum(uniform.feature_dims.values())) <= 0.1 * total
    assert set(shared.feature_dims.values()) != set(uniform.feature_dims.values())


def test_the_default_is_sqrt_size_for_kfac_s_family_and_uniform_otherwise(gpt2_dir, text_data):
    def resolved(**kw):
        options = FeaturizeOptions(model=str(gpt2_dir), data=str(text_data), out="s", **kw)
        return options.proj_allocation

    assert resolved() == "sqrt-size" == resolved(method="ekfac", proj_dim=64)
    assert resolved(method="trak") == "uniform" == resolved(proj_dim="full")
    assert resolved(projection="dense") == "uniform"
    for bad in ({"proj_dim": "full"}, {"projection": "dense"}):
        with pytest.raises(AttribError, match="--proj-allocation sqrt-size shares"):
            resolved(proj_allocation="sqrt-size", **bad)
