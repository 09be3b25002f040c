"""`attrib generate`: query images from a diffusion pipeline, as a dataset featurize reads.

Each image is sampled with DDPM from noise seeded by its own seed; its prompt, seed, template
attributes and, for Journey-TRAK, the predicted clean images x0_hat at evenly spaced sampling
steps (with their timesteps) are stored beside it in OUT/queries.parquet; PNG copies go to
OUT/png/. Templates such as "A {style} of {subject}" expand over every combination of the
given values, which builds the paper's fine-grained query sets (one attribute varied, the
others left out of the prompt).
"""

from __future__ import annotations

import io
import itertools
import json
import re
from pathlib import Path

import datasets
import torch
from PIL import Image

from attrib import log
from attrib.atomic import atomic_dir, write_text
from attrib.data import GENERATED_MARKER
from attrib.errors import AttribError
from attrib.generate.options import GenerateOptions
from attrib.jsonio import load_json_or_none
from attrib.tasks import ModelRef, TaskOptions, load_task
from attrib.tasks.diffusion import STEPS_COLUMN, TRAJECTORY_COLUMN, DiffusionTask

FIELD = re.compile(r"{(\w+)}")


def expand(templates: list[str], values: dict[str, list[str]]) -> list[tuple[str, dict]]:
    """Every (prompt, attributes) a list of templates gives over the provided values."""
    out = []
    for template in templates:
        names = FIELD.findall(template)
        missing = [n for n in names if n not in values]
        if missing:
            raise AttribError(f"--prompt {template!r}: no --values for {', '.join(missing)}")
        for combo in itertools.product(*(values[n] for n in names)):
            attributes = dict(zip(names, combo))
            out.append((template.format(**attributes), attributes))
    return out


def parse_values(items: list[str]) -> dict[str, list[str]]:
    values = {}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep or not name or not rest:
            raise AttribError(f"--values {item!r}: write name=value1,value2")
        values[name] = [v.strip() for v in rest.split(",") if v.strip()]
    return values


def _png(x: torch.Tensor) -> bytes:
    array = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    image = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@torch.no_grad()
def sample(
    task: DiffusionTask,
    prompt: str | None,
    seed: int,
    steps: int,
    keep: list[int],
    guidance: float,
    device,
):
    """(final image in [-1, 1], [(timestep, x0_hat image)] at the kept step indices)."""
    scheduler = sampling_scheduler(task, steps)
    unet = task.model
    channels, size = unet.config.in_channels, unet.config.sample_size
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, size, size, generator=generator).to(device)
    text = None
    if task.conditional:
        text = torch.cat([task._text([""], device), task._text([prompt], device)])
    kept = []
    for index, t in enumerate(scheduler.timesteps):
        if text is None:
            eps = unet(x, t).sample
        elif guidance == 1.0:  # uncond + 1 * (cond - uncond): the conditional pass alone
            eps = unet(x, t, encoder_hidden_states=text[1:]).sample
        else:
            both = unet(torch.cat([x, x]), t, encoder_hidden_states=text).sample
            uncond, cond = both.chunk(2)
            eps = uncond + guidance * (cond - uncond)
        step = scheduler.step(eps, t, x, generator=generator)
        if index in keep:
            kept.append((int(t), _decode(task, step.pred_original_sample)))
        x = step.prev_sample
    return _decode(task, x), kept


def sampling_scheduler(task: DiffusionTask, steps: int):
    """DDPM with `steps` sampling steps, refused (one line) when the pipeline's schedule
    cannot take that many (steps_offset shifts the timesteps past the last one)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(task.scheduler.config)
    total = scheduler.config.num_train_timesteps
    if steps > total:
        raise AttribError(f"--steps {steps}: this pipeline's scheduler has {total} timesteps")
    scheduler.set_timesteps(steps)
    if int(scheduler.timesteps.max()) >= total:
        most = total - int(scheduler.config.get("steps_offset", 0) or 0)
        raise AttribError(
            f"--steps {steps}: this pipeline's scheduler has {total} timesteps with "
            f"steps_offset {scheduler.config.steps_offset}; pass --steps {most} or fewer"
        )
    return scheduler


def _decode(task: DiffusionTask, x: torch.Tensor) -> torch.Tensor:
    if task.vae is None:
        return x[0]
    return task.vae.decode(x / task.vae.config.scaling_factor).sample[0]


def run_generate(request: GenerateOptions) -> Path:
    """Sample images (with trajectories) into `request.out`, a folder featurize reads."""
    values = parse_values(list(request.values))
    model = ModelRef(request.model, request.revision, request.adapter)
    task = load_task(model, "diffusion", torch.float32, TaskOptions())
    if not isinstance(task, DiffusionTask):
        raise AttribError(f"--model {request.model} is not a diffusion pipeline")
    from attrib.distributed import resolve_device

    device = resolve_device(request.device)
    task.to(device)
    if task.conditional and not list(request.prompt):
        raise AttribError("this pipeline is text-to-image: pass --prompt (templates allowed)")
    sampling_scheduler(task, request.steps)  # a step count the schedule cannot take fails here
    if not task.conditional and list(request.prompt):
        raise AttribError("this pipeline is unconditional: it takes no --prompt")
    prompts = expand(list(request.prompt), values) if list(request.prompt) else [(None, {})]
    out = Path(request.out)
    keep = (
        sorted(
            {
                round(i * (request.steps - 1) / max(request.trajectory - 1, 1))
                for i in range(request.trajectory)
            }
        )
        if request.trajectory
        else []
    )
    record = {
        "model": request.model,
        "prompts": list(request.prompt),
        "values": values,
        "n": request.n,
        "seed": request.seed,
        "steps": request.steps,
        "trajectory_steps": keep,
        "guidance": request.guidance,
    }
    if out.exists() and any(out.iterdir()):
        marker = out / GENERATED_MARKER
        if not marker.is_file():
            raise AttribError(
                f"--out {out} is not empty and is not a query set attrib generated; attrib "
                "only replaces its own folders: choose another --out"
            )
        if not request.overwrite:
            # The same command again (a rerun, or one killed after its folder was in place):
            # the query set is already there, and sampling is seeded, so it is the answer.
            if load_json_or_none(marker) == record:
                log.info(
                    f"{out} already holds these generated queries (featurize with --data {out})"
                )
                return out
            raise AttribError(
                f"--out {out} holds other generated queries; pass --overwrite or another folder"
            )
    rows: dict[str, list] = {
        "image": [],
        "prompt": [],
        "seed": [],
        TRAJECTORY_COLUMN: [],
        STEPS_COLUMN: [],
    }
    names = sorted({k for _, attrs in prompts for k in attrs})
    rows.update({name: [] for name in names})
    # Written whole into a temporary folder that replaces --out: a killed run leaves no
    # half query set for featurize to read.
    with atomic_dir(out) as folder:
        (folder / "png").mkdir(parents=True)
        for number, ((prompt, attrs), offset) in enumerate(
            itertools.product(prompts, range(request.n))
        ):
            seed = request.seed + offset
            image, kept = sample(task, prompt, seed, request.steps, keep, request.guidance, device)
            data = _png(image)
            (folder / "png" / f"{number:05d}.png").write_bytes(data)
            rows["image"].append({"bytes": data, "path": f"png/{number:05d}.png"})
            rows["prompt"].append(prompt or "")
            rows["seed"].append(seed)
            rows[TRAJECTORY_COLUMN].append([{"bytes": _png(x), "path": None} for _, x in kept])
            rows[STEPS_COLUMN].append([t for t, _ in kept])
            for name in names:
                rows[name].append(attrs.get(name, ""))
        features = datasets.Features(
            {
                "image": datasets.Image(),
                "prompt": datasets.Value("string"),
                "seed": datasets.Value("int64"),
                TRAJECTORY_COLUMN: datasets.Sequence(datasets.Image()),
                STEPS_COLUMN: datasets.Sequence(datasets.Value("int64")),
                **{name: datasets.Value("string") for name in names},
            }
        )
        table = datasets.Dataset.from_dict(rows, features=features)
        table.to_parquet(str(folder / "queries.parquet"))
        write_text(folder / GENERATED_MARKER, json.dumps(record, indent=1))
    log.info(f"wrote {len(rows['image'])} images to {out} (featurize with --data {out})")
    return out
