"""A newcomer's first hour, timed: one's own small text model and a JSON-lines file, then the
commands the docs give, each run in a terminal (a pseudo-terminal, so progress bars draw as
they would for a person) and on a pipe (as under nohup or CI).

    python benchmarks/newcomer_walk.py [--rows 400] [--clone] [--demo]

With --clone the walk starts from a fresh clone of this checkout: its first step is the
README's environment (`bash .ci/env`: a virtual environment, torch, attrib), and every later
command is that clone's `attrib`. With --demo the README's first command comes next: `attrib
demo --task text` (and the image demo), first runs on an empty cache.

For each step: wall time, the longest silence in the terminal (no byte written for that
long, the start and the end included) and on a pipe (stderr lines), and the cumulative time
to the first ranked answer, the first magic answer and the first HTML report.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import builders  # noqa: E402

ATTRIB = str(Path(sys.executable).parent / "attrib")
QUESTION = " ".join(builders.sentences(1, seed=11))  # words the tiny tokenizer knows


TRANSCRIPT: list[bytes] = []  # what the terminal showed, for --transcript


def in_terminal(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, longest silence, exit code) of argv on a pseudo-terminal."""
    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["COLUMNS"] = "100"
        os.execv(argv[0], argv)
    last, longest = start, 0.0
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            now = time.perf_counter()
            longest, last = max(longest, now - last), now
            TRANSCRIPT.append(f"\n[{now - start:7.1f} s] ".encode() + chunk)
    _, status = os.waitpid(pid, 0)
    end = time.perf_counter()
    return end - start, max(longest, end - last), os.waitstatus_to_exitcode(status)


def on_a_pipe(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, longest gap between stderr lines, exit code) with stdout on a pipe."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last, longest = start, 0.0
    for _ in process.stderr:
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    code = process.wait()
    end = time.perf_counter()
    return end - start, max(longest, end - last), code


def steps(root: Path, a: str) -> list[tuple[str, list[str], str | None]]:
    model, data, queries = root / "my-model", root / "train.jsonl", root / "questions.jsonl"
    return [
        ("featurize my model on my data", [a, "featurize", "--model", str(model), "--data",
         str(data), "--out", str(root / "train")], None),
        ("score a question", [a, "score", "--train", str(root / "train"), "--text", QUESTION],
         "first ranked answer"),
        ("train and record a fine-tuning run", [a, "train", "--model", str(model), "--data",
         str(data), "--out", str(root / "run"), "--epochs", "1", "--lr", "1e-4"], None),
        ("featurize the questions on the run's model", [a, "featurize", "--model",
         str(root / "run" / "model"), "--data", str(queries), "--out", str(root / "q")], None),
        ("magic", [a, "magic", "--run", str(root / "run"), "--queries", str(root / "q"),
         "--top", "5"], "first magic answer"),
        ("HTML report", [a, "score", "--train", str(root / "train"), "--text", QUESTION,
         "--html", str(root / "report.html")], "first HTML report"),
    ]  # fmt: skip


def build(root: Path, rows: int) -> None:
    texts = builders.sentences(rows + 8, seed=3)
    builders.save_tiny_gpt2(root / "my-model", texts)
    for name, part in (("train.jsonl", texts[:rows]), ("questions.jsonl", texts[rows:])):
        (root / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in part))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--clone", action="store_true", help="start from a fresh clone")
    parser.add_argument("--demo", action="store_true", help="time the demos' first runs")
    parser.add_argument("--transcript", type=Path, help="write what the terminal showed here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), args.rows)
        attrib, installed = ATTRIB, 0.0
        if args.clone:
            clone = Path(tmp) / "attrib"
            repo = Path(__file__).resolve().parents[1]
            subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
            wall, silence, code = in_terminal(["/bin/bash", "-c", f"cd '{clone}' && bash .ci/env"])
            installed = wall
            rows.append(("terminal", "bash .ci/env (fresh clone)", wall, silence, code, None, wall))
            attrib = str(clone / ".venv" / "bin" / "attrib")
        if args.demo:
            os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # a first run
            for task in ("text", "image"):
                argv = [attrib, "demo", "--task", task, "--out", str(Path(tmp) / f"demo-{task}")]
                wall, silence, code = in_terminal(argv)  # not counted in the milestones
                rows.append(("terminal", f"attrib demo --task {task} (first run)", wall,
                             silence, code, None, installed + wall))  # fmt: skip
        for mode, runner in (("terminal", in_terminal), ("pipe", on_a_pipe)):
            root = Path(tmp) / mode
            root.mkdir()
            for name in ("my-model", "train.jsonl", "questions.jsonl"):
                (root / name).symlink_to(Path(tmp) / name)
            total = installed
            for name, argv, milestone in steps(root, attrib):
                wall, silence, code = runner(argv)
                total += wall
                rows.append((mode, name, wall, silence, code, milestone, total))
    if args.transcript:
        args.transcript.write_bytes(b"".join(TRANSCRIPT))
    print("| mode | step | wall (s) | longest silence (s) | exit | milestone (cumulative s) |")
    print("|---|---|---|---|---|---|")
    for mode, name, wall, silence, code, milestone, total in rows:
        mark = f"{milestone}: {total:.0f}" if milestone else ""
        print(f"| {mode} | {name} | {wall:.1f} | {silence:.1f} | {code} | {mark} |")


if __name__ == "__main__":
    main()
