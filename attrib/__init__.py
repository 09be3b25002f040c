"""attrib: training data attribution for Hugging Face checkpoints.

The library is the CLI without the printing: each command is one options class and one
function, both exported here (imported on first use, so `import attrib` stays light):

    from attrib import FeaturizeOptions, run_featurize, ScoreOptions, run_score
    run_featurize(FeaturizeOptions(model="gpt2", data="my/data", out="train-store"))
    records = run_score(ScoreOptions(train="train-store", query=("some text",)))

Functions are named run_<command> because `attrib.featurize`, `attrib.score`, ... are the
packages of those stages.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "FeaturizeOptions": "attrib.featurize.options",
    "run_featurize": "attrib.featurize.run",
    "ScoreOptions": "attrib.score.options",
    "run_score": "attrib.score.run",
    "LearnOptions": "attrib.weights.options",
    "run_learn": "attrib.weights.run",
    "load_weights": "attrib.weights.artifact",
    "LdsOptions": "attrib.evaluate.options",
    "RetrainOptions": "attrib.evaluate.options",
    "MislabelOptions": "attrib.evaluate.options",
    "RecallOptions": "attrib.evaluate.options",
    "FilterOptions": "attrib.evaluate.options",
    "GroupsOptions": "attrib.evaluate.options",
    "TailPatchOptions": "attrib.evaluate.options",
    "run_lds": "attrib.evaluate.run",
    "run_retrain": "attrib.evaluate.run",
    "run_mislabel": "attrib.evaluate.run",
    "run_recall": "attrib.evaluate.run",
    "run_filter": "attrib.evaluate.run",
    "run_groups": "attrib.evaluate.run",
    "run_tail_patch": "attrib.evaluate.run",
    "GenerateOptions": "attrib.generate.options",
    "run_generate": "attrib.generate.run",
    "DemoOptions": "attrib.demo.options",
    "run_demo": "attrib.demo.run",
    "TrainOptions": "attrib.training.options",
    "run_train": "attrib.training.train",
    "Recipe": "attrib.training.recipe",
    "MagicOptions": "attrib.training.magic_options",
    "run_magic": "attrib.training.magic_run",
    "PerturbOptions": "attrib.perturb.options",
    "run_perturb": "attrib.perturb.run",
    "EnsembleOptions": "attrib.store.ensemble_options",
    "run_ensemble": "attrib.store.ensemble_options",
    "IndexOptions": "attrib.index.options",
    "build_index": "attrib.index.build",
    "InspectOptions": "attrib.summary",
    "store_summary": "attrib.summary",
    "Store": "attrib.store",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'attrib' has no attribute {name!r}")
