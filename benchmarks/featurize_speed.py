"""Featurize throughput next to plain batched forward+backward of the same model and batch.

    python benchmarks/featurize_speed.py [--device cuda] [--batches 5] [--sizes tiny,small]
        [--proj-dim P]   # default: the store featurize writes for each model with no flags

For each model the baseline is batching the rows (tokenizing / image processing), a forward
pass and `loss.backward()` computing parameter gradients (a training step without the
optimizer), measured in the same run on the same rows. For diffusion both sides cover the
same K timesteps (`--timesteps`): the baseline backpropagates the loss averaged over them,
featurize runs one pass per timestep. `featurize` is the per-batch work of
`attrib featurize`: the same batching, forward, backward with hooks, projection, for the
store featurize writes with no flags (K-FAC's family's p = 45, shared by size, for
classifiers and language models; trak's p = 16 for diffusion), or `--proj-dim P`. The last
column is the whole command on a saved dataset (opening it and writing shards included,
model loading excluded).
Target: featurize / forward+backward >= 0.5.
"""

from __future__ import annotations

import argparse
import os
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

from attrib import log  # noqa: E402
from attrib.data import DataRef, open_dataset, undecoded  # noqa: E402
from attrib.featurize.batch import Featurizer  # noqa: E402
from attrib.featurize.modules import select_modules  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.methods import method_class  # noqa: E402
from attrib.tasks import ModelRef, TaskOptions, load_task  # noqa: E402


def build_models(root: Path, sizes: list[str], image_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel, ResNetConfig, ResNetForImageClassification

    texts = builders.sentences(2000, seed=1)
    long_texts = [" ".join(texts[i : i + 12]) for i in range(0, 2000, 4)]  # ~100+ tokens each
    builders.save_text_data(root / "text.parquet", long_texts)
    builders.save_image_data(root / "images.parquet", 512, num_labels=10, size=image_size)
    builders.save_plain_images(root / "pixels8.parquet", 512, size=8)
    builders.save_plain_images(root / "pixels32.parquet", 256, size=32)
    models = []
    if "digits" in sizes:  # the bundled example's ResNet (16 px digits), untrained weights
        from attrib.examples import digits

        digits.write_data(root / "digits")
        (root / "digits.parquet").symlink_to(root / "digits" / "train.parquet")
        models.append(
            ("digits resnet (16 px)", digits.init_model(root / "resnet-digits"), "digits", 64)
        )
    if "tiny" in sizes:
        models.append(("gpt2 tiny", builders.save_tiny_gpt2(root / "gpt2-tiny", texts), "text", 16))
        models.append(
            (
                "resnet tiny",
                builders.save_tiny_resnet(root / "resnet-tiny", num_labels=10),
                "images",
                16,
            )
        )
        tiny_ddpm = builders.save_tiny_ddpm(root / "ddpm-tiny")
        models.append(("ddpm tiny (8 px)", tiny_ddpm, "pixels8", 16))
    if "small" in sizes:
        tokenizer = builders.tiny_tokenizer(texts)
        path = root / "gpt2-small"
        config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
        GPT2LMHeadModel(config).save_pretrained(path)
        tokenizer.save_pretrained(path)
        models.append(("gpt2-small config", path, "text", 8))
        path = root / "resnet18"
        config = ResNetConfig(
            embedding_size=64,
            hidden_sizes=[64, 128, 256, 512],
            depths=[2, 2, 2, 2],
            layer_type="basic",
            num_labels=10,
        )
        ResNetForImageClassification(config).save_pretrained(path)
        builders._image_processor(image_size).save_pretrained(path)
        models.append(("resnet-18 config", path, "images", 16))
        cifar = cifar_ddpm(root / "ddpm-cifar")
        models.append(("ddpm cifar-10 config (32 px)", cifar, "pixels32", 8))
    return models


def cifar_ddpm(path: Path) -> Path:
    """The DDPM CIFAR-10 UNet's shape (about 36M parameters), untrained."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        layers_per_block=2,
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(path)
    return path


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(name, model_dir, data_path, batch, batches, device, proj_dim, dtype, timesteps):
    """(name, batch, modules, fwd+bwd ex/s, featurize ex/s, whole command ex/s, store): the
    store is the one `attrib featurize` writes for this model with these flags (its defaults
    where `proj_dim` is None)."""
    options = TaskOptions(max_length=128, timesteps=timesteps)
    task = load_task(ModelRef(str(model_dir)), None, dtype, options)
    task.to(device)
    dataset = open_dataset(DataRef(str(data_path)))
    columns = task.bind_columns(dataset)
    dataset = undecoded(dataset, columns.get("image"))
    rows = [dataset[i * batch : (i + 1) * batch] for i in range(batches + 1)]
    positions = [range(i * batch, (i + 1) * batch) for i in range(batches + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        config = FeaturizeOptions(
            model=str(model_dir),
            data=str(data_path),
            out=Path(tmp) / "s",
            timesteps=options.timesteps,
            batch_size=batch,
            max_examples=batch * batches,
            progress=False,
            device=str(device),
            proj_dim=proj_dim,
            dtype=str(dtype).split(".")[1],
        )  # its defaults resolved: the method, projection and allocation a user gets
        output = task.output_for(method_class(config.method), columns)
        params = [p for p in task.model.parameters()]

        def forward_backward(rows_positions):
            b = task.prepare(*rows_positions, device, columns)
            for p in params:
                p.requires_grad_(True)
            task.outputs(b, output).values.sum().backward()
            for p in params:
                p.grad = None
                p.requires_grad_(False)

        selected = select_modules(task.model)
        featurizer = Featurizer(task, columns, selected, config.projection_spec, output)

        def timed(fn, items):
            fn(items[0])  # warm-up
            _sync(device)
            start = time.perf_counter()
            for item in items[1:]:
                fn(item)
            _sync(device)
            return batch * batches / (time.perf_counter() - start)

        plain = timed(forward_backward, list(zip(rows, positions)))
        feat = timed(lambda rp: featurizer(*rp), list(zip(rows, positions)))
        run_featurize(config)  # loads the model and warms caches
        config = config.replace(out=Path(tmp) / "s2")
        start = time.perf_counter()
        run_featurize(config)
        whole = time.perf_counter() - start
    store = f"{config.method}, p = {config.proj_dim} {config.store_dtype}"
    store += ", sqrt-size" if config.proj_allocation == "sqrt-size" else ""
    return name, batch, len(selected), plain, feat, batch * batches / whole, store


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--sizes", default="digits,tiny,small")
    parser.add_argument(
        "--proj-dim", type=int, default=None, help="default: featurize's own for each model"
    )
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--timesteps", type=int, default=10, help="diffusion timesteps K")
    args = parser.parse_args()
    log.set_quiet(True)
    log.quiet_libraries()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp), args.sizes.split(","), args.image_size)
        rows = [
            measure(
                name,
                path,
                Path(tmp) / f"{data}.parquet",
                batch,
                args.batches,
                device,
                args.proj_dim,
                dtype,
                args.timesteps,
            )
            for name, path, data, batch in models
        ]
    table = Table(
        title=f"featurize vs forward+backward on {device} ({args.dtype}, "
        f"images {args.image_size}px, texts <=128 tokens)"
    )
    for column in (
        "model",
        "store",
        "batch",
        "modules",
        "fwd+bwd ex/s",
        "featurize ex/s",
        "ratio",
        "whole command ex/s",
    ):
        table.add_column(column, justify="right")
    for name, batch, modules, plain, feat, whole, store in rows:
        table.add_row(
            name,
            store,
            str(batch),
            str(modules),
            f"{plain:,.1f}",
            f"{feat:,.1f}",
            f"{feat / plain:.2f}",
            f"{whole:,.1f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
