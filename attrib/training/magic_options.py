"""`attrib magic`'s options, defined once (the CLI is built from this class)."""

from __future__ import annotations

from pathlib import Path

from attrib.errors import AttribError
from attrib.execution import ArrayTask
from attrib.option_groups import OnDevice, WithMemory
from attrib.options import Options, at_least, existing_store, option

OUTPUTS = ("margin", "loss")


class MagicOptions(WithMemory, OnDevice, Options):
    """Exact attribution for a run `attrib train` recorded: each training row's score is the
    metagradient d f(query; theta_T(w)) / d w_i at w = 1, computed in reverse mode through
    every recorded optimizer step (MAGIC). Higher = more helpful, as for every method. Its
    own command, not a `score --method`: it reads a run, not a feature store, and its cost
    grows with the number of queries (one backward pass over the run per block of queries);
    use it for the handful of behaviours you want explained exactly. `--smoothness K` first
    checks that the run is smooth enough for metagradients to predict anything."""

    run: Path = option(help="A run folder from `attrib train`.")
    replicas: tuple[str, ...] = option(
        (),
        separator=",",
        help="Other runs of RUN's recipe on its rows with other seeds (`attrib train --seed`); "
        "each is replayed for the same queries and the scores are the mean over RUN and "
        "them: what the rows do in runs like RUN, whatever their batch order. For a "
        "checkpoint whose run was not recorded: train RUN and its replicas from its base "
        "model with its recipe (docs/magic.md).",
    )
    queries: Path = option(
        help="Query store: its rows are the queries (featurize them from RUN/model, "
        "--no-gradients is enough)."
    )
    output: str | None = option(
        None,
        choices=OUTPUTS,
        help="The query's output function (default: margin for classifiers, loss otherwise).",
    )
    top: int = option(10, help="Training rows listed per query.")
    per_token: bool = option(
        False,
        help="Language models: one row per completion token of each query (each token's share "
        "of the loss); a query's token rows sum to its sequence scores.",
    )
    out: Path | None = option(
        None,
        help="Write all scores to a .npy: (queries x training rows) float32.",
        output="file",
        suffixes=(".npy",),
    )
    block: int = option(8, help="Queries whose adjoints are carried through the run together.")
    cache: Path | None = option(
        None,
        help="Folder of the per-block results a killed run resumes from (default: RUN/magic; "
        "give one for a run folder you cannot write).",
        output="folder",
    )
    shard: str = option(
        "0/1",
        help="This array job's share i/n of the query blocks, e.g. "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT (the last job to finish reports).",
    )
    fsdp: bool = option(
        False,
        help="Shard the run's weights, optimizer state and the queries' adjoints over the "
        "launch's processes, for a run too large for one process's memory: every process "
        "replays every step on the whole batch (memory is split, not time), the weights "
        "gathered inside each step's graph; the scores equal one process's within float "
        "tolerance.",
    )
    smoothness: int = option(
        0,
        help="Before scoring, replay the run K times with a random --drop of the rows removed "
        "and compare each query's output change with the metagradient's prediction.",
    )
    smoothness_queries: int = option(
        8, help="Queries (the first ones) whose output changes the smoothness check compares."
    )
    drop: float = option(0.01, help="Fraction of rows each smoothness check removes.")
    preview: bool = option(True, help="Show text snippets, labels, image paths.")
    progress: bool = option(True, help="Show a progress bar on stderr.", cli=False)

    def check(self) -> None:
        if not (Path(self.run) / "run.json").is_file():
            raise AttribError(f"--run {self.run} is not a recorded run (no run.json); attrib train")
        for replica in self.replicas:
            if not (Path(replica) / "run.json").is_file():
                raise AttribError(
                    f"--replicas {replica} is not a recorded run (no run.json); attrib train"
                )
        existing_store(self.queries, "--queries")
        super().check()
        for name in ("top", "block", "smoothness_queries"):
            at_least(getattr(self, name), 1, "--" + name.replace("_", "-"))
        at_least(self.smoothness, 0, "--smoothness")
        ArrayTask.parse(self.shard)
        if not 0 < self.drop < 1:
            raise AttribError("--drop must be between 0 and 1")
