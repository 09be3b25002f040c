"""What one block of queries costs `attrib magic`, in training runs: CPU seconds of magic for
one block (the default `--block`, 8 queries) over the CPU seconds of the training run it
differentiates, on the digits fine-tuning task of benchmarks/magic.py.

    python benchmarks/magic_speed.py [--task digits-finetune] [--block 8] [--blocks 1]
                                     [--memory-gb G] [--profile]

Both go through the options objects the CLI is built from (`attrib train`, `attrib magic`),
with their defaults; the run is recorded once (cached), then trained again into a scratch
folder for its timing, in this process, so both figures are measured alike. `--profile`
adds magic's top functions by cumulative time (cProfile). Target: at most 3 training runs
per block. The table goes to stdout.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, record_run  # noqa: E402

from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.training.magic_options import MagicOptions  # noqa: E402
from attrib.training.magic_run import run_magic  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(call) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `call()`."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    call()
    return cpu_seconds() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="digits-finetune")
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument(
        "--block",
        type=int,
        default=MagicOptions.default("block"),
        help="queries per block (default: attrib magic's)",
    )
    parser.add_argument(
        "--memory-gb",
        type=float,
        default=MagicOptions.default("memory_gb"),
        help="magic's --memory-gb (a small one: segments recomputed twice)",
    )
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    root, task = build(args.task)
    run = root / "run"
    if not (run / "run.json").exists():
        record_run(root, task)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        # Warmed up first: the first run in a process pays one-time costs (kernel and data
        # loading, ~2.7 s of CPU here) that magic's blocks, timed after it, do not.
        record_run(scratch / "warm-up", task)
        train_cpu, train_wall = timed(lambda: record_run(scratch / "timed", task))
        block = args.block
        queries = scratch / "queries"
        run_featurize(
            FeaturizeOptions(
                model=str(run / "model"), data=str(task["data"]["eval"]), out=queries,
                no_gradients=True, max_examples=block * args.blocks, progress=False,
                device="cpu",
            )
        )  # fmt: skip
        options = MagicOptions(
            run=run,
            queries=queries,
            cache=scratch / "cache",
            device="cpu",
            progress=False,
            block=block,
            memory_gb=args.memory_gb,
        )
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            magic_cpu, magic_wall = timed(lambda: profiler.runcall(run_magic, options))
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        else:
            magic_cpu, magic_wall = timed(lambda: run_magic(options))
    per_block = magic_cpu / args.blocks
    print(f"| task | training run CPU s (wall) | magic CPU s per block of {block} (wall) | "
          "training runs per block |")  # fmt: skip
    print("|---|---|---|---|")
    print(f"| {args.task} | {train_cpu:.1f} ({train_wall:.1f}) | {per_block:.1f} "
          f"({magic_wall / args.blocks:.1f}) | {per_block / train_cpu:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
