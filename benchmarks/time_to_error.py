"""Time to error: wall seconds from typing a command with a bad input to its one-line error,
for the bad inputs the CLI tests cover, each in a fresh process (target: under 1 s where the
error can be found without loading the model).

    python benchmarks/time_to_error.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import builders  # noqa: E402


def timed(args: list[str]) -> tuple[float, int, str]:
    exe = shutil.which("attrib") or sys.exit("attrib is not on PATH: pip install -e .")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env)
    lines = done.stderr.strip().splitlines()
    return time.perf_counter() - start, done.returncode, lines[-1] if lines else ""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        texts = builders.sentences(24)
        gpt2 = builders.save_tiny_gpt2(root / "gpt2", texts)
        text = builders.save_text_data(root / "text.parquet", texts)
        images = builders.save_image_data(root / "images.parquet", 12)
        store = root / "store"
        feat = ["featurize", "--model", gpt2, "--data", text, "--device", "cpu", "-q"]
        subprocess.run(
            [shutil.which("attrib"), *map(str, feat), "--out", store, "--max-examples", "4"],
            check=True,
        )
        cases = {
            "featurize: model path that does not exist": [
                "featurize",
                "--model",
                root / "nope",
                "--data",
                text,
                "--out",
                root / "o",
            ],
            "featurize: data path that does not exist": [
                "featurize",
                "--model",
                gpt2,
                "--data",
                root / "nope.parquet",
                "--out",
                root / "o",
            ],
            "featurize: --proj-dim 0": [*feat, "--out", root / "o", "--proj-dim", "0"],
            "featurize: unknown --method": [*feat, "--out", root / "o", "--method", "magic"],
            "featurize: store made with other settings": [
                *feat,
                "--out",
                store,
                "--max-examples",
                "4",
                "--proj-dim",
                "5",
            ],
            "featurize: dataset without the text column": [
                "featurize",
                "--model",
                gpt2,
                "--data",
                images,
                "--out",
                root / "o",
            ],
            "score: store that does not exist": ["score", "--train", root / "nope", "--query", "x"],
            "score: --top 0": ["score", "--train", store, "--queries", store, "--top", "0"],
            "score: --query and --queries together": [
                "score",
                "--train",
                store,
                "--queries",
                store,
                "--query",
                "x",
            ],
            "learn-weights: --k 0": [
                "learn-weights",
                "--train",
                store,
                "--queries",
                store,
                "--out",
                root / "w",
                "--k",
                "0",
            ],
            "evaluate lds: ground truth file missing": [
                "evaluate",
                "lds",
                "--train",
                store,
                "--queries",
                store,
                "--groundtruth",
                root / "gt.npz",
            ],
            "inspect: folder that is not a store": ["inspect", root],
            "any: unknown option": ["score", "--bogus"],
        }
        print("| bad input | seconds | exit | message |\n|---|---|---|---|")
        for name, args in cases.items():
            seconds, code, message = timed(args)
            print(f"| {name} | {seconds:.2f} | {code} | {message[:70]} |")


if __name__ == "__main__":
    main()
