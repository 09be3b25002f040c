"""LDS against the projection size (and kind) per task: what `--proj-dim` should default to.

    python benchmarks/projection.py [--tasks pydoc,digits] [--dims 8,16,32,64,full]
        [--methods tracin,trak-block] [--subsets 100] [--kinds factored,dense]
        [--allocations uniform,sqrt-size] [--results projection-NAME]

A size may carry a store dtype, `45:int8` (`featurize --store-dtype`); without one the store
is float32.

For each task of the quality benchmark and each factored projection size p (and exact
gradients, `full`), the train, val and eval rows are featurized through `FeaturizeOptions`
(the object the CLI is built from; the method's own output function) and scored with each
method's defaults. Val LDS chooses; eval
LDS is reported. Results: benchmarks/results/projection-<tasks>.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from quality_tasks import TASKS  # noqa: E402

from attrib.errors import AttribError  # noqa: E402
from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.methods import method_class  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def store(task, role: str, method: str, dim, kind: str, dtype: str,
          allocation: str = "uniform") -> tuple[Path, float]:  # fmt: skip
    needs = method_class(method).requires
    # the store featurize makes for the method: margin gradients (TRAK's), loss gradients,
    # or loss gradients with Kronecker factors (kfac, ekfac)
    output = method if needs.factors else "trak" if needs.train_output == "margin" else "tracin"
    out = task.root / "projection" / f"{role}-{output}-{kind}-p{dim}"
    if dtype != "float32":  # the tables' float32 stores keep their names
        out = out.with_name(f"{out.name}-{dtype}")
    if allocation != "uniform":  # likewise the uniform ones
        out = out.with_name(f"{out.name}-{allocation}")
    if (out / "manifest.json").exists():
        return out, 0.0
    start = time.perf_counter()
    run_featurize(
        FeaturizeOptions(
            model=str(task.model),
            data=str(task.data[role]),
            out=out,
            method=output,
            proj_dim=dim,
            projection=kind,
            batch_size=64,
            progress=False,
            device="cpu",
            store_dtype=dtype,
            proj_allocation=allocation,
        )
    )
    return out, time.perf_counter() - start


def _size(text: str) -> tuple[int | str, str]:
    """`45`, `full` or `45:int8` -> (projection size, store dtype)."""
    dim, _, dtype = text.partition(":")
    return (dim if dim == "full" else int(dim)), dtype or "float32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="pydoc,digits")
    parser.add_argument("--dims", default="8,16,32,64,full")
    parser.add_argument("--methods", default="tracin,trak-block")
    parser.add_argument("--subsets", type=int, default=100)
    parser.add_argument("--kinds", default="factored", help="factored,dense")
    parser.add_argument("--allocations", default="uniform", help="uniform,sqrt-size")
    parser.add_argument("--results", help="the results file's stem (default: from the tasks)")
    args = parser.parse_args()
    dims = [_size(d) for d in args.dims.split(",")]
    rows = []
    for name in args.tasks.split(","):
        task = TASKS[name]()
        task.groundtruth(args.subsets)
        for method in args.methods.split(","):
            shapes = [(k, d, a) for k in args.kinds.split(",") for d in dims
                      for a in args.allocations.split(",")]  # fmt: skip
            for kind, (dim, dtype), allocation in shapes:
                paths, seconds = {}, 0.0
                for role in ("train", "val", "eval"):
                    paths[role], spent = store(task, role, method, dim, kind, dtype, allocation)
                    seconds += spent
                result = {"task": name, "method": method, "proj": f"{kind} {dim}"}
                result["proj"] += "" if dtype == "float32" else f" {dtype}"
                result["proj"] += "" if allocation == "uniform" else f" {allocation}"
                for role in ("val", "eval"):
                    truth = task.root / f"groundtruth-{args.subsets}-{role}.npz"
                    options = LdsOptions(
                        train=paths["train"],
                        queries=paths[role],
                        groundtruth=truth,
                        methods=(method,),
                    )
                    try:
                        (lds,) = run_lds(options)
                    except AttribError as exc:  # e.g. a block kernel over exact gradients
                        print(f"{method} {dim}: {exc}", flush=True)
                        result[role] = (float("nan"), float("nan"))
                        continue
                    # the CI with the subsets' luck, not the queries' alone
                    result[role] = (100 * lds["lds"], 100 * lds["ci_subsets"])
                result["featurize_s"] = seconds
                rows.append(result)
                print(json.dumps(result), flush=True)
    head = "| task | method | projection | val LDS % (± 95% CI with the subsets' luck) |"
    lines = [head + " eval LDS % | featurize s (3 roles) |"]
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['method']} | {r['proj']} | {r['val'][0]:.2f} ± {r['val'][1]:.2f}"
            f" | {r['eval'][0]:.2f} ± {r['eval'][1]:.2f} | {r['featurize_s']:.1f} |"
        )
    text = f"Command: `python {' '.join(sys.argv)}`\n\n" + "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.kinds == "factored" else "-" + args.kinds.replace(",", "-")
    stem = args.results or f"projection-{args.tasks.replace(',', '-')}{suffix}"
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
