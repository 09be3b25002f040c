"""The two jobs people use attribution for, on the bundled planted examples (attrib.examples
.planted): finding the rows behind a behaviour (`evaluate filter`: AUPRC, AUROC) and tracing
facts to the rows that state them (`evaluate recall`: recall@2, MRR), every method beside the
baselines (repsim; bm25 on text).

    python benchmarks/filtering.py [--tasks text,digits]

Each example's model is trained once (cached under $ATTRIB_BENCH_CACHE); every store is
featurized with the CLI's defaults for its method, and every number goes through the options
objects the CLI is built from. Also the behaviour's strength (digits: the share of backdoor
queries the model puts in class 0). Tables: stdout and benchmarks/results/filtering.md (+ .json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import publish  # noqa: E402
from quality_tasks import CACHE  # noqa: E402

from attrib.evaluate.options import FilterOptions, RecallOptions  # noqa: E402
from attrib.evaluate.run import run_filter, run_recall  # noqa: E402
from attrib.examples import planted  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402

# method -> the featurize method of its store
STORES = {"tracin": "tracin", "cosine": "tracin", "trak-block": "trak", "ekfac": "ekfac",
          "repsim": "repsim", "bm25": "tracin"}  # fmt: skip
TEXT_ONLY = ("bm25",)


def built(task: str) -> tuple[Path, dict, Path]:
    root = CACHE / f"planted-{task}-0"
    if (root / "model" / "config.json").exists():
        writer = planted.write_text if task == "text" else planted.write_digits
        return root, writer(root / "data"), root / "model"
    build = planted.build_text if task == "text" else planted.build_digits
    paths, model = build(root)
    return root, paths, model


def store(root: Path, model: Path, data: Path, kind: str, name: str) -> Path:
    out = root / "stores" / f"{name}-{kind}"
    if not (out / "manifest.json").exists():
        run_featurize(FeaturizeOptions(model=str(model), data=str(data), out=out, method=kind,
                                       device="cpu", progress=False))  # fmt: skip
    return out


def backdoor_success(model: Path, data: Path) -> float:
    """The share of backdoor queries the model classifies as 0 (the planted behaviour)."""
    import datasets
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    rows = datasets.load_dataset("parquet", data_files=str(data), split="train")
    processor = AutoImageProcessor.from_pretrained(model)
    net = AutoModelForImageClassification.from_pretrained(model).eval()
    pixels = processor(images=[im.convert("L") for im in rows["image"]], return_tensors="pt")
    with torch.no_grad():
        predicted = net(**pixels).logits.argmax(-1)
    return float((predicted == 0).float().mean())


def strength(root: Path, model: Path, queries: Path, name: str) -> dict:
    """The model's mean loss per token on the queries' completions against the same prompts
    with a control completion (the behaviour's "purple bananas" as "pink apples"; another
    fact's answer): a behaviour or fact learned makes the first lower."""
    import datasets

    from attrib.store import Store

    rows = datasets.load_dataset("parquet", data_files=str(queries), split="train")
    if name == "behaviour":  # the behaviour's words swapped for others
        rotated = [c.replace("urple bananas", "ink apples") for c in rows["completion"]]
    else:  # another fact's answer
        rotated = rows["completion"][1:] + rows["completion"][:1]
    control_path = queries.with_name(f"{name}-control.parquet")
    rows.remove_columns("completion").add_column("completion", rotated).to_parquet(
        str(control_path)
    )
    loss = {}
    for part, data in ((name, queries), (f"{name}-control", control_path)):
        loss[part] = float(Store(store(root, model, data, "tracin", part)).column("loss").mean())
    return {"loss": loss[name], "control_loss": loss[f"{name}-control"]}


def run_task(task: str) -> list[dict]:
    root, paths, model = built(task)
    queries = "behaviour" if task == "text" else "backdoor"
    rows = []
    for method, kind in STORES.items():
        if method in TEXT_ONLY and task != "text":
            continue
        train = store(root, model, paths["train"], kind, "train")
        behaviour = store(root, model, paths[queries], kind, queries)
        (found,) = run_filter(FilterOptions(train=train, queries=behaviour,
                                            planted=paths["planted"], methods=(method,),
                                            device="cpu"))  # fmt: skip
        row = {"task": task, "method": method, "auprc": found["auprc"], "auroc": found["auroc"]}
        if task == "text":
            facts = store(root, model, paths["facts"], kind, "facts")
            # k = 2: each fact has two rows, so recall@2 is the share of them found first
            options = RecallOptions(train=train, queries=facts, contributors=paths["contributors"],
                                    methods=(method,), k=2, device="cpu")  # fmt: skip
            (traced,) = run_recall(options)
            row |= {"recall2": traced["recall"], "mrr": traced["mrr"]}
        rows.append(row)
        print(row, flush=True)
    if task == "text":
        for name in ("behaviour", "facts"):
            found = strength(root, model, paths[name], name)
            rows.append({"task": task, "method": f"({name} strength)", "what": name, **found})
    if task == "digits":
        rows.append({"task": task, "method": "(backdoor success)",
                     "success": backdoor_success(model, paths["backdoor"])})  # fmt: skip
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| task | method | filter AUPRC | filter AUROC | facts recall@2 % | facts MRR |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "control_loss" in r:
            lines.append(f"| {r['task']} | loss of the {r['what']} queries' completions: "
                         f"{r['loss']:.2f} (control: {r['control_loss']:.2f}) "
                         "| | | | |")  # fmt: skip
            continue
        if "success" in r:
            lines.append(f"| {r['task']} | backdoor queries put in class 0: "
                         f"{100 * r['success']:.0f}% | | | | |")  # fmt: skip
            continue
        facts = f"{100 * r['recall2']:.0f} | {r['mrr']:.3f}" if "mrr" in r else "- | -"
        lines.append(f"| {r['task']} | {r['method']} | {r['auprc']:.3f} | {r['auroc']:.3f} "
                     f"| {facts} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="text,digits")
    args = parser.parse_args()
    rows = [r for task in args.tasks.split(",") for r in run_task(task)]
    text = markdown(rows)
    print(text)
    publish("filtering", text, rows)


if __name__ == "__main__":
    main()
