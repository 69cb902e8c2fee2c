"""SFT on agent trajectories: TRL's SFTTrainer, loss on assistant tokens only, LoRA (default) or full fine-tuning.

    python -m repairrl.sft.train --model results/embedded/models/base --dataset results/embedded/sft/data \
        --out results/embedded/sft/base [--lora | --full] [--max-steps N] [--save-steps K] [--resume]

    # the 2-GPU full run (DeepSpeed ZeRO-2, config/accelerate/zero2.yaml):
    accelerate launch --config_file config/accelerate/zero2.yaml -m repairrl.sft.train \
        --model results/<exp>/models/<model> --dataset ... --out ... --full

Every SFTConfig field is a flag too (`--learning-rate`, `--max-length`, `--gradient-accumulation-steps`, ...), and
`--config file.yaml` reads them from a file, as with TRL's own scripts (TrlParser). The run is logged to wandb,
offline by default (`--tracking offline|online|disabled --tracking-dir D --tracking-group G`: D/wandb/offline-run-*).

`--model` is a prepared model's manifest directory (repairrl.models.loading). Outputs under `--out`:
    checkpoints/checkpoint-<step>/   every `--save-steps` steps; `--resume` continues from the last one, if it was
                                     trained on the same model, data and flags (checkpoints.fingerprint.json)
    merged/                          the final model, LoRA merged into the base weights, tokenizer included
    metrics.csv                      one row per logged step: loss, learning rate, grad norm, token accuracy
    model.json                       a manifest (kind "local") that `resolve_model_path(OUT)` resolves to merged/
    train_summary.json               steps, loss, runtime, precision

Assistant-only loss needs `{% generation %}` markers in the chat template. SmolLM2's plain chatml template has none
and TRL ships no training template for it, so `templates/chatml_generation.jinja` (the same rendering, with markers)
is used for training; other families without markers get TRL's own training template.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from trl import SFTConfig

from repairrl import fingerprint
from repairrl.models.loading import load_for_training
from repairrl.training import (
    METRICS,
    TRACKING_FIELDS,
    MetricsCSVCallback,
    TrackingArguments,
    finish_training,
    resume_point,
    start_tracking,
)

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
CHATML_TRAINING_TEMPLATE = TEMPLATE_DIR / "chatml_generation.jinja"
CHECKPOINTS = "checkpoints"


@dataclass
class SFTScriptArguments(TrackingArguments):
    """What to train, and where to: the stage's own flags (the trainer's are SFTConfig's)."""

    model: str = field(metadata={"help": "manifest directory of the prepared base model (with model.json)"})
    dataset: str = field(metadata={"help": "SFT dataset directory (repairrl.sft.dataset, save_to_disk)"})
    out: str = field(metadata={"help": "output directory: checkpoints/, merged/, model.json"})
    lora: bool = field(default=True, metadata={"help": "train a LoRA adapter (the default)"})
    full: bool = field(default=False, metadata={"help": "full fine-tuning instead of LoRA"})
    resume: bool = field(
        default=False, metadata={"help": "continue from the last checkpoint under OUT/checkpoints"}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "'all-linear' or comma-separated module names"}
    )
    training_chat_template: str | None = field(
        default=None,
        metadata={
            "help": "Jinja template with {%% generation %%} markers; default: the model's or ours for chatml"
        },
    )


def hardware_precision() -> str:
    """bf16 on GPUs of compute capability >= 8.0 (Ampere on), fp16 on older GPUs, fp32 on CPU."""
    import torch

    if torch.cuda.is_available():
        major, _ = torch.cuda.get_device_capability()
        return "bf16" if major >= 8 else "fp16"
    return "fp32"


@dataclass
class RepairSFTConfig(SFTConfig):
    """SFTConfig with the stage's defaults: assistant-only loss on trajectories, checkpoints every K steps
    (gradient checkpointing is on by TRL's default).

    `bf16`/`fp16` left unset are chosen from the hardware (see `hardware_precision`); on CPU that is fp32 with
    `use_cpu`, since TRL would otherwise default to bf16 autocast there.
    """

    assistant_only_loss: bool = field(default=True, metadata={"help": "loss on assistant tokens only"})
    max_length: int | None = field(default=1024, metadata={"help": "longer episodes are truncated"})
    learning_rate: float = field(default=1e-4, metadata={"help": "1e-4 suits LoRA; lower it for --full"})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "episodes per device and step"})
    save_steps: float = field(default=50, metadata={"help": "steps between checkpoints"})
    logging_steps: float = field(default=1, metadata={"help": "steps between log lines"})

    def __post_init__(self):
        if self.bf16 is None and not self.fp16:
            precision = hardware_precision()
            self.bf16 = precision == "bf16"
            self.fp16 = precision == "fp16"
            if precision == "fp32":
                self.use_cpu = True
        super().__post_init__()


class SFTSetupError(RuntimeError):
    """The model, dataset or chat template cannot be trained as asked; the message says what to change."""


# --- chat template ---


def has_generation_markers(template: str | None) -> bool:
    from trl.chat_template_utils import has_generation_markers as trl_has_markers

    return bool(template) and trl_has_markers(template)


_PROBE = [
    {"role": "user", "content": "u"},
    {"role": "assistant", "content": "a"},
    {"role": "tool", "content": "t"},
    {"role": "assistant", "content": "b"},
]


def renders_like_model_template(tokenizer, template: str) -> bool:
    """Whether `template` writes the same text as the tokenizer's own for a tool-use probe (with and without a
    system message): only then does training see the context the model sees at inference."""
    for messages in (_PROBE, [{"role": "system", "content": "s"}, *_PROBE]):
        try:
            ours = tokenizer.apply_chat_template(messages, tokenize=False, chat_template=template)
            theirs = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception:  # a template that cannot render a tool turn at all  # noqa: BLE001
            return False
        if ours != theirs:
            return False
    return True


def training_chat_template(tokenizer, override: str | Path | None = None) -> str | None:
    """The template to train with, or None to keep the tokenizer's (or let TRL pick its training variant)."""
    if override:
        return Path(override).read_text()
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if has_generation_markers(template):
        return None
    chatml = CHATML_TRAINING_TEMPLATE.read_text()
    if template and renders_like_model_template(tokenizer, chatml):
        return chatml
    return None  # SFTTrainer swaps in TRL's training template for the families it knows, or says it cannot


def install_training_template(tokenizer, override: str | Path | None = None) -> str | None:
    """Put the training template on the tokenizer; returns the original template, to restore before export."""
    original = tokenizer.chat_template
    template = training_chat_template(tokenizer, override)
    if template is not None:
        tokenizer.chat_template = template
    return original


# --- model, data, trainer ---


def lora_config(args: SFTScriptArguments):
    from peft import LoraConfig

    targets = args.lora_target_modules
    target_modules = targets if targets == "all-linear" else [name.strip() for name in targets.split(",")]
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=target_modules,
    )


def load_sft_dataset(dataset_dir: str | Path):
    from datasets import load_from_disk

    dataset = load_from_disk(str(dataset_dir))
    if "messages" not in dataset.column_names:
        raise SFTSetupError(
            f"{dataset_dir} has no 'messages' column: build it with python -m repairrl.sft.dataset"
        )
    # The other columns (instance id, source, reward) are for people; the trainer needs the conversation only.
    return dataset.select_columns(["messages"])


def build_trainer(model, tokenizer, dataset, config: SFTConfig, peft_config=None, template_override=None,
                  metrics_path: Path | None = None, resume_from: str | None = None):
    """The SFTTrainer of this stage; tests build it the same way to check what it tokenizes."""
    from trl import SFTTrainer

    install_training_template(tokenizer, template_override)
    return SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MetricsCSVCallback(metrics_path, resume_from)] if metrics_path else None,
    )


def sft_fingerprint(args: SFTScriptArguments, config: RepairSFTConfig) -> dict:
    """What the checkpoints are trained from: the base model, the dataset, a template override, and every flag
    that changes the training (not how far it goes or where it writes)."""
    # `datasets` writes its map caches into the dataset's own directory while training: not a change of data.
    inputs = {
        "model": fingerprint.model_signature(args.model),
        "dataset": fingerprint.path_signature(args.dataset, ["cache-*.arrow"]),
    }
    if args.training_chat_template:
        inputs["training_chat_template"] = fingerprint.path_signature(args.training_chat_template)
    not_state = ("model", "dataset", "out", "resume", *TRACKING_FIELDS)
    script = {k: v for k, v in vars(args).items() if k not in not_state}
    trainer = fingerprint.changed_fields(config, type(config)(output_dir=config.output_dir), fingerprint.NOT_STATE_FIELDS)
    return fingerprint.stage_fingerprint(inputs, {**script, **trainer})


def train_sft(args: SFTScriptArguments, config: SFTConfig) -> dict:
    out_dir = Path(args.out)
    lora = args.lora and not args.full
    resume_from = resume_point(
        out_dir, config.output_dir, sft_fingerprint(args, config), stage="sft", resume=args.resume
    )
    model, tokenizer = load_for_training(args.model, bool(config.bf16), lora)
    original_template = tokenizer.chat_template
    dataset = load_sft_dataset(args.dataset)
    peft_config = lora_config(args) if lora else None
    trainer = build_trainer(model, tokenizer, dataset, config, peft_config, args.training_chat_template,
                            metrics_path=out_dir / METRICS, resume_from=resume_from)
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.monotonic() - started

    summary = {
        "method": "lora" if lora else "full",
        "precision": "bf16" if config.bf16 else "fp16" if config.fp16 else "fp32",
        "global_step": trainer.state.global_step,
        "resumed_from": resume_from,
        "train_loss": result.training_loss,
        "train_seconds": round(seconds, 2),
        "examples": len(dataset),
        "max_length": config.max_length,
    }
    finish_training(trainer, tokenizer, original_template, out_dir, args.model, summary, config)
    return summary


def parse_args(argv: list[str]) -> tuple[SFTScriptArguments, RepairSFTConfig]:
    from trl import TrlParser

    parser = TrlParser((SFTScriptArguments, RepairSFTConfig))
    args, config = parser.parse_args_and_config(args=argv)
    if args.full:
        args.lora = False
    if not any(a.split("=")[0] in ("--output_dir", "--output-dir") for a in argv):
        config.output_dir = str(Path(args.out) / CHECKPOINTS)
    return args, config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, config = parse_args(argv)
    start_tracking(args, config, Path(args.out), "sft", argv)
    summary = train_sft(args, config)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
