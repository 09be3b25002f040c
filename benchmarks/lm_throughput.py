"""Language-model featurize throughput at real sizes: attrib against plain forward+backward and
against bergson (EleutherAI), same model, data, sequence length and projection, same run.

    python benchmarks/lm_throughput.py --setup     # once: bergson from PyPI in its own venv
    python benchmarks/lm_throughput.py [--models gpt2-small,pythia-160m] [--examples 16]
                                       [--seq-len 512] [--batch-size 2] [--proj-dim 16]

Models are built from their configurations (GPT-2 small: 124M parameters; Pythia-160M: the
GPT-NeoX shape; `llama-1b-lora`: TinyLlama-1.1B's Llama shape with a rank-16 LoRA adapter on
q_proj and v_proj, whose layers both tools then hook), weights random: the architecture is
what costs. Texts are exactly
--seq-len words of a word-level tokenizer, so every row is --seq-len tokens for both tools.
Both tools run as their console scripts in a fresh process under /usr/bin/time (wall
seconds including start-up and model loading, peak RSS): `attrib featurize --method tracin
--proj-dim p` and `bergson build --projection_dim p` (both: every linear layer of the
transformer blocks, the output head left out as bergson leaves it; a p x p two-sided
projection per module). The baseline is a training step without the optimizer
(batching, forward, `loss.backward()`) in this process, model already loaded.
tokens/s = examples x seq-len / seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import builders  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

HERE = Path(__file__).parent
VENV = HERE / ".bergson-venv"
ATTRIB = str(Path(sys.executable).with_name("attrib"))


def setup(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)  # the CPU build on this machine
    subprocess.run(pip + ["bergson"], check=True)


def build_model(root: Path, name: str, tokenizer) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    path = root / name
    torch.manual_seed(0)
    if name == "gpt2-small":
        config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
        GPT2LMHeadModel(config).save_pretrained(path)
    elif name == "pythia-160m":
        config = GPTNeoXConfig(
            vocab_size=50304,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            rotary_pct=0.25,
            max_position_embeddings=2048,
        )
        GPTNeoXForCausalLM(config).save_pretrained(path)
    elif name == "llama-1b-lora":  # TinyLlama-1.1B's shape, a LoRA adapter on its attention
        from peft import LoraConfig, get_peft_model
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=32000,
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
            max_position_embeddings=2048,
        )
        base = root / "llama-1b"
        LlamaForCausalLM(config).save_pretrained(base)
        tokenizer.save_pretrained(base)
        lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"])
        adapter = get_peft_model(LlamaForCausalLM.from_pretrained(base), lora)
        adapter.peft_config["default"].base_model_name_or_path = str(base)
        adapter.save_pretrained(path)
    else:
        raise SystemExit(f"unknown model {name}")
    tokenizer.save_pretrained(path)
    return path


def base_and_adapter(model: Path) -> tuple[Path, list]:
    """The base model's folder and attrib's --adapter flags for a (possibly) PEFT folder."""
    config = model / "adapter_config.json"
    if not config.exists():
        return model, []
    return Path(json.loads(config.read_text())["base_model_name_or_path"]), ["--adapter", model]


def texts(count: int, length: int) -> tuple[list[str], object]:
    """`count` texts of exactly `length` tokens of a word-level tokenizer, and the tokenizer."""
    pool = " ".join(builders.sentences(count * length // 4 + 100, seed=2))
    tokenizer = builders.tiny_tokenizer([pool])
    ids = tokenizer(text=pool)["input_ids"]
    rows = [tokenizer.decode(ids[i * length : (i + 1) * length]) for i in range(count)]
    assert all(len(tokenizer(text=r)["input_ids"]) == length for r in rows), "not round-trip"
    return rows, tokenizer


def forward_backward(model_dir: Path, rows: list[str], batch: int, length: int) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base, adapter = base_and_adapter(model_dir)
    model = AutoModelForCausalLM.from_pretrained(base)
    if adapter:  # gradients of the adapter only, as fine-tuning it computes them
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, model_dir, is_trainable=True)
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        encoded = tokenizer(
            rows[i : i + batch], return_tensors="pt", truncation=True, max_length=length
        )
        model.zero_grad(set_to_none=True)
        model(**encoded, labels=encoded["input_ids"]).loss.backward()
    return time.perf_counter() - start


def timed(command: list) -> tuple[float, float]:
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *map(str, command)], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{done.stderr[-3000:]}")
    return wall, int(done.stderr.strip().splitlines()[-1]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--models", default="gpt2-small,pythia-160m")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)  # bergson: <= 1,024 tokens
    parser.add_argument("--proj-dim", type=int, default=16)
    parser.add_argument("--no-bergson", action="store_true")
    parser.add_argument("--venv", type=Path, default=VENV, help="bergson's environment")
    args = parser.parse_args()
    if args.setup:
        setup(args.venv)
        return
    console = Console(stderr=True, width=150)
    tokens = args.examples * args.seq_len
    table = Table(title=f"{args.examples} x {args.seq_len} tokens, --proj-dim {args.proj_dim}")
    for column in ("model", "tool", "seconds", "tokens/s", "vs fwd+bwd", "peak RSS GiB"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows, tokenizer = texts(args.examples, args.seq_len)
        data = root / "data.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
        for name in args.models.split(","):
            model = build_model(root, name, tokenizer)
            base = forward_backward(model, rows, args.batch_size, args.seq_len)
            results = [("forward+backward", base, float("nan"))]
            base_model, adapter = base_and_adapter(model)
            attrib = [ATTRIB, "featurize", "--model", base_model, *adapter, "--data", data]
            attrib += ["--method", "tracin"]
            attrib += ["--proj-dim", args.proj_dim, "--max-length", args.seq_len, "-q"]
            attrib += ["--exclude", "lm_head", "--exclude", "embed_out"]  # as bergson leaves them
            attrib += ["--batch-size", args.batch_size, "--out", root / f"{name}-attrib"]
            results.append(("attrib featurize", *timed(attrib)))
            if not args.no_bergson:
                bergson = [args.venv / "bin" / "python", "-m", "bergson", "build"]
                bergson += [root / f"{name}-b", "--model", model, "--dataset", data]
                bergson += ["--truncation", "true"]
                bergson += ["--projection_dim", args.proj_dim, "--precision", "fp32"]
                bergson += ["--token_batch_size", args.batch_size * args.seq_len]
                results.append(("bergson build", *timed(bergson)))
            for tool, seconds, rss in results:
                console.print(f"{name} {tool}: {seconds:.1f} s")
                table.add_row(
                    name,
                    tool,
                    f"{seconds:.1f}",
                    f"{tokens / seconds:.0f}",
                    f"{base / seconds:.2f}",
                    "" if rss != rss else f"{rss:.2f}",
                )
    console.print(table)


if __name__ == "__main__":
    main()
