"""Scoring speed against a bare GEMM of the same shapes, at N and 10N training rows.

    python benchmarks/score_speed.py [--n 20000] [--queries 256] [--modules 16] [--dim 256]
                                       [--device auto] [--methods shampoo,tracin,trak-block]
                                       [--store-dtypes int8,float16,float32]

For each N and store dtype (int8, the default store's, first) a store of N x (modules x
dim) features and a query store are generated on disk (cold page cache is not attempted:
the store is read as a user's second run reads it). `attrib score` runs through
`run_score(ScoreOptions(...))`, the options object the CLI is built from, with its defaults
(top 10, no --out), best of --repeats; the baseline is one in-memory `queries @ train.T` of
the same shapes on the same device (plus its top-k), best of --repeats. ratio = baseline /
attrib: 1.0 means scoring costs no more than the bare product, reading the shards included.
Peak RSS comes from the console script (`attrib score`) in a
fresh process under /usr/bin/time, minus the same command on a 64-row store (start-up).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from attrib.distributed import resolve_device
from attrib.score.options import ScoreOptions
from attrib.score.run import run_score
from attrib.store.arrays import write_generated

ATTRIB = str(Path(sys.executable).with_name("attrib"))


def make_store(
    path: Path, n: int, modules: int, dim: int, seed: int, dtype: str = "float16"
) -> Path:
    names = {f"layer.{i}": dim for i in range(modules)}

    def rows(start, end):
        rng = np.random.default_rng([seed, start])
        return {name: rng.standard_normal((end - start, dim), np.float32) for name in names}, {}

    return write_generated(path, names, n, rows, shard_size=4096, store_dtype=dtype)


def _bytes(store: Path) -> int:
    """The store's size on disk (its shards, scales of int8 and int4 rows included)."""
    return sum(f.stat().st_size for f in store.rglob("*") if f.is_file())


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def bare_gemm(n: int, queries: int, width: int, device: torch.device, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(n, width, generator=generator).to(device)
    query = torch.randn(queries, width, generator=generator).to(device)

    def work():
        scores = query @ train.T
        scores.topk(10, dim=1)
        if device.type == "cuda":
            torch.cuda.synchronize()

    work()  # warm-up (kernels, allocator)
    return best_of(repeats, work)


def peak_rss(train: Path, queries: Path, method: str, device: str) -> float:
    command = ["/usr/bin/time", "-f", "%M", ATTRIB, "score", "-t", str(train)]
    command += ["--queries", str(queries), "--method", method, "--device", device, "--no-preview"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return int(done.stderr.strip().splitlines()[-1]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--modules", type=int, default=16)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--methods", default="shampoo,tracin,trak-block", help="default first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scales", default="1,10", help="multiples of --n")
    parser.add_argument("--store-dtypes", default="int8,float16,float32", help="default first")
    args = parser.parse_args()
    console = Console(stderr=True)
    device = resolve_device(args.device)
    width = args.modules * args.dim
    table = Table(title=f"Scoring {args.queries} queries, D={width}, device {device.type}")
    columns = ("method", "store dtype", "N", "store GiB", "bare GEMM s", "attrib s", "ratio")
    for column in (*columns, "peak RSS GiB above start-up"):
        table.add_column(column)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        query_store = make_store(root / "queries", args.queries, args.modules, args.dim, 1)
        tiny = make_store(root / "tiny", 64, args.modules, args.dim, 2)
        for dtype, scale in itertools.product(
            args.store_dtypes.split(","), map(int, args.scales.split(","))
        ):
            n = args.n * scale
            train = make_store(root / f"train-{n}", n, args.modules, args.dim, 0, dtype)
            baseline = bare_gemm(n, args.queries, width, device, args.repeats)
            for method in args.methods.split(","):
                options = ScoreOptions(  # no previews: a generated store has no dataset
                    train=train,
                    queries=query_store,
                    method=method,
                    device=args.device,
                    preview=False,
                )
                run_score(options)  # warm-up: kernels computed and cached, pages read
                seconds = best_of(args.repeats, lambda o=options: run_score(o))
                rss = peak_rss(train, query_store, method, args.device)
                rss -= peak_rss(tiny, query_store, method, args.device)
                console.print(f"{method} {dtype} N={n}: {seconds:.2f} s vs GEMM {baseline:.2f} s")
                table.add_row(
                    method,
                    dtype,
                    f"{n:,}",
                    f"{_bytes(train) / 2**30:.2f}",
                    f"{baseline:.3f}",
                    f"{seconds:.3f}",
                    f"{baseline / seconds:.2f}",
                    f"{rss:+.2f}",
                )
            shutil.rmtree(train)
    console.print(table)


if __name__ == "__main__":
    main()
