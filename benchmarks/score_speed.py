"""Scoring throughput next to one torch.mm of the same shapes, and peak memory for N and 10N.

    python benchmarks/score_speed.py [--n 20000] [--queries 256] [--modules 16] [--dim 256]

Throughput: `attrib` streams float16 shards from disk (reading, converting, per-module
products, running top-k) for Q queries against N training examples; the baseline is a single
float32 `torch.mm` of (Q x D) by (D x N) already in memory, in the same run. Target: ratio
>= 0.5. Memory: the same scoring in a fresh process for N and 10N examples; peak RSS should
stay within 1.2x (it must not grow with N).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from attrib import log
from attrib.methods import get_method
from attrib.score.stream import score
from attrib.store import Store
from attrib.store.arrays import write_generated


def make_store(path: Path, n: int, modules: int, dim: int) -> Store:
    names = {f"layer.{i}": dim for i in range(modules)}

    def rows(start, end):
        rng = np.random.default_rng(start)
        return {name: rng.standard_normal((end - start, dim), np.float32) for name in names}, {}

    write_generated(path, names, n, rows, shard_size=4096, store_dtype="float16")
    return Store(path)


def time_scoring(store: Store, queries: torch.Tensor, method: str) -> float:
    prepared = get_method(method, store).prepare()
    score(store, prepared, queries[:2], 10)  # warm the page cache and the kernel cache
    start = time.perf_counter()
    score(store, prepared, queries, 10)
    return time.perf_counter() - start


def time_mm(q: int, d: int, n: int) -> float:
    a, b = torch.randn(q, d), torch.randn(d, n)
    torch.mm(a, b)
    start = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - start


def peak_rss(path: Path, queries: int, method: str) -> float:
    code = f"""
import resource, torch
from attrib.methods import get_method
from attrib.score.stream import score
from attrib.store import Store
store = Store({str(path)!r})
q = torch.randn({queries}, store.layout.total)
score(store, get_method({method!r}, store).prepare(), q, 10)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--modules", type=int, default=16)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    log.set_quiet(True)
    d = args.modules * args.dim
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        small = make_store(Path(tmp) / "n", args.n, args.modules, args.dim)
        queries = torch.randn(args.queries, d)
        mm = time_mm(args.queries, d, args.n)
        for method in ("tracin", "trak-block"):
            seconds = time_scoring(small, queries, method)
            rows.append({"method": method, "attrib_s": seconds, "mm_s": mm, "ratio": mm / seconds})
        large = make_store(Path(tmp) / "10n", 10 * args.n, args.modules, args.dim)
        rss = {
            m: (peak_rss(small.path, args.queries, m), peak_rss(large.path, args.queries, m))
            for m in ("tracin", "trak-block")
        }
    if args.json:
        print(json.dumps({"rows": rows, "rss_mib": rss}))
        return
    table = Table(
        title=f"scoring {args.queries} queries x N={args.n:,} (D={d:,}, float16 shards) vs one "
        f"float32 torch.mm of the same shapes (ratio target >= 0.5); peak RSS at N and 10N"
    )
    for column in ("method", "attrib s", "mm s", "ratio", "RSS N MiB", "RSS 10N MiB", "10N/N"):
        table.add_column(column, justify="right")
    for row in rows:
        n_rss, large_rss = rss[row["method"]]
        table.add_row(
            row["method"],
            f"{row['attrib_s']:.2f}",
            f"{row['mm_s']:.2f}",
            f"{row['ratio']:.2f}",
            f"{n_rss:,.0f}",
            f"{large_rss:,.0f}",
            f"{large_rss / n_rss:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
