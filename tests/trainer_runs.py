"""Tiny Trainer runs with a callback, for the callback's tests (imported by them, and run
as a script under torchrun: `python -m torch.distributed.run ... tests/trainer_runs.py
GPT2_DIR TEXT_DATA OUT STORES`)."""

from __future__ import annotations

import sys
from pathlib import Path

import datasets
import transformers

STEPS, SAVE_EVERY = 4, 2


def _arguments(out: Path, **extra):
    extra.setdefault("max_steps", STEPS)
    return transformers.TrainingArguments(
        output_dir=str(out),
        save_steps=SAVE_EVERY,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        lr_scheduler_type="linear",
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        **extra,
    )


def train_lm(gpt2_dir, text_data, out: Path, callback, steps=STEPS, resume=False,
             lora=False, optim=None) -> None:  # fmt: skip
    """A tiny GPT-2 fine-tuned by the Trainer, with the callback; `resume`: from the latest
    checkpoint in `out` when there is one (`trainer.train(resume_from_checkpoint=True)`);
    `lora`: a LoRA adapter on the attention's c_attn trains instead (PEFT); `optim`: the
    Trainer's optimizer name (its default, AdamW, otherwise)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt2_dir)
    tokenizer.pad_token = tokenizer.eos_token
    model = transformers.AutoModelForCausalLM.from_pretrained(gpt2_dir)
    if lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=2, target_modules=["c_attn"], init_lora_weights=False, fan_in_fan_out=True
        )
        model = get_peft_model(model, config)
    raw = datasets.load_dataset("parquet", data_files=str(text_data), split="train")
    tokenized = raw.map(  # not from datasets' cache: the tokenizer's state is then saved alike
        lambda row: tokenizer(row["text"], truncation=True, max_length=32),
        remove_columns=raw.column_names,
        load_from_cache_file=False,
    )
    trainer = transformers.Trainer(
        model=model,
        args=_arguments(out, max_steps=steps, **({"optim": optim} if optim else {})),
        train_dataset=tokenized,
        data_collator=transformers.DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train(resume_from_checkpoint=resume and any(Path(out).glob("checkpoint-*")))


def train_image_classifier(vit_dir, image_data, out: Path, callback) -> None:
    processor = transformers.AutoImageProcessor.from_pretrained(vit_dir)
    model = transformers.AutoModelForImageClassification.from_pretrained(vit_dir)
    raw = datasets.load_dataset("parquet", data_files=str(image_data), split="train")

    def encode(rows):
        images = [image.convert("RGB") for image in rows["image"]]
        return {"pixel_values": processor(images=images)["pixel_values"], "labels": rows["label"]}

    trainer = transformers.Trainer(
        model=model,
        args=_arguments(out, remove_unused_columns=False),
        train_dataset=raw.with_transform(encode),
        processing_class=processor,
        callbacks=[callback],
    )
    trainer.train()


if __name__ == "__main__":  # one LM run with the callback, in every process of a launcher
    # (`--resume`: 8 steps, resumed from the latest checkpoint: the kill harness's case)
    sys.path.insert(0, str(Path(__file__).parent.parent))
    from attrib.integrations.trainer import AttribCallback

    gpt2_dir, text_data, out, stores = sys.argv[1:5]
    callback = AttribCallback(stores, data=text_data, method="trak", proj_dim=16, shard_size=16)
    if "--resume" in sys.argv:
        train_lm(gpt2_dir, text_data, Path(out), callback, steps=8, resume=True)
    else:
        train_lm(gpt2_dir, text_data, Path(out), callback)


def train_sft_lora(gpt2_dir, data, out: Path, callback) -> None:
    """TRL's SFTTrainer on prompt/completion data (completion-only loss) with a LoRA
    adapter: only the adapter trains, and only its layers are featurized."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt2_dir)
    tokenizer.pad_token = tokenizer.eos_token
    model = transformers.AutoModelForCausalLM.from_pretrained(gpt2_dir)
    args = SFTConfig(
        output_dir=str(out), max_steps=STEPS, save_steps=SAVE_EVERY, per_device_train_batch_size=4,
        learning_rate=1e-3, logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True,
        max_length=32, seed=0,
    )  # fmt: skip
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.load_dataset("parquet", data_files=str(data), split="train"),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], lora_dropout=0.0),
        callbacks=[callback],
    )
    trainer.train()
