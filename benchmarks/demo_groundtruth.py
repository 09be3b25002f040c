"""Build the ground truth `attrib demo --task text` ships with: its validation and evaluation
queries' outputs under 20 GPT-2s retrained from scratch on random halves of the training set,
made by the demo's own code (`attrib.demo.quality.groundtruths`), stamped with the content
fingerprints of the training and query rows it was made for (Python's pydoc topics differ
between Python versions: the demo uses it only where they match, and retrains otherwise).

    python benchmarks/demo_groundtruth.py [--subsets 20]

Writes attrib/examples/groundtruth/pydoc-text-val+eval-20.npz (about 90 KB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attrib.demo import quality
from attrib.demo.run import CANDIDATES, SHIPPED_GROUNDTRUTH, _build, _store, cache_root
from attrib.evaluate.groundtruth import load_groundtruth, save_groundtruth

OUT = Path(__file__).resolve().parents[1] / "attrib" / "examples" / "groundtruth"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subsets", type=int, default=20)
    args = parser.parse_args()
    root = cache_root() / "text"
    data, model, recipe = _build("text", root)
    first = _store(model, data["train"], root / "stores", CANDIDATES["text"][0], "train")
    quality.groundtruths(model, first, data, root, args.subsets, recipe)
    truth = load_groundtruth(root / f"groundtruth-{args.subsets}-val+eval.npz")
    _, val_rows = quality.checks_data(data)
    truth.extra.update(quality.data_fingerprints(data), val_rows=val_rows)
    path = OUT / SHIPPED_GROUNDTRUTH["text"]
    save_groundtruth(path, truth)
    print(f"wrote {path}: {truth.subsets} subsets x {truth.outputs.shape[1]} queries "
          f"({val_rows} validation first)")  # fmt: skip


if __name__ == "__main__":
    main()
