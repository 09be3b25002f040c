"""The demo's measurements: one retraining ground truth for the validation and evaluation
queries together, the method chosen on the validation queries only, and the learned
weights' effect on the evaluation queries with its paired CI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from attrib import log
from attrib.evaluate.groundtruth import GroundTruth, load_groundtruth
from attrib.evaluate.lds import evaluate_lds, evaluate_lds_prepared, paired_to_first
from attrib.evaluate.options import RetrainOptions
from attrib.evaluate.retrain import retrain
from attrib.featurize.options import FeaturizeOptions
from attrib.featurize.run import run_featurize
from attrib.methods import get_method
from attrib.score import queries as query_features
from attrib.score.run import weight_vector
from attrib.store import Store


def checks_data(data: dict[str, Path]) -> tuple[Path, int]:
    """The validation rows followed by the evaluation rows, in one file: one retraining
    gives both query sets their outputs. Returns the file and the number of validation rows."""
    import pyarrow.parquet as pq

    path = data["val"].parent / "val+eval.parquet"
    val = pq.read_table(data["val"])
    if not path.exists():
        import pyarrow as pa

        from attrib.atomic import atomic_path

        with atomic_path(path, ".parquet") as tmp:
            pq.write_table(pa.concat_tables([val, pq.read_table(data["eval"])]), tmp)
    return path, val.num_rows


def data_fingerprints(data: dict[str, Path]) -> dict[str, str]:
    """What a shipped ground truth was made for: the content of the training rows and of the
    query rows (val+eval, in that order), as `rows_fingerprint` hashes them."""
    from attrib.data import DataRef, open_dataset, rows_fingerprint

    path, _ = checks_data(data)
    out = {}
    for role, source in (("train", data["train"]), ("queries", path)):
        dataset = open_dataset(DataRef(str(source)))
        columns = {c: c for c in dataset.column_names}
        out[f"{role}_content"] = rows_fingerprint(dataset, len(dataset), columns)
    return out


def shipped(path: Path, data: dict[str, Path]) -> dict[str, GroundTruth] | None:
    """A shipped ground truth as {"eval"} (or {"val", "eval"} when it covers both), or None
    when it was made for other data than the task's here."""
    truth = load_groundtruth(path)
    made_for = {k: truth.extra.get(k) for k in ("train_content", "queries_content")}
    if made_for["train_content"] is None:  # made for the evaluation queries only (diffusion)
        return {"eval": truth}
    if made_for != data_fingerprints(data):
        return None
    val_rows = int(truth.extra["val_rows"])
    return {
        "val": _columns(truth, slice(0, val_rows)),
        "eval": _columns(truth, slice(val_rows, None)),
    }


def groundtruths(
    model: Path, train: Store, data: dict[str, Path], root: Path, subsets: int, recipe
) -> dict[str, GroundTruth]:
    """{"val", "eval"}: `subsets` models retrained on random halves of the training set
    (cached), each query set's outputs under them."""
    path, val_rows = checks_data(data)
    queries = root / "stores" / "val+eval"
    if not (queries / "manifest.json").exists() or not Store(queries).manifest.get("complete"):
        run_featurize(
            FeaturizeOptions(
                model=str(model), data=str(path), out=queries, no_gradients=True,
                progress=False, overwrite=True,
            )
        )  # fmt: skip
    out = root / f"groundtruth-{subsets}-val+eval.npz"
    if not out.exists():
        log.info(f"retraining {subsets} models on random halves of the training set for LDS")
        flags = {k: v for k, v in recipe.to_dict().items() if k != "momentum"}
        retrain(
            RetrainOptions(
                train=train.path, queries=queries, out=out, subsets=subsets,
                progress=not log.is_quiet(), **flags,
            )
        )  # fmt: skip
    truth = load_groundtruth(out)
    return {
        "val": _columns(truth, slice(0, val_rows)),
        "eval": _columns(truth, slice(val_rows, None)),
    }


def _columns(truth: GroundTruth, queries: slice) -> GroundTruth:
    extra = dict(truth.extra)
    if "outputs_by_seed" in extra:
        extra["outputs_by_seed"] = np.asarray(extra["outputs_by_seed"])[:, :, queries]
    return replace(truth, outputs=truth.outputs[:, queries], extra=extra)


def choose(candidates: dict[str, dict[str, Store]], truth: GroundTruth) -> dict[str, float]:
    """Each candidate method's LDS (unweighted) on the validation queries: the demo explains
    and learns weights for the best. The evaluation queries play no part in the choice."""
    return {
        method: evaluate_lds(stores["train"], stores["val"], truth, method).lds
        for method, stores in candidates.items()
    }


def weights_effect(train: Store, queries: Store, truth: GroundTruth, method: str, weights: Path):
    """[unweighted, weighted] LDS records on the evaluation queries; the second carries
    `vs_first` and its paired 95% CI `vs_first_ci` (resampling queries and subsets)."""
    features = query_features.from_store(train, queries).features
    prepared = get_method(method, train).prepare()
    results = [
        evaluate_lds_prepared(
            train, features, truth, prepared, weight_vector(train, path), name, subsets_ci=False
        )
        for name, path in (("unweighted", None), ("weighted", weights))
    ]
    return paired_to_first(results, truth)
