"""Do two stores hold the same rows and features? `python benchmarks/same_store.py A B`
prints the relative error ||A - B|| / ||A|| (Frobenius, rows matched by index) and the
largest single difference, and exits 1 when the relative error is above --tolerance
(gpu_check.sh compares half-precision and multi-GPU stores with one float32 process's)."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from attrib.store import Store


def matrix(store: Store) -> tuple[np.ndarray, np.ndarray]:
    rows, index = [], []
    for _, scalars, parts in store.iter_parts(torch.device("cpu")):
        rows.append(torch.cat([p.float() for p in parts], dim=1).numpy())
        index.append(np.asarray(scalars["index"]))
    return np.concatenate(index), np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--tolerance", type=float, default=1e-2)
    args = parser.parse_args()
    (ia, a), (ib, b) = matrix(Store(args.a)), matrix(Store(args.b))
    if not np.array_equal(np.sort(ia), np.sort(ib)):
        print("the stores hold other rows")
        sys.exit(1)
    a, b = a[np.argsort(ia)], b[np.argsort(ib)]
    error = float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-30))
    worst = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
    print(f"{len(a)} rows x {a.shape[1]} features; relative error {error:.2e}, largest "
          f"difference {worst:.2e} of the largest feature")  # fmt: skip
    sys.exit(0 if error <= args.tolerance else 1)


if __name__ == "__main__":
    main()
