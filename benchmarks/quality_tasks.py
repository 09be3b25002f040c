"""Building the quality benchmark's tasks once (cached): data, checkpoint, stores, retraining
ground truth. `quality.py` prints the tables; this module is what it (and experiments) reuse.

Roles are disjoint (the paper's Table 7): `train` trains the model, `learn` learns weights,
`val` chooses hyper-parameters (k), `eval` is only ever used for the reported LDS.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from attrib.evaluate.groundtruth import GroundTruth, load_groundtruth, save_groundtruth
from attrib.evaluate.options import RetrainOptions
from attrib.evaluate.retrain import retrain
from attrib.featurize.options import FeaturizeOptions
from attrib.featurize.run import run_featurize
from attrib.store import Store

CACHE = Path(os.environ.get("ATTRIB_BENCH_CACHE", Path.home() / ".cache" / "attrib-bench"))


@dataclass
class Task:
    name: str
    root: Path
    model: Path
    data: dict[str, Path]
    recipe: object
    proj_dim: int | None = 16  # None: exact per-example gradients (--proj-dim full)
    retrain: dict = field(default_factory=dict)  # extra RetrainOptions (seeds, timesteps, ...)
    query_roles: tuple[str, ...] = ("val", "eval")  # the roles the ground truth covers

    def store(self, role: str, output: str) -> Store:
        """The store of a role's rows; `output` names the featurize method (trak | tracin)."""
        out = self.root / "stores" / f"{role}-{output}-p{self.proj_dim or 'full'}"
        if not _complete(out):
            run_featurize(
                FeaturizeOptions(
                    model=str(self.model),
                    data=str(self.data[role]),
                    out=out,
                    method=output,
                    proj_dim=self.proj_dim or "full",
                    batch_size=64,
                    progress=False,
                    device="cpu",
                    store_dtype="float32",
                    overwrite=True,
                )
            )
        return Store(out)

    def groundtruth(self, subsets: int) -> dict[str, GroundTruth]:
        """Ground truth for every query role (val, eval, ...), from one retraining run over
        all of them (their images or texts concatenated in role order)."""
        name = "valeval" if self.query_roles == ("val", "eval") else "groundtruth-queries"
        both = self.root / "data" / f"{name}.parquet"
        parts = [
            datasets.load_dataset("parquet", data_files=str(self.data[r]), split="train")
            for r in self.query_roles
        ]
        if not both.exists():
            column = "text" if "text" in parts[0].column_names else "image"
            joined = [
                p.select_columns([column]).cast(parts[0].select_columns([column]).features)
                for p in parts
            ]
            datasets.concatenate_datasets(joined).to_parquet(str(both))
        self.data[name] = both
        out = self.root / f"groundtruth-{subsets}.npz"
        shipped = Path(__file__).parent / "groundtruth" / f"{self.name}-{subsets}x2.npz"
        if not out.exists() and shipped.exists():  # built once, committed (1 h of CPU)
            shutil.copyfile(shipped, out)
        if not out.exists():
            recipe = {k: v for k, v in self.recipe.to_dict().items() if k != "momentum"}
            retrain(
                RetrainOptions(
                    train=self.store("train", "trak").path,
                    queries=self.store(name, "trak").path,
                    out=out,
                    subsets=subsets,
                    **recipe,
                    **self.retrain,
                    device="cpu",
                    progress=True,
                )
            )
        truth = load_groundtruth(out)
        result, start = {}, 0
        for role, part in zip(self.query_roles, parts):
            cols = slice(start, start + len(part))
            start += len(part)
            extra = {}
            if "outputs_by_seed" in truth.extra:
                extra["outputs_by_seed"] = truth.extra["outputs_by_seed"][:, :, cols]
            split = GroundTruth(truth.masks, truth.outputs[:, cols], truth.higher_is_better, extra)
            save_groundtruth(self.root / f"groundtruth-{subsets}-{role}.npz", split)
            result[role] = split
        return result


def _complete(out: Path) -> bool:
    """A finished store (a run killed midway leaves one Store refuses to open: redo it)."""
    from attrib.errors import AttribError

    try:
        return (out / "manifest.json").exists() and bool(Store(out).manifest.get("complete"))
    except AttribError:
        return False


def example_task(name: str, seed: int = 0) -> Task:
    """A bundled example (digits or pydoc), built once under the cache."""
    from attrib.examples import digits, pydoc_text

    example = {"digits": digits, "pydoc": pydoc_text}[name]
    root = CACHE / f"{name}-{seed}"
    if not (root / "model").exists():
        example.build(root, seed)
    paths = {r: root / "data" / f"{r}.parquet" for r in ("train", "learn", "val", "eval")}
    return Task(name, root, root / "model", paths, example.RECIPE)


def digits_ddpm_task(seed: int = 0) -> Task:
    """The digits as a tiny DDPM. Its ground truth averages 2 seeds per subset (and reports
    their split-half reliability) and each query's loss over 50 of the 100 timesteps, with a
    noise seed of its own (featurize uses seed 0 and 10 timesteps)."""
    from attrib.examples import digits_ddpm

    root = CACHE / f"digits-ddpm-{seed}"
    if not (root / "model").exists():
        digits_ddpm.build(root, seed)
    paths = {r: root / "data" / f"{r}.parquet" for r in ("train", "learn", "val", "eval")}
    paths.update(generated_queries(root, {"gen-learn": 60, "gen-val": 40, "gen-eval": 80}))
    retrain = {"seeds": 2, "timesteps": 50, "noise_seed": 1}
    roles = ("val", "eval", "gen-val", "gen-eval")
    return Task(
        "digits-ddpm",
        root,
        root / "model",
        paths,
        digits_ddpm.RECIPE,
        retrain=retrain,
        query_roles=roles,
    )


def generated_queries(root: Path, sizes: dict[str, int]) -> dict[str, Path]:
    """Images sampled from the task's model with their trajectories (`attrib generate`, its
    defaults), split into roles: Journey-TRAK's queries and generated-image LDS."""
    from attrib.generate.options import GenerateOptions
    from attrib.generate.run import run_generate

    folder = root / "generated"
    if not (folder / "queries.parquet").exists():
        total = sum(sizes.values())
        run_generate(GenerateOptions(model=str(root / "model"), out=folder, n=total, device="cpu"))
    rows = datasets.load_dataset(
        "parquet", data_files=str(folder / "queries.parquet"), split="train"
    )
    paths, start = {}, 0
    for role, count in sizes.items():
        paths[role] = root / "data" / f"{role}.parquet"
        if not paths[role].exists():
            rows.select(range(start, start + count)).to_parquet(str(paths[role]))
        start += count
    return paths


def digits_task(seed: int = 0) -> Task:
    return example_task("digits", seed)


def pydoc_task(seed: int = 0) -> Task:
    return example_task("pydoc", seed)


TASKS = {"digits": digits_task, "pydoc": pydoc_task, "digits-ddpm": digits_ddpm_task}
