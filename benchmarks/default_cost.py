"""What the defaults cost: featurize and score with no method or projection flags (Shampoo's
store at p = 45 in int8 for classifiers and language models) beside the previous defaults
(`--method trak --proj-dim 16`, scored by trak-block; EK-FAC at `--proj-dim 32` in float16;
EK-FAC at p = 45 in int8), through the options objects the CLI is built from.

    python benchmarks/default_cost.py [--tasks pydoc,digits] [--queries 64]

Per task of the quality benchmark (its trained model and its 1,000 training rows): featurize
seconds for the training rows (the Kronecker factors included), store bytes per row (shards
and factor files), and seconds to score the evaluation queries against them, the first
time (the kernel or eigenbases fitted) and again (read from the cache). Every run writes a
fresh store in a temporary folder. Table: stdout and benchmarks/results/default-cost.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from quality_tasks import TASKS  # noqa: E402

from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.score.options import ScoreOptions  # noqa: E402
from attrib.score.run import run_score  # noqa: E402
from attrib.store import Store  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CONFIGS = {
    "earlier default (trak, p = 16)": {"method": "trak", "proj_dim": 16},
    "earlier default (ekfac, p = 32, float16)": {"method": "ekfac", "proj_dim": 32},
    "previous default (ekfac, p = 45, int8)": {"method": "ekfac"},
    "default": {},
}


def _bytes(folder: Path) -> int:
    files = [p for p in folder.rglob("*") if p.is_file() and "cache" not in p.parts]
    return sum(p.stat().st_size for p in files)


def measure(task, flags: dict, root: Path, queries: int) -> dict:
    common = {"model": str(task.model), "device": "cpu", "progress": False, **flags}
    start = time.perf_counter()
    train = FeaturizeOptions(data=str(task.data["train"]), out=root / "train", **common)
    run_featurize(train)
    featurize_s = time.perf_counter() - start
    query = FeaturizeOptions(
        data=str(task.data["eval"]), out=root / "eval", max_examples=queries, **common
    )
    run_featurize(query)
    score = ScoreOptions(train=root / "train", queries=root / "eval", device="cpu", progress=False)
    score_s = []
    for _ in range(2):  # the first fits the kernel or eigenbases, the second reads its cache
        start = time.perf_counter()
        run_score(score)
        score_s.append(time.perf_counter() - start)
    rows = Store(root / "train").num_examples
    return {
        "method": train.method, "proj_dim": train.proj_dim, "dtype": train.store_dtype,
        "scored_by": score.method,
        "featurize_s": featurize_s, "bytes_per_row": _bytes(root / "train") / rows,
        "score_s": score_s,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="pydoc,digits")
    parser.add_argument("--queries", type=int, default=64)
    args = parser.parse_args()
    lines = [
        f"Command: `python benchmarks/default_cost.py --tasks {args.tasks}` (this CPU)",
        "",
        "| task | configuration | featurize --method | p, store dtype | scored by "
        "| featurize s (1,000 rows) "
        f"| store KiB a row | score s ({args.queries} queries): first / cached |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in args.tasks.split(","):
        task = TASKS[name]()
        with tempfile.TemporaryDirectory() as tmp:  # untimed: the first run loads the model
            measure(task, {}, Path(tmp), args.queries)  # files and libraries into the caches
        for label, flags in CONFIGS.items():
            with tempfile.TemporaryDirectory() as tmp:
                r = measure(task, flags, Path(tmp), args.queries)
            lines.append(
                f"| {name} | {label} | {r['method']} | {r['proj_dim']}, {r['dtype']} | "
                f"{r['scored_by']} | "
                f"{r['featurize_s']:.1f} | {r['bytes_per_row'] / 1024:.1f} | "
                f"{r['score_s'][0]:.1f} / {r['score_s'][1]:.1f} |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "default-cost.md").write_text(text)


if __name__ == "__main__":
    main()
