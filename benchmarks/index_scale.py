"""Exact streaming scoring against each FAISS index kind, on synthetic stores of 100k to 10M rows
whose features follow a real store's per-module distribution.

    attrib featurize --model MODEL --data DATA --out SOURCE --proj-dim 8   # a real store
    python benchmarks/index_scale.py --source SOURCE [--sizes 100000,1000000,10000000]

For each size N a float16 store (featurize's default) is generated: every module's features
are drawn from a Gaussian with the source store's mean and covariance for that module (so
spectra, per-module scales and hence recall figures are those of real gradients), its
`out_to_loss` column resampled from the source's. 1,000 queries are drawn the same way. The
method is the CLI's default (trak-block, its kernel fit to the synthetic store).

Exact: `run_score(ScoreOptions(...))` (the CLI's options, in this process, after a warm-up that
computes the kernel) for 1 and 1,000 queries. Indexes: built by the console script
(`attrib index build`, under /usr/bin/time: wall time, peak RSS, disk; for exact, the
peak RSS of `attrib score` with the 1,000 queries), then loaded once
(`LoadedIndex`, as a long-running service would hold it) and searched: latency for one query
(median of 50) and for 1,000 at once, recall@10 and @100 against the exact top-100. Above
`--in-memory` rows only `--streamed-kinds` are built (an index holding every float32 vector
would not fit in memory); exact scoring streams at every size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from attrib.index.search import LoadedIndex
from attrib.methods import get_method
from attrib.score.options import ScoreOptions
from attrib.score.run import run_score
from attrib.store import Store
from attrib.store.arrays import write_generated

ATTRIB = str(Path(sys.executable).with_name("attrib"))
METHOD = ScoreOptions.default("method")


def fit(source: Store) -> tuple[dict, np.ndarray]:
    """Per module (mean, Cholesky factor of the covariance), and the out-to-loss column."""
    shapes = {}
    for name in source.module_names:
        x = source.matrix(name, np.float64)
        cov = np.cov(x, rowvar=False) + 1e-9 * np.eye(x.shape[1])
        shapes[name] = (x.mean(0), np.linalg.cholesky(cov))
    return shapes, source.column("out_to_loss").astype(np.float32)


def make_store(path: Path, n: int, shapes: dict, factors: np.ndarray, seed: int) -> Path:
    dims = {name: len(mean) for name, (mean, _) in shapes.items()}

    def rows(start, end):
        rng = np.random.default_rng([seed, start])
        features = {}
        for name, (mean, chol) in shapes.items():
            z = rng.standard_normal((end - start, len(mean)), np.float32)
            features[name] = (z @ chol.T.astype(np.float32) + mean).astype(np.float32)
        return features, {"out_to_loss": rng.choice(factors, end - start)}

    if not (path / "manifest.json").exists():
        write_generated(
            path, dims, n, rows, ["out_to_loss"], shard_size=16384, store_dtype="float16"
        )
    return path


def timed_cli(args: list) -> tuple[float, float]:
    """(wall seconds, peak RSS GiB) of one console-script run in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", ATTRIB, *map(str, args)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - start, int(done.stderr.strip().splitlines()[-1]) / 2**20


def exact_top(train: Path, queries: Path, top: int) -> tuple[np.ndarray, float]:
    """(Q x top positions, seconds) by exact streaming scoring through ScoreOptions."""
    options = ScoreOptions(train=train, queries=queries, top=top, preview=False)
    start = time.perf_counter()
    records = run_score(options)
    seconds = time.perf_counter() - start
    count = Store(queries).num_examples
    positions = np.array([r["index"] for r in records]).reshape(count, -1)
    return positions, seconds


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = [len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]
    return float(np.mean(hits))


def measure_index(
    train: Path, queries: torch.Tensor, kind: str, truth: np.ndarray, extra, probes, efs
) -> list[dict]:
    """One row per search setting: the ivf kinds at each --probe, hnsw at each --ef-search."""
    wall, rss = timed_cli(["index", "build", train, "--kind", kind, *extra, "-q"])
    store = Store(train)
    start = time.perf_counter()
    loaded = LoadedIndex(store, get_method(METHOD, store), kind)
    load = time.perf_counter() - start
    built = {"build s": wall, "peak RSS GiB": rss, "disk GiB": loaded.meta["bytes"] / 2**30}
    rows = []
    for setting in probes if kind in ("ivf", "ivfpq") else efs if kind == "hnsw" else [None]:
        label = kind
        if kind in ("ivf", "ivfpq"):
            loaded.index.nprobe, label = setting, f"{kind} --probe {setting}"
        elif kind == "hnsw":
            loaded.index.hnsw.efSearch, label = setting, f"{kind} --ef-search {setting}"
        rows.append({"kind": label, **built, "load s": load, **searched(loaded, queries, truth)})
    return rows


def searched(loaded: LoadedIndex, queries: torch.Tensor, truth: np.ndarray) -> dict:
    single = []
    for q in range(min(50, len(queries))):
        start = time.perf_counter()
        loaded.search(queries[q : q + 1], 10)
        single.append(time.perf_counter() - start)
    start = time.perf_counter()
    top = loaded.search(queries, 100)
    batch = time.perf_counter() - start
    found = top.positions.numpy()
    return {
        "1 query ms": 1e3 * statistics.median(single),
        "1000 queries s": batch,
        "recall@10": recall(found, truth, 10),
        "recall@100": recall(found, truth, 100),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="A real store to imitate.")
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--kinds", default="flat,ivf,ivfpq,hnsw")
    parser.add_argument("--streamed-kinds", default="ivfpq")
    parser.add_argument("--in-memory", type=int, default=1_000_000)
    parser.add_argument("--build-args", default="", help="e.g. '--lists 1000' for every build")
    parser.add_argument("--probes", default="64,128,256,512", help="ivf kinds: lists searched")
    parser.add_argument("--efs", default="128,512", help="hnsw: candidates searched")
    parser.add_argument("--work", type=Path, default=Path("/tmp/attrib-index-scale"))
    parser.add_argument("--keep", action="store_true", help="Keep the generated stores.")
    parser.add_argument("--results", type=Path, help="Append each row as JSON here.")
    args = parser.parse_args()
    console = Console(stderr=True, width=150)
    shapes, factors = fit(Store(args.source))
    width = sum(len(mean) for mean, _ in shapes.values())
    args.work.mkdir(parents=True, exist_ok=True)
    query_path = make_store(args.work / f"queries-{args.queries}", args.queries, shapes, factors, 1)
    one_query = make_store(args.work / "queries-1", 1, shapes, factors, 2)
    queries = torch.from_numpy(np.concatenate(
        [Store(query_path).matrix(n) for n in Store(query_path).module_names], axis=1
    ))  # fmt: skip
    table = Table(title=f"{args.queries} queries, D={width} ({len(shapes)} modules), {METHOD}")
    names = ("N", "kind", "build s", "peak RSS GiB", "disk GiB", "load s", "1 query ms")
    names += ("1000 queries s", "recall@10", "recall@100")
    for column in names:
        table.add_column(column, justify="right")
    for n in map(int, args.sizes.split(",")):
        train = make_store(args.work / f"train-{n}", n, shapes, factors, 0)
        exact_top(train, one_query, 10)  # warm-up: the kernel is computed and cached
        truth, batch = exact_top(train, query_path, 100)
        _, single = exact_top(train, one_query, 10)
        wall, rss = timed_cli(["score", "-t", train, "--queries", query_path, "--no-preview"])
        disk = Store(train).size_bytes() / 2**30
        row = {"N": n, "kind": "exact", "build s": 0, "peak RSS GiB": rss, "disk GiB": disk}
        row.update({"load s": 0, "1 query ms": 1e3 * single, "1000 queries s": batch})
        row.update({"recall@10": 1.0, "recall@100": 1.0})
        rows = [row]
        kinds = args.kinds if n <= args.in_memory else args.streamed_kinds
        probes = [int(p) for p in args.probes.split(",")]
        efs = [int(e) for e in args.efs.split(",")]
        extra = args.build_args.split()
        for kind in filter(None, kinds.split(",")):
            for row in measure_index(train, queries, kind, truth, extra, probes, efs):
                rows.append({"N": n, **row})
                console.print(rows[-1])
        for row in rows:
            if args.results:
                with open(args.results, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
            table.add_row(*[_cell(row[c]) for c in names])
        if not args.keep:
            shutil.rmtree(train)
    console.print(table)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":
    main()
