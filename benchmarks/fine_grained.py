"""Fine-grained attribution: recall@10 per attribute with attribute-specific learned weights
(the main paper's Table 6 shape, on `attrib.examples.shapes_sd`).

    python benchmarks/fine_grained.py [--method dtrak] [--groups module]

Training images each show one concept (20 per colour, shape and background); evaluation
queries are generated from "a {colour} {shape} on {background}" over every combination; a
query's contributors for an attribute are the 20 training images of its value. One weights
file per attribute is learned (`learn-weights` defaults) from queries generated with prompts
that name that attribute only ("a {colour} object"). Rows: unweighted and each attribute's
weights; columns: recall@10 (%) of each attribute's contributors and their sum. Everything
goes through the options objects the CLI is built from. Results:
benchmarks/results/fine-grained.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from quality_tasks import CACHE  # noqa: E402

from attrib import log  # noqa: E402
from attrib.evaluate.options import RecallOptions  # noqa: E402
from attrib.evaluate.run import run_recall  # noqa: E402
from attrib.examples import shapes_sd  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.generate.options import GenerateOptions  # noqa: E402
from attrib.generate.run import run_generate  # noqa: E402
from attrib.store import Store  # noqa: E402
from attrib.weights.options import LearnOptions  # noqa: E402
from attrib.weights.run import run_learn  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ATTRIBUTES = tuple(shapes_sd.ATTRIBUTES)
FOCUS_PER_VALUE = 8
# The task's UNet is trained without caption dropout, so its unconditional prediction means
# nothing: sample without classifier-free guidance.
GUIDANCE = 1.0


def _generate(model: Path, out: Path, prompt: str, values: list[str], n: int) -> Path:
    if not (out / "queries.parquet").exists():
        run_generate(
            GenerateOptions(
                model=str(model),
                out=out,
                prompt=(prompt,),
                values=tuple(values),
                n=n,
                trajectory=0,
                guidance=GUIDANCE,
                device="cpu",
                overwrite=True,
            )
        )
    return out


def _values(*attributes: str) -> list[str]:
    return [f"{a}={','.join(shapes_sd.ATTRIBUTES[a])}" for a in attributes]


def _store(model: Path, data: Path, out: Path, method: str) -> Store:
    if not (out / "manifest.json").exists() or not Store(out).manifest.get("complete"):
        run_featurize(
            FeaturizeOptions(
                model=str(model), data=str(data), out=out, method=method, device="cpu",
                progress=False, overwrite=True,
            )
        )  # fmt: skip
    return Store(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="dtrak")
    parser.add_argument("--groups", default=LearnOptions.default("groups"))
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    log.set_quiet(True)
    start = time.time()
    root = CACHE / "shapes-sd-0"
    if not (root / "model" / "model_index.json").exists():
        shapes_sd.build(root)
    data, model = root / "data" / "train.parquet", root / "model"
    built = time.time() - start
    queries = _generate(
        model, root / "queries" / "eval", shapes_sd.QUERY_PROMPT, _values(*ATTRIBUTES), 1
    )
    focus = {
        a: _generate(
            model, root / "queries" / f"focus-{a}", shapes_sd.FOCUS_PROMPTS[a], _values(a),
            FOCUS_PER_VALUE,
        )
        for a in ATTRIBUTES
    }  # fmt: skip
    method = args.method
    stores = root / "stores" / method
    train = _store(model, data, stores / "train", method)
    evaluation = _store(model, queries, stores / "eval", method)
    weights = {"none": None}
    for attribute, folder in focus.items():
        learn_store = _store(model, folder, stores / f"focus-{attribute}", method)
        out = root / "weights" / f"{method}-{attribute}-{args.groups}.safetensors"
        if not out.exists():
            run_learn(
                LearnOptions(
                    train=train.path, queries=learn_store.path, out=out, method=method,
                    groups=args.groups,
                )
            )  # fmt: skip
        weights[attribute] = out
    sets = shapes_sd.contributors(queries / "queries.parquet", data)
    rows = []
    for name, path in weights.items():
        row = {"weights": name}
        for attribute in ATTRIBUTES:
            file = root / f"contributors-{attribute}.json"
            file.write_text(json.dumps(sets[attribute]))
            (record,) = run_recall(
                RecallOptions(
                    train=train.path, queries=evaluation.path, contributors=file, k=args.k,
                    methods=(method,), weights=(str(path) if path else "none",), device="cpu",
                )
            )  # fmt: skip
            row[attribute] = (record["recall"], record["ci"])
        row["all"] = sum(row[a][0] for a in ATTRIBUTES)
        rows.append(row)
    seconds = time.time() - start
    command = "python benchmarks/fine_grained.py " + " ".join(sys.argv[1:])
    lines = [
        f"Command: `{command.strip()}` ({seconds / 60:.1f} min, of which {built / 60:.1f} "
        f"building the task; {evaluation.num_examples} evaluation queries, "
        f"{FOCUS_PER_VALUE * 5} weight-learning queries per attribute, {method}, "
        f"--groups {args.groups})",
        "",
        f"| weights learned for | recall@{args.k} colour | shape | background | all |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{100 * r[a][0]:.1f} ± {100 * r[a][1]:.1f}" for a in ATTRIBUTES]
        lines.append(f"| {r['weights']} | " + " | ".join(cells) + f" | {100 * r['all']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    suffix = f"-{method}-{args.groups}"
    (RESULTS / f"fine-grained{suffix}.md").write_text(text)
    (RESULTS / f"fine-grained{suffix}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
