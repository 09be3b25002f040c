"""What checking stores costs: `attrib score` wall time with shard checksums verified as they
are read (the default) and without (ATTRIB_VERIFY=0), and `attrib inspect --verify` (every
checksum, what featurize also does before it calls an existing store complete), each through
the CLI in a fresh process, median of --repeat runs after a warm-up.

    python benchmarks/verify_cost.py [--n 20000] [--queries 256] [--modules 16] [--dim 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from score_speed import make_store  # noqa: E402


def run(args: list[str], verify: bool) -> float:
    exe = shutil.which("attrib") or sys.exit("attrib is not on PATH: pip install -e .")
    env = {**os.environ, "ATTRIB_VERIFY": "1" if verify else "0"}
    start = time.perf_counter()
    subprocess.run([exe, *args], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def paired(args: list[str], repeat: int) -> tuple[float, float]:
    """Median seconds with and without checksums, runs interleaved so that drift in the
    machine's load falls on both alike."""
    run(args, True)  # warm-up: page cache, kernel cache
    on, off = [], []
    for _ in range(repeat):
        on.append(run(args, True))
        off.append(run(args, False))
    return statistics.median(on), statistics.median(off)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--modules", type=int, default=16)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train = make_store(Path(tmp) / "train", args.n, args.modules, args.dim).path
        queries = make_store(Path(tmp) / "q", args.queries, args.modules, args.dim).path
        size = sum(p.stat().st_size for p in (train / "shards").iterdir()) / 2**20
        rows = []
        for method in ("tracin", "trak-block"):
            command = [
                "score",
                "--train",
                str(train),
                "--queries",
                str(queries),
                "--method",
                method,
                "--top",
                "10",
                "--format",
                "jsonl",
                "--no-preview",
                "-q",
            ]
            on, off = paired(command, args.repeat)
            rows.append((f"score --method {method}", on, off))
        full = statistics.median(run(["inspect", str(train), "--verify"], True) for _ in range(3))
        plain = statistics.median(run(["inspect", str(train)], True) for _ in range(3))
    print(
        f"store: {args.n:,} rows x {args.modules * args.dim:,} float16 features "
        f"({size:,.0f} MiB); {args.queries} queries; 2 processes of the CPU as given"
    )
    print("| command | verified s | not verified s | cost |\n|---|---|---|---|")
    for name, on, off in rows:
        print(f"| `{name}` | {on:.2f} | {off:.2f} | {100 * (on / off - 1):+.0f}% |")
    print(f"| `inspect --verify` (all checksums) | {full:.2f} | {plain:.2f} (inspect) | |")


if __name__ == "__main__":
    main()
