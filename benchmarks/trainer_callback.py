"""Attribution while you train: what AttribCallback costs, and what TracInCP buys.

    python benchmarks/trainer_callback.py [--task digits|pydoc] [--checkpoints 3] [--method ekfac]

On digits or pydoc (the bundled example's data, init and recipe, trained by the Hugging Face
Trainer):
training time without the callback, with it (3 checkpoints, training and evaluation stores
at each), and featurizing the same saved checkpoints afterwards (`run_featurize` with the
options `attrib featurize` builds); then LDS of the TracInCP ensemble against the final
checkpoint's TracIn, EK-FAC and trak-block, on the evaluation queries against the
seed-random ground truth `benchmarks/magic.py --seed-random` built for this data and recipe
(models retrained from other seeds; run that first, `--queries 32 --subsets 32` for pydoc).
Table: stdout and benchmarks/results/trainer-callback-TASK.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from quality_tasks import CACHE  # noqa: E402

from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.examples import digits, pydoc_text  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.integrations.trainer import AttribCallback  # noqa: E402

RESULTS = Path(__file__).parent / "results"
QUERIES = {"digits": 64, "pydoc": 32}  # the ground truths' evaluation queries


def train(task: str, root: Path, out: Path, callbacks, checkpoints: int) -> float:
    import datasets
    import transformers

    recipe = {"digits": digits, "pydoc": pydoc_text}[task].RECIPE
    raw = datasets.load_dataset(
        "parquet", data_files=str(root / "data" / "train.parquet"), split="train"
    )
    if task == "digits":
        processor = transformers.AutoImageProcessor.from_pretrained(root / "init")
        model = transformers.AutoModelForImageClassification.from_pretrained(root / "init")

        def encode(rows):
            images = [image.convert("L") for image in rows["image"]]
            pixels = processor(images=images)["pixel_values"]
            return {"pixel_values": pixels, "labels": rows["label"]}

        dataset, collator = raw.with_transform(encode), None
    else:
        processor = transformers.AutoTokenizer.from_pretrained(root / "init")
        processor.pad_token = processor.pad_token or processor.eos_token
        model = transformers.AutoModelForCausalLM.from_pretrained(root / "init")
        dataset = raw.map(
            lambda row: processor(row["text"], truncation=True), remove_columns=["text"]
        )
        collator = transformers.DataCollatorForLanguageModeling(processor, mlm=False)
    steps = recipe.epochs * -(-len(raw) // recipe.batch_size)
    args = transformers.TrainingArguments(
        output_dir=str(out), num_train_epochs=recipe.epochs, learning_rate=recipe.lr,
        per_device_train_batch_size=recipe.batch_size, weight_decay=recipe.weight_decay,
        lr_scheduler_type=recipe.schedule, seed=recipe.seed, save_steps=-(-steps // checkpoints),
        logging_steps=10, report_to=[], use_cpu=True, disable_tqdm=True,
        remove_unused_columns=False, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator,
        processing_class=processor, callbacks=callbacks,
    )  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def featurize_after(root: Path, out: Path, dest: Path, method: str, queries: int) -> float:
    start = time.perf_counter()
    for checkpoint in sorted(out.glob("checkpoint-*")):
        for role, count in (("train", None), ("eval", queries)):
            run_featurize(FeaturizeOptions(
                model=str(checkpoint), data=str(root / "data" / f"{role}.parquet"),
                out=dest / checkpoint.name / role, method=method, max_examples=count,
                device="cpu", progress=False, overwrite=True,
            ))  # fmt: skip
    return time.perf_counter() - start


def lds(train: Path, queries: Path, truth: Path, method: str) -> dict:
    (row,) = run_lds(
        LdsOptions(train=train, queries=queries, groundtruth=truth, methods=(method,),
                   device="cpu")
    )  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits", choices=sorted(QUERIES))
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument("--method", default="ekfac")
    args = parser.parse_args()
    task, queries = args.task, QUERIES[args.task]
    root = CACHE / f"magic-{task}"
    truth = root / f"seed-random-{queries}.npz"
    if not truth.exists():
        sys.exit(f"{truth} is missing: run benchmarks/magic.py --tasks {task} --seed-random")
    work = root / "trainer-callback"
    shutil.rmtree(work, ignore_errors=True)
    plain = train(task, root, work / "plain", [], args.checkpoints)
    callback = AttribCallback(
        work / "stores", data=str(root / "data" / "train.parquet"), method=args.method,
        queries={"eval": {"data": str(root / "data" / "eval.parquet"), "max_examples": queries}},
        device="cpu",
    )  # fmt: skip
    with_callback = train(task, root, work / "with", [callback], args.checkpoints)
    after = featurize_after(root, work / "plain", work / "after", args.method, queries)
    stores = work / "stores"
    final = sorted(stores.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    trak_final = work / "trak-final"
    for role, count in (("train", None), ("eval", queries)):
        run_featurize(FeaturizeOptions(
            model=str(work / "with" / final.name), data=str(root / "data" / f"{role}.parquet"),
            out=trak_final / role, method="trak", max_examples=count, device="cpu",
            progress=False,
        ))  # fmt: skip
    rows = [
        ("TracInCP (callback ensemble)", lds(stores / "tracincp" / "train",
                                             stores / "tracincp" / "eval", truth, "tracin")),
        (f"tracin, {final.name}", lds(final / "train", final / "eval", truth, "tracin")),
        (f"ekfac, {final.name}", lds(final / "train", final / "eval", truth, "ekfac")),
        (f"trak-block, {final.name}", lds(trak_final / "train", trak_final / "eval", truth,
                                           "trak-block")),
    ]  # fmt: skip
    lines = [
        f"### {task}, Trainer, {args.checkpoints} checkpoints, callback method {args.method}",
        "",
        "| run | seconds | vs training alone |",
        "|---|---|---|",
        f"| training alone | {plain:.1f} | 1.00 |",
        f"| training with AttribCallback | {with_callback:.1f} | {with_callback / plain:.2f} |",
        f"| training + featurizing the checkpoints afterwards | {plain + after:.1f} | "
        f"{(plain + after) / plain:.2f} |",
        "",
        "| scores | LDS % (other seeds, keep 0.5) | ± CI+subsets |",
        "|---|---|---|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {100 * r['lds']:.2f} | {100 * r['ci_subsets']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"trainer-callback-{task}.md").write_text(text)


if __name__ == "__main__":
    main()
