"""Start-up time of the CLI: wall seconds of `attrib --help`, `attrib COMMAND --help` and
`attrib inspect STORE`, each in a fresh process (median of --repeat runs). Target: under 1 s
on a 2-core machine. Usage: python benchmarks/startup.py [--store STORE] [--repeat 5]"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HELP_COMMANDS = [
    [],
    ["featurize"],
    ["score"],
    ["learn-weights"],
    ["evaluate", "lds"],
    ["evaluate", "retrain"],
    ["generate"],
    ["demo"],
    ["inspect"],
]


def seconds(args: list[str], repeat: int) -> float:
    exe = shutil.which("attrib") or sys.exit("attrib is not on PATH: pip install -e .")
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([exe, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", type=Path, help="A store for `attrib inspect`.")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = [
        (" ".join(["attrib", *c, "--help"]), seconds([*c, "--help"], args.repeat))
        for c in HELP_COMMANDS
    ]
    if args.store is not None:
        rows.append(
            (f"attrib inspect {args.store}", seconds(["inspect", str(args.store)], args.repeat))
        )
    print(f"| command | seconds (median of {args.repeat}) |\n|---|---|")
    for command, value in rows:
        print(f"| `{command}` | {value:.2f} |")


if __name__ == "__main__":
    main()
