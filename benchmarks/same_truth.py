"""Do two ground truths hold the same outputs? `python benchmarks/same_truth.py A.npz B.npz`
prints the largest difference of their outputs relative to the largest output, and exits 1
when their masks differ or it is above --tolerance (gpu_check.sh compares `evaluate retrain
--fsdp` with one process's). Two .npy score matrices (`magic --out`) are compared the same
way."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    if args.a.endswith(".npy"):
        x, y = np.load(args.a), np.load(args.b)
        shape = f"{x.shape[0]} queries x {x.shape[1]} rows"
    else:
        with np.load(args.a) as a, np.load(args.b) as b:
            if not np.array_equal(a["masks"], b["masks"]):
                print("the ground truths hold other subsets")
                sys.exit(1)
            x, y = a["outputs"], b["outputs"]
        shape = f"{x.shape[0]} subsets x {x.shape[1]} queries"
    if x.shape != y.shape:
        print(f"other shapes: {x.shape} and {y.shape}")
        sys.exit(1)
    worst = float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-30))
    print(f"{shape}; largest difference {worst:.2e}")
    sys.exit(0 if worst <= args.tolerance else 1)


if __name__ == "__main__":
    main()
