"""Every stage under one process, two and four processes (torchrun) and two nodes simulated
on this machine (two torchrun agents meeting through c10d on localhost), through the console
script with its defaults: wall time, peak RSS per process, and whether the result equals one
process's. Plus `featurize --fsdp`, `train --fsdp`, `evaluate retrain --fsdp` and `perturb
--fsdp` (GPT-2 sharded over 2 processes) against unsharded.

    python benchmarks/scale_out.py [--out benchmarks/results/scale-out.md]

The task: the bundled digits example (a ResNet, 1,600 training rows, EK-FAC at p = 32, 100
queries), a run `attrib train` recorded on it (1 epoch), 24 retrained subsets (2 epochs
each), 24 same-run replays, magic for 24 queries; then a GPT-2 of 6 blocks of width 512
featurized (EK-FAC), trained for an epoch, retrained on 4 subsets of its 256 rows (1
epoch) and perturbed into 4 Daunce copies, unsharded and with --fsdp over 2 processes.
Each process gets one thread (OMP_NUM_THREADS=1), so two processes use both cores of a
2-core machine (four share them); the ratios are to one process with one thread. Peak RSS
comes from /usr/bin/time around each process (the launcher's own agent is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ATTRIB = str(Path(sys.executable).parent / "attrib")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
TIMED = ["/usr/bin/time", "-f", "peak_kb=%M"]
MODES = ("1 process", "2 processes", "4 processes", "2 nodes")
LAST_ERR = [""]  # the last launch's stderr


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(mode: str, args: list) -> tuple[float, float, str]:
    """(wall seconds, peak GiB of the largest process, stdout) of `attrib ARGS` in `mode`."""
    program = [*TIMED, ATTRIB, *map(str, args)]
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    if mode == "1 process":
        commands = [program]
    elif mode.endswith("processes"):
        count = mode.split()[0]
        commands = [[*torchrun, "--nproc-per-node", count, "--no-python", "--", *program]]
    else:
        port = _port()
        agent = [*torchrun, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"]
        agent += ["--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "bench", "--no-python"]
        commands = [[*agent, "--", *program]] * 2
    started = time.perf_counter()
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for c in commands
    ]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - started
    err = "".join(e for _, e in outs)
    LAST_ERR[0] = err
    if any(p.returncode for p in procs):
        raise SystemExit(f"{mode}: attrib {' '.join(map(str, args))} failed\n{err[-3000:]}")
    # /usr/bin/time's line was missing once from a launch that succeeded: nan, not a crash.
    peaks = [int(k) for k in re.findall(r"peak_kb=(\d+)", err)]
    peak = max(peaks) / 2**20 if peaks else float("nan")
    return wall, peak, "".join(o for o, _ in outs)


def same_store(a: Path, b: Path) -> str:
    names = sorted(p.name for p in (a / "shards").iterdir())
    if names != sorted(p.name for p in (b / "shards").iterdir()):
        return "other shards"
    same = all((a / "shards" / n).read_bytes() == (b / "shards" / n).read_bytes() for n in names)
    return "bitwise" if same else "differs"


def same_records(a: str, b: str) -> str:
    ra = [json.loads(line) for line in a.splitlines()]
    rb = [json.loads(line) for line in b.splitlines()]
    if [(r["query"], r["index"]) for r in ra] != [(r["query"], r["index"]) for r in rb]:
        return "other rows"
    gap = max(abs(x["score"] - y["score"]) / max(abs(x["score"]), 1e-30) for x, y in zip(ra, rb))
    return "same rows" + ("" if gap == 0 else f", rel. {gap:.0e}")


def same_run(a: Path, b: Path) -> str:
    """Whether two recorded runs hold the same tensors (snapshots and checkpoint)."""
    from safetensors.numpy import load_file

    names = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    if names != sorted(p.relative_to(b) for p in b.rglob("*.safetensors")):
        return "other files"
    for name in names:
        x, y = load_file(a / name), load_file(b / name)
        if x.keys() != y.keys() or not all(np.array_equal(x[k], y[k]) for k in x):
            return f"{name} differs"
    return "bitwise"


def same_arrays(a: Path, b: Path, key: str | None = None) -> str:
    x, y = (np.load(p)[key] if key else np.load(p) for p in (a, b))
    return "bitwise" if np.array_equal(x, y) else f"max diff {np.abs(x - y).max():.1e}"


def build(work: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import builders

    from attrib.examples import digits

    data = digits.write_data(
        work / "data", sizes={"train": 1000, "learn": 0, "val": 0, "eval": 100}
    )
    init = digits.init_model(work / "init")
    run = work / "run"
    launch("1 process", ["train", "--model", init, "--data", data["train"], "--out", run]
           + ["--epochs", "1", "--batch-size", "32", "--device", "cpu", "-q"])  # fmt: skip
    queries, few = work / "q", work / "q8"
    for out, extra in ((queries, []), (few, ["--max-examples", "24"])):
        launch("1 process", ["featurize", "--model", run / "model", "--data", data["eval"]]
               + ["--out", out, "--proj-dim", "32", "--method", "ekfac", "--device", "cpu", "-q"]
               + extra)  # fmt: skip
    texts = builders.sentences(256)
    gpt2 = _gpt2(work / "gpt2", builders.tiny_tokenizer(texts))
    text = builders.save_text_data(work / "text.parquet", texts)
    return {"data": data, "run": run, "queries": queries, "few": few, "gpt2": gpt2, "text": text}


def _gpt2(path: Path, tokenizer) -> Path:
    """A GPT-2 of 6 blocks of width 512 (19M parameters): big enough that its share shows."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=512, n_layer=6, n_head=8,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def stages(work: Path, inputs: dict, mode: str) -> list[tuple[str, list, object]]:
    """(stage, arguments, how to read its result) for one mode's own output folder."""
    out = work / mode.replace(" ", "-")
    model, q = inputs["run"] / "model", inputs["queries"]
    train = out / "train"
    both = ["--train", train, "--queries", q, "--device", "cpu", "-q"]
    return [
        ("featurize", ["featurize", "--model", model, "--data", inputs["data"]["train"],
                       "--out", train, "--method", "ekfac", "--proj-dim", "32",
                       "--device", "cpu", "-q"], train),
        ("score ekfac (factors fit)", ["score", "-t", train, "--queries", q, "--format", "jsonl",
                                "--method", "ekfac",
                                "--device", "cpu", "-q"], "stdout"),
        ("evaluate retrain (24 subsets)", ["evaluate", "retrain", *both, "--subsets", "24",
                                          "--epochs", "2", "--out", out / "gt.npz"],
         out / "gt.npz"),
        ("same-run ground truth (24)", ["evaluate", "retrain", *both, "--same-run",
                                       inputs["run"], "--subsets", "24",
                                       "--out", out / "same.npz"], out / "same.npz"),
        ("magic (24 queries, block 2)", ["magic", "--run", inputs["run"], "--queries",
                                        inputs["few"], "--block", "2",
                                        "--cache", out / "magic-cache", "--out",
                                        out / "magic.npy", "--device", "cpu", "-q",
                                        "--format", "jsonl"], out / "magic.npy"),
    ]  # fmt: skip


def _fsdp_training(work: Path, inputs: dict) -> list[tuple]:
    """`train` (1 epoch), `evaluate retrain` (4 subsets) and `perturb` (4 copies) of the
    GPT-2, unsharded and with --fsdp."""
    rows = []
    train = ["train", "--model", inputs["gpt2"], "--data", inputs["text"], "--epochs", "1"]
    train += ["--batch-size", "32", "--device", "cpu", "-q"]
    wall1, peak1, _ = launch("1 process", [*train, "--out", work / "lm-run-one"])
    wall2, peak2, _ = launch("2 processes", [*train[:-1], "--out", work / "lm-run", "--fsdp"])
    verdict = same_run(work / "lm-run-one", work / "lm-run")
    rows.append(("train GPT-2 (1 epoch)", "1 process", wall1, 1.0, peak1, "(reference)"))
    rows.append(("train GPT-2 --fsdp", "2 processes", wall2, wall1 / wall2, peak2, verdict))
    queries = work / "lm-q"
    featurize = ["featurize", "--model", inputs["gpt2"], "--data", inputs["text"]]
    launch("1 process", [*featurize, "--out", queries, "--max-examples", "8", "--device", "cpu"])
    retrain = ["evaluate", "retrain", "--train", work / "lm-one", "--queries", queries]
    retrain += ["--subsets", "4", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "-q"]
    wall1, peak1, _ = launch("1 process", [*retrain, "--out", work / "lm-gt-one.npz"])
    wall2, peak2, _ = launch(
        "2 processes", [*retrain[:-1], "--out", work / "lm-gt-fsdp.npz", "--fsdp"]
    )
    verdict = same_arrays(work / "lm-gt-one.npz", work / "lm-gt-fsdp.npz", "outputs")
    rows += [
        ("evaluate retrain GPT-2 (4 subsets)", "1 process", wall1, 1.0, peak1, "(reference)"),
        ("evaluate retrain GPT-2 --fsdp", "2 processes", wall2, wall1 / wall2, peak2, verdict),
    ]
    perturb = ["perturb", "--train", work / "lm-one", "--queries", queries, "--copies", "4"]
    perturb += ["--batch-size", "32", "--device", "cpu", "-q"]
    one, two = work / "lm-perturb-one", work / "lm-perturb-fsdp"
    wall1, peak1, _ = launch("1 process", [*perturb, "--out", one])
    wall2, peak2, _ = launch("2 processes", [*perturb[:-1], "--out", two, "--fsdp"])
    verdict = same_run(one / "copies", two / "copies")  # the copies' weights
    verdict = verdict if verdict != "bitwise" else same_store(one / "train", two / "train")
    return rows + [
        ("perturb GPT-2 (4 copies)", "1 process", wall1, 1.0, peak1, "(reference)"),
        ("perturb GPT-2 --fsdp", "2 processes", wall2, wall1 / wall2, peak2, verdict),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scale-out.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="attrib-scale-"))
    inputs = build(work)
    rows, firsts = [], {}
    for mode in MODES:
        for stage, argv, result in stages(work, inputs, mode):
            wall, peak, stdout = launch(mode, argv)
            if mode == MODES[0]:
                firsts[stage] = (wall, result, stdout)
                verdict = "(reference)"
            elif result == "stdout":
                verdict = same_records(firsts[stage][2], stdout)
            elif str(result).endswith(".npz"):
                verdict = same_arrays(firsts[stage][1], result, "outputs")
            elif str(result).endswith(".npy"):
                verdict = same_arrays(firsts[stage][1], result)
            else:
                verdict = same_store(firsts[stage][1], result)
            speedup = firsts[stage][0] / wall
            rows.append((stage, mode, wall, speedup, peak, verdict))
            line = f"{stage:32s} {mode:12s} {wall:6.1f} s  x{speedup:.2f}  {peak:.2f} GiB"
            print(f"{line}  {verdict}", file=sys.stderr)
    fsdp = ["featurize", "--model", inputs["gpt2"], "--data", inputs["text"], "--method", "ekfac"]
    fsdp += ["--device", "cpu", "-q"]
    wall1, peak1, _ = launch("1 process", [*fsdp, "--out", work / "lm-one"])
    wall2, peak2, _ = launch("2 processes", [*fsdp[:-1], "--out", work / "lm-fsdp", "--fsdp"])
    held = re.search(r"holds ([\d.]+) of ([\d.]+) MiB", LAST_ERR[0])
    verdict = same_store(work / "lm-one", work / "lm-fsdp")
    verdict += f"; {held[1]} of {held[2]} MiB of parameters a process"
    rows.append(("featurize GPT-2 (EK-FAC)", "1 process", wall1, 1.0, peak1, "(reference)"))
    rows.append(("featurize GPT-2 --fsdp", "2 processes", wall2, wall1 / wall2, peak2, verdict))
    rows += _fsdp_training(work, inputs)
    lines = [
        "| stage | launch | wall s | speed-up | peak RSS a process (GiB) | result vs 1 process |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {s} | {m} | {w:.1f} | {x:.2f} | {p:.2f} | {v} |" for s, m, w, x, p, v in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
