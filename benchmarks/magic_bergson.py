"""attrib's magic against bergson's MAGIC on the same fine-tuning task and queries: wall time,
peak memory and LDS.

    python benchmarks/lm_throughput.py --setup      # once: bergson from PyPI in its own venv
    python benchmarks/magic.py --tasks pydoc-finetune --queries 32 --subsets 32 --seed-random
    python benchmarks/magic_bergson.py [--queries 32]

The task is benchmarks/magic.py's `pydoc-finetune` (its run, stores and ground truths must
be there): a 2-layer GPT-2 trained on 1,000 passages of Python's docs, fine-tuned on them
for 2 epochs, AdamW lr 1e-4 (betas 0.9/0.999, eps 1e-8, no weight decay), constant, batch
32. bergson (`bergson magic`, its console script in its own environment) trains that same
recipe from the same base model and data (its own batch order: bergson shuffles with its
seed; `--loss_reduction sum_of_means`, each passage's mean token loss summed over the
batch: attrib's per-passage mean up to the 1/32 that AdamW's normalization removes, where
bergson's default averages over all the batch's tokens) and scores the first --queries
evaluation passages one backward per query (`--aggregation none`). attrib's `attrib magic`
scores the same queries on the run `attrib train` recorded. Both run as console scripts in
a fresh process under /usr/bin/time (wall seconds including start-up, peak RSS; bergson's
includes its training run, which attrib's run record already holds: attrib's training time
is in benchmarks/results/magic-pydoc-finetune.md).

LDS: each tool's scores against the other-seeds ground truth (the recipe again from the base
model with other batch orders: both tools' runs are draws from it) and against the
same-run ground truth of attrib's run (which bergson's run is not: the number says how much
an exact answer for one run says about another). Scores: attrib's higher = more helpful;
bergson's are loss-signed (negative = reduces the query's loss), so they are negated.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from lm_throughput import VENV, timed  # noqa: E402
from quality_tasks import CACHE  # noqa: E402

from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402

ATTRIB = str(Path(sys.executable).with_name("attrib"))
RESULTS = Path(__file__).parent / "results"
ROOT = CACHE / "magic-pydoc-finetune"
BASE = CACHE / "magic-pydoc"


def jsonl(parquet: Path, out: Path, rows: int | None = None) -> Path:
    import pyarrow.parquet as pq

    texts = pq.read_table(parquet, columns=["text"]).column("text").to_pylist()[:rows]
    out.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return out


def bergson_scores(folder: Path, queries: int) -> np.ndarray:
    """(queries x rows), attrib's sign (higher = more helpful)."""
    info = json.loads((folder / "info.json").read_text())
    fields = {k: info["dtype"][k] for k in ("names", "formats", "offsets", "itemsize")}
    table = np.fromfile(folder / "scores.bin", dtype=np.dtype(fields))
    return -np.stack([table[f"score_{q}"] for q in range(queries)]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--venv", type=Path, default=VENV, help="bergson's environment")
    args = parser.parse_args()
    q = args.queries
    work = Path(tempfile.mkdtemp(prefix="magic-bergson-"))
    run = ROOT / "run"
    recipe = json.loads((run / "run.json").read_text())["recipe"]
    queries = ROOT / "stores" / "eval-trak"

    # attrib: a copy of the recorded run without its kept magic blocks (nothing resumed).
    fresh = work / "run"
    shutil.copytree(run, fresh, ignore=shutil.ignore_patterns("magic"))
    ours = work / "attrib.npy"
    attrib_wall, attrib_rss = timed(
        [ATTRIB, "magic", "--run", fresh, "--queries", queries, "--out", ours, "--device",
         "cpu", "-q"]
    )  # fmt: skip

    train = jsonl(BASE / "data" / "train.parquet", work / "train.jsonl")
    evals = jsonl(BASE / "data" / "eval.parquet", work / "eval.jsonl", q)
    bergson = [
        args.venv / "bin" / "python", "-m", "bergson", "magic", work / "bergson",
        "--model", BASE / "run" / "model", "--data.dataset", train, "--data.truncation", "true",
        "--query.dataset", evals, "--query.truncation", "true", "--aggregation", "none",
        "--batch_size", recipe["batch_size"], "--num_epochs", recipe["epochs"],
        "--lr", recipe["lr"], "--lr_scheduler_type", "constant", "--adam_beta1", "0.9",
        "--adam_beta2", "0.999", "--adam_eps", "1e-8", "--loss_reduction", "sum_of_means",
        "--weight_decay",
        recipe["weight_decay"], "--precision", "fp32", "--wandb_project", "",
        "--nproc_per_node", "1",
    ]  # fmt: skip
    bergson_wall, bergson_rss = timed(bergson)
    theirs = work / "bergson.npy"
    np.save(theirs, bergson_scores(work / "bergson" / "scores", q))

    mine, other = np.load(ours), np.load(theirs)
    agreement = float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(mine, other)]))
    rows = []
    for truth in ("seed-random-32.npz", "same-run-32-0.5.npz"):
        for record in run_lds(
            LdsOptions(
                train=ROOT / "stores" / "train-trak", queries=queries, groundtruth=ROOT / truth,
                methods=("trak-block",), scores=(str(ours), str(theirs)), device="cpu",
            )
        ):  # fmt: skip
            rows.append({"truth": truth, **record})
    lines = [
        f"pydoc-finetune, {q} queries: attrib magic {attrib_wall:.1f} s (peak RSS "
        f"{attrib_rss:.2f} GiB; its run was recorded by `attrib train` beforehand), bergson "
        f"magic {bergson_wall:.1f} s including its training run (peak RSS {bergson_rss:.2f} "
        f"GiB). Mean per-query correlation of the two score vectors: {agreement:.3f}.",
        "",
        "| ground truth | scores | LDS % | ± CI+subsets |",
        "|---|---|---|---|",
    ]
    for row in rows:
        name = {"attrib.npy": "attrib magic", "bergson.npy": "bergson magic"}.get(
            row["method"], f"{row['method']} ({row['weights']})"
        )
        lines.append(
            f"| {row['truth']} | {name} | {100 * row['lds']:.2f} | {100 * row['ci_subsets']:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    (RESULTS / "magic-bergson-pydoc-finetune.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
