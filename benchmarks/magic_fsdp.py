"""`magic --fsdp` against one unsharded process, through the console script with its
defaults: wall time, peak RSS per process, and the largest score difference.

    python benchmarks/magic_fsdp.py [--rows 64] [--out benchmarks/results/magic-fsdp.md]

The task: scale_out.py's GPT-2 of 6 blocks of width 512 (19M parameters) trained by `attrib
train` for one epoch (AdamW, --batch-size 8) on ROWS sentences, then magic for 8 queries in
one block (--queries), unsharded and with --fsdp over 2 processes (gloo, one thread each;
the unsharded process also gets one thread). Sharded, each process holds half of the
weights, of the optimizer state, of the recorded states and of the adjoints, and one block's
weights gathered at a time; but every process replays every step on the whole batch, runs the
reverse pass one query at a time, and keeps no segment's step graphs, which one process does
where --memory-gb leaves room: one process is also measured without them (--memory-gb 4.5).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from scale_out import ROOT, _gpt2, launch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--queries", type=int, default=8, help="all in one block")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/magic-fsdp.md")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import builders

    work = Path(tempfile.mkdtemp(prefix="attrib-magic-fsdp-"))
    texts = builders.sentences(args.rows)
    gpt2 = _gpt2(work / "gpt2", builders.tiny_tokenizer(texts))
    text = builders.save_text_data(work / "text.parquet", texts)
    train = ["train", "--model", gpt2, "--data", text, "--out", work / "run", "--epochs", "1"]
    launch("1 process", [*train, "--batch-size", args.batch_size, "--device", "cpu", "-q"])
    queries = ["featurize", "--model", work / "run" / "model", "--data", text, "--out", work / "q"]
    queries += ["--max-examples", args.queries, "--no-gradients", "--device", "cpu", "-q"]
    launch("1 process", queries)
    magic = ["magic", "--run", work / "run", "--queries", work / "q"]
    magic += ["--block", str(args.queries)]
    magic += ["--device", "cpu", "--format", "jsonl", "-q"]
    # Each launch its own block cache: a later one would otherwise resume from an earlier's.
    # The unsharded process keeps a segment's step graphs where --memory-gb allows (faster);
    # --fsdp never does. So one process also runs without them (--memory-gb 4.5).
    launches = [
        ("1 process", "1 process", []),
        ("1 process --memory-gb 4.5", "1 process", ["--memory-gb", "4.5"]),
        ("2 processes --fsdp", "2 processes", ["--fsdp"]),
    ]
    rows, first = [], None
    for k, (name, mode, extra) in enumerate(launches):
        out = work / f"scores-{k}.npy"
        wall, peak, _ = launch(mode, [*magic, "--out", out, "--cache", work / f"c{k}", *extra])
        scores = np.load(out)
        if first is None:
            first = (wall, scores)
            rows.append((name, wall, 1.0, peak, "(reference)"))
            continue
        gap = np.abs(scores - first[1]).max() / np.abs(first[1]).max()
        rows.append((name, wall, first[0] / wall, peak, f"max diff {gap:.0e} rel."))
    lines = [
        f"magic, GPT-2 6x512 (19M parameters), {args.rows} rows in batches of "
        f"{args.batch_size}, {args.queries} queries in one block (CPU, 1 thread a process)",
        "",
        "| launch | wall s | speed-up | peak RSS a process (GiB) | scores vs 1 process |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {m} | {w:.1f} | {x:.2f} | {p:.2f} | {v} |" for m, w, x, p, v in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
