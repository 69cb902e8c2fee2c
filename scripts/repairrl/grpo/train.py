"""GRPO with the agent in the loop: TRL's GRPOTrainer, each completion one agent episode (repairrl.grpo.rollout).

    python -m repairrl.grpo.train --model results/embedded/models/base --tasks .../mini_train/tasks.jsonl \
        --cache-dir results/cache/repos --out results/embedded/grpo/base --algorithm gspo --num-generations 2 \
        --tasks-per-step 2 --max-steps 4 [--lora | --full] [--rewards 'similarity=0.2,resolved=1.0'] \
        [--generation inprocess | vllm --vllm-server-url http://host:8000] [--resume]

    # full runs: a vLLM server on one GPU, the trainer on two (DeepSpeed ZeRO-2, config/accelerate/zero2.yaml),
    # started together on free ports of 127.0.0.1 by repairrl.grpo.server (the grpo rule does this)
    python -m repairrl.grpo.server --model <SFT model> --log vllm.log -- \
        accelerate launch --config_file config/accelerate/zero2.yaml -m repairrl.grpo.train ...

Batches: one optimizer step is `--tasks-per-step` tasks x `--num-generations` episodes over all processes (TRL's
generation batch), trained `--per-device-train-batch-size` episodes (default 1) per forward and accumulated:
gradient_accumulation_steps = steps_per_generation = tasks x generations / (micro-batch x processes).

Every GRPOConfig field is a flag too (`--learning-rate`, `--beta`, `--temperature`, `--max-completion-length`,
`--save-steps`, ...), and `--config file.yaml` reads them from a file (TrlParser).

`--algorithm` sets TRL's loss: gspo = sequence-level importance ratios with the grpo loss (and GSPO's clip range
unless --epsilon is given); dr_grpo = Dr. GRPO's loss with unscaled rewards; grpo = token-level, per-sequence mean.

Outputs under `--out`:
    checkpoints/checkpoint-<step>/   every --save-steps steps; --resume continues the step count and data order,
                                     if they were trained from the same model, tasks and flags
                                     (checkpoints.fingerprint.json); otherwise the run starts at step 0
    final/                           the trained adapter (LoRA) or model (--full)
    merged/ + model.json             the merged model and its manifest: `resolve_model_path(OUT)` loads it
    metrics.csv                      one row per step; the same logs go to wandb, offline by default
                                     (--tracking offline|online|disabled, --tracking-dir, --tracking-group)
    episodes.jsonl                   one record per episode: reward and its components, errors, tools, timings
    train_summary.json

Logprob gap: each step the trainer's logprobs of the generated tokens are compared with the ones recorded at
sampling. With vLLM a mean gap above --max-logprob-gap stops the run (PolicySyncError): the server is not sampling
from the policy being trained (a weight sync that silently did nothing). In-process it is logged: it should be ~0,
and a large one means the token trace does not line up with what the trainer scores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import GRPOConfig, GRPOTrainer

from repairrl import fingerprint
from repairrl.grpo.rollout import AgentRollout, RolloutConfig, component_reward_funcs
from repairrl.models.loading import load_for_training
from repairrl.sandbox.base import SandboxLimits
from repairrl.training import (
    METRICS,
    TRACKING_FIELDS,
    MetricsCSVCallback,
    TrackingArguments,
    checkpoint_step,
    finish_training,
    resume_point,
    start_tracking,
)

ALGORITHMS = ("gspo", "dr_grpo", "grpo")
CHECKPOINTS, FINAL, EPISODES = "checkpoints", "final", "episodes.jsonl"


class GRPOSetupError(RuntimeError):
    """The stage cannot train as asked (bad reward spec, no tasks, vLLM without a server); says what to change."""


class PolicySyncError(RuntimeError):
    """The generation server's logprobs are far from the trainer's: it is not sampling from the trained policy."""


@dataclass
class GRPOScriptArguments(TrackingArguments):
    """What to train on and where to write it: the stage's own flags (the trainer's are RepairGRPOConfig's)."""

    model: str = field(metadata={"help": "manifest directory of the prepared model (SFT output or base)"})
    tasks: str = field(metadata={"help": "train task table (tasks.jsonl)"})
    out: str = field(metadata={"help": "output directory: checkpoints/, final/, merged/, model.json, metrics.csv"})
    cache_dir: str | None = field(default=None, metadata={"help": "repository cache (python -m repairrl.repos); "
                                  "not needed for --task detection"})
    task: str = field(default="repo_repair", metadata={"help": "repo_repair (the agent in a sandbox), or the "
                      "single-turn file_repair / detection", "choices": ("repo_repair", "file_repair", "detection")})
    max_file_chars: int | None = field(default=None, metadata={"help": "file_repair: largest file in a prompt"})
    lora: bool = field(default=True, metadata={"help": "train a LoRA adapter (the default)"})
    full: bool = field(default=False, metadata={"help": "full fine-tuning instead of LoRA"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint under OUT/checkpoints"})
    rewards: str = field(default="similarity=0.2,resolved=1.0",
                         metadata={"help": "reward weights, 'name=weight,...' (repairrl.grading.rewards)"})
    episode_max_tool_calls: int = field(default=8, metadata={"help": "tool calls per episode"})
    episode_max_new_tokens: int = field(default=512, metadata={"help": "tokens per model turn"})
    episode_timeout: float = field(default=600.0, metadata={"help": "seconds per episode"})
    command_timeout: float = field(default=60.0, metadata={"help": "seconds per shell command"})
    sandbox: str = field(default="bwrap", metadata={"help": "sandbox backend (repairrl.sandbox.make_sandbox)"})
    sandbox_memory_mb: int = field(default=4096, metadata={"help": "memory of each episode's whole sandbox"})
    sandbox_cpus: float = field(default=2.0, metadata={"help": "cores' worth of CPU time of each sandbox"})
    sandbox_max_workdir_mb: int = field(default=2048, metadata={"help": "largest working copy of an episode"})
    grading_budget: float = field(default=300.0, metadata={"help": "seconds to grade one episode's patch (tests "
                                  "included) for the test-based rewards"})
    grading_test_timeout: float = field(default=30.0, metadata={"help": "seconds per test when grading; a test "
                                        "that runs longer fails and the others still run"})
    unsafe: bool = field(default=False, metadata={"help": "allow the unconfined 'unsafe-local' sandbox"})
    rollout_workers: int = field(default=16, metadata={"help": "episodes run at once"})
    work_root: str | None = field(default=None, metadata={"help": "where working copies are made"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "'all-linear' or module names"})


@dataclass
class RepairGRPOConfig(GRPOConfig):
    """GRPOConfig with the stage's defaults and its few flags that set several TRL fields at once."""

    algorithm: str = field(default="gspo", metadata={"help": "gspo, dr_grpo or grpo", "choices": ALGORITHMS})
    generation: str = field(default="inprocess", metadata={"help": "inprocess (the policy in this process, CPU "
                            "runs) or vllm (a `trl vllm-serve` / `vllm serve` server)",
                            "choices": ("inprocess", "vllm")})
    vllm_server_url: str | None = field(default=None, metadata={"help": "e.g. http://gpu-node:8000"})
    tasks_per_step: int = field(default=2, metadata={"help": "tasks per optimizer step, over all processes (each "
                                "num_generations times): the generation batch; micro-batches of "
                                "--per-device-train-batch-size are accumulated over it"})
    max_logprob_gap: float = field(default=0.2, metadata={"help": "vLLM: largest mean |logprob gap| per token "
                                   "between server and trainer before PolicySyncError"})
    logprob_gap_every: int = field(default=1, metadata={"help": "in-process: measure the gap every N steps "
                                   "(from the loss's own forward pass, no extra cost); 0 never"})
    num_generations: int | None = field(default=2, metadata={"help": "episodes per task and step"})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "episodes per forward pass on each "
                                             "process (the micro-batch); gradients are accumulated to the step"})
    max_completion_length: int | None = field(default=2048, metadata={"help": "tokens after the prompt, "
                                              "tool results included; longer episodes are cut"})
    learning_rate: float = field(default=1e-5, metadata={"help": "raise to ~1e-4 for LoRA on small models"})
    save_steps: float = field(default=10, metadata={"help": "steps between checkpoints"})
    logging_steps: float = field(default=1, metadata={"help": "steps between log lines"})
    disable_dropout: bool = field(default=True, metadata={"help": "dropout would make the trainer's logprobs "
                                  "differ from the sampler's"})

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise GRPOSetupError(f"--algorithm {self.algorithm!r}: choose one of {', '.join(ALGORITHMS)}")
        if self.algorithm == "gspo":
            self.loss_type, self.importance_sampling_level = "grpo", "sequence"
            if self.epsilon == 0.2 and self.epsilon_high is None:  # TRL's token-level defaults: use GSPO's
                self.epsilon, self.epsilon_high = 3e-4, 4e-4
        elif self.algorithm == "dr_grpo":
            self.loss_type, self.importance_sampling_level, self.scale_rewards = "dr_grpo", "token", "none"
        else:
            self.loss_type, self.importance_sampling_level = "grpo", "token"
        self._set_batch_arithmetic()
        if self.generation == "vllm":
            if not self.vllm_server_url:
                raise GRPOSetupError("--generation vllm needs --vllm-server-url (the server `trl vllm-serve` "
                                     "started, e.g. http://gpu-node:8000)")
            self.use_vllm, self.vllm_mode, self.vllm_server_base_url = True, "server", self.vllm_server_url
        import torch

        if not torch.cuda.is_available():
            self.use_cpu, self.bf16, self.fp16 = True, False, False
        elif self.bf16 is None and not self.fp16:
            self.bf16 = torch.cuda.get_device_capability()[0] >= 8
            self.fp16 = not self.bf16
        if torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None:
            self.use_liger_kernel = True
        super().__post_init__()


    def _set_batch_arithmetic(self) -> None:
        """One optimizer step = one generation batch of tasks_per_step x num_generations episodes, over all
        processes, trained in micro-batches of per_device_train_batch_size (default 1: a 32k-token agent episode of
        a 14B model is all one GPU's activations hold) and accumulated to the step.

        TRL runs the loss forward, and the old-logprob forward, over one micro-batch at a time; with the whole
        group per device at once, the first step of the 14B study would need hundreds of GB per GPU.
        """
        world_size = launched_processes()  # TRL splits the generation batch over them
        generation = self.num_generations * self.tasks_per_step
        micro = self.per_device_train_batch_size * world_size
        if generation % micro != 0:
            raise GRPOSetupError(
                f"a step's {generation} episodes (tasks_per_step {self.tasks_per_step} x num_generations "
                f"{self.num_generations}) are not divisible by per_device_train_batch_size "
                f"{self.per_device_train_batch_size} x {world_size} processes; change one of them")
        self.generation_batch_size, self.steps_per_generation = generation, None
        self.gradient_accumulation_steps = generation // micro


def launched_processes() -> int:
    """The number of training processes, as `accelerate launch`/torchrun tell each one (before the config's
    distributed state exists)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def parse_rewards(spec: str) -> dict[str, float]:
    weights = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition("=")
        try:
            weights[name.strip()] = float(weight) if weight else 1.0
        except ValueError as error:
            raise GRPOSetupError(f"--rewards {spec!r}: weight of {name!r} is not a number") from error
    if not weights:
        raise GRPOSetupError("--rewards is empty; give e.g. 'similarity=0.2,resolved=1.0'")
    return weights


# --- the trainer: TRL's, plus the agent metrics and the logprob-gap check ---


class AgentGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose rollouts are agent episodes; adds the rollout's metrics and the logprob gap to its logs."""

    def __init__(self, *args: Any, rollout: AgentRollout, **kwargs: Any):
        super().__init__(*args, rollout_func=self._rollout_after_weight_sync, **kwargs)
        self.rollout = rollout
        self._gap_due = False  # this generation batch's logprob gap is to be read from its loss passes
        self._loss_inputs: dict | None = None  # the micro-batch whose loss is being computed, while _gap_due

    def _rollout_after_weight_sync(self, prompts: list, trainer: Any) -> dict[str, list]:
        # TRL's main process pushes the new weights to the server just before this call while the other ranks only
        # take part in the gathers; without the barrier they would start sampling from the old weights.
        if self.use_vllm:
            self.accelerator.wait_for_everyone()
        return self.rollout(prompts, trainer)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        with self.rollout._lock:
            stats, self.rollout.step_stats = self.rollout.step_stats, []
        if self.accelerator.num_processes > 1:  # every rank ran its share of the step's episodes: all of them count
            from accelerate.utils import gather_object

            gathered = gather_object(stats)  # a collective: every rank calls it, with or without stats
            stats = [combine_step_stats(gathered)] if gathered else []
        for summary in stats:
            for key, value in summary.items():
                self._metrics[mode][f"agent/{key}"].append(float(value))
        self._measure_logprob_gap(output, mode)
        return output

    def _measure_logprob_gap(self, output: dict, mode: str) -> None:
        sampled = output.get("sampling_per_token_logps")
        if sampled is None:
            return
        trained = output.get("old_per_token_logps")  # computed by TRL whenever vLLM importance sampling is on
        every = self.args.logprob_gap_every
        # Otherwise (in-process, old logprobs not needed) it is measured in the loss's forward passes.
        self._gap_due = (trained is None and not self.use_vllm and every > 0
                         and self.state.global_step % every == 0)
        if trained is not None:
            self._record_logprob_gap(trained, sampled, output, mode)

    def _compute_loss(self, model: Any, inputs: dict) -> Any:
        self._loss_inputs = inputs if self._gap_due else None
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._loss_inputs = None

    def _get_per_token_logps_and_entropies(self, *args: Any, **kwargs: Any) -> Any:
        # In-process without old logprobs, the loss's own forward pass scores each micro-batch with the weights
        # that sampled it (the optimizer steps after the whole generation batch), so its logprobs are the trainer's
        # side of the gap at no cost; a separate forward pass for it cost about a sixth of the step.
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        inputs = self._loss_inputs
        if inputs is not None and inputs.get("sampling_per_token_logps") is not None:
            self._loss_inputs = None  # one measurement per loss call
            self._record_logprob_gap(result[0].detach(), inputs["sampling_per_token_logps"], inputs,
                                     "train" if self.model.training else "eval")
        return result

    def _record_logprob_gap(self, trained: Any, sampled: Any, batch: dict, mode: str) -> None:
        """Log the mean and max |trained - sampled| over generated tokens; with vLLM, stop on a large mean."""
        import torch

        mask = batch["completion_mask"] * batch.get("tool_mask", torch.ones_like(batch["completion_mask"]))
        gap = ((trained - sampled).abs() * mask).nan_to_num(0.0)
        tokens = mask.sum()
        mean_gap = (gap.sum() / tokens.clamp(min=1)).item()
        max_gap = gap.max().item() if tokens > 0 else 0.0
        self._metrics[mode]["agent/logprob_gap_mean"].append(mean_gap)
        # TRL averages a metric's values at logging; the max over micro-batches is kept as one running value.
        maxima = self._metrics[mode]["agent/logprob_gap_max"]
        if maxima:
            maxima[-1] = max(maxima[-1], max_gap)
        else:
            maxima.append(max_gap)
        if self.use_vllm and mean_gap > self.args.max_logprob_gap:
            raise PolicySyncError(
                f"step {self.state.global_step}: the vLLM server's logprobs differ from the trainer's by "
                f"{mean_gap:.3f} nats per token on average (bound {self.args.max_logprob_gap}). The server is not "
                "sampling from the policy being trained: check that weight sync reaches it (LoRA adapters are "
                "merged before the push), that it serves the same checkpoint and dtype, and that it returns "
                "processed logprobs (vLLM --logprobs-mode processed_logprobs).")


# Step metrics that are counts (summed over the ranks) or wall times of parallel work (the slowest rank's).
_SUMMED = ("episodes", "grading_errors", "test_timeouts", "test_infra_edits", "episodes_per_hour")
_SLOWEST = ("rollout_s", "reward_s", "generation_s", "tools_s")


def combine_step_stats(summaries: list[dict]) -> dict:
    """One step's agent metrics from every rank's summary (repairrl.grpo.rollout.summarize_episodes): counts
    summed, wall times the slowest rank's, per-episode means and rates weighted by each rank's episodes."""
    summaries = [s for s in summaries if s]
    total = sum(s.get("episodes", 0) for s in summaries) or 1
    combined: dict = {}
    for key in dict.fromkeys(k for s in summaries for k in s):
        values = [(s.get(key, 0.0), s.get("episodes", 0)) for s in summaries]
        if key in _SUMMED:
            combined[key] = sum(v for v, _ in values)
        elif key in _SLOWEST:
            combined[key] = max(v for v, _ in values)
        else:
            combined[key] = sum(v * n for v, n in values) / total
    return combined


def lora_config(args: GRPOScriptArguments):
    from peft import LoraConfig

    targets = args.lora_target_modules
    return LoraConfig(task_type="CAUSAL_LM", r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                      target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")])


def task_dataset(tasks: list) -> Any:
    """The prompt dataset: one row per task, its instance id as the prompt (the rollout renders the real one)."""
    from datasets import Dataset

    if not tasks:
        raise GRPOSetupError("the task table is empty: nothing to train on")
    return Dataset.from_dict({"prompt": [task.instance_id for task in tasks]})


def openai_backend_factory(config: RepairGRPOConfig, rollout_config: RolloutConfig):
    """Generation on the vLLM server TRL syncs the weights to, token ids in and out (`/v1/completions`).

    The prompt is rendered here with the policy's tokenizer, tools block included, and tool results are appended
    as tokens, exactly as in-process: the trace is the ids the server sampled, never a re-rendering of them.
    """
    from repairrl.grpo.rollout import as_context
    from repairrl.models.backends import SamplingParams, TokenEndpointBackend

    def factory(trainer: Any):
        sampling = SamplingParams(temperature=config.temperature, top_p=config.top_p,
                                  max_new_tokens=rollout_config.max_new_tokens_per_turn)
        return as_context(TokenEndpointBackend(config.vllm_server_url.rstrip("/") + "/v1", trainer.processing_class,
                                               sampling=sampling, eos_ids=list(trainer.eos_token_ids)))

    return factory


def build_trainer(model, tokenizer, tasks: list, config: RepairGRPOConfig, rollout_config: RolloutConfig,
                  peft_config=None, backend_factory=None, open_sandbox=None, prepare_worktree=None,
                  metrics_path: Path | None = None, resume_from: str | None = None) -> AgentGRPOTrainer:
    """The stage's trainer; tests build it the same way with a tiny model and a scripted sandbox."""
    if backend_factory is None and config.generation == "vllm":
        backend_factory = openai_backend_factory(config, rollout_config)
    rollout = AgentRollout(tasks, rollout_config, backend_factory, open_sandbox, prepare_worktree)
    reward_funcs, weights = component_reward_funcs(rollout_config.rewards)
    config.reward_weights = weights
    callbacks = [MetricsCSVCallback(metrics_path, resume_from)] if metrics_path else []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*rollout_func.*experimental.*")
        return AgentGRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=task_dataset(tasks),
                                processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
                                rollout=rollout)


def rollout_config_from(args: GRPOScriptArguments, config: RepairGRPOConfig, out_dir: Path) -> RolloutConfig:
    from repairrl.agent.loop import AgentConfig

    agent = AgentConfig(max_tool_calls=args.episode_max_tool_calls, timeout_s=args.episode_timeout,
                        command_timeout_s=args.command_timeout)
    return RolloutConfig(
        cache_dir=Path(args.cache_dir) if args.cache_dir else None, rewards=parse_rewards(args.rewards), agent=agent,
        max_completion_length=config.max_completion_length, max_new_tokens_per_turn=args.episode_max_new_tokens,
        sandbox=args.sandbox, unsafe=args.unsafe, workers=args.rollout_workers,
        grading_timeout_s=args.grading_budget, grading_test_timeout_s=args.grading_test_timeout,
        sandbox_limits=SandboxLimits(command_timeout_s=args.command_timeout, memory_mb=args.sandbox_memory_mb,
                                     cpus=args.sandbox_cpus, max_workdir_mb=args.sandbox_max_workdir_mb),
        work_root=Path(args.work_root) if args.work_root else None, episodes_path=out_dir / EPISODES,
        seed=config.seed, task_kind=args.task, max_file_chars=args.max_file_chars,
    )


def truncate_journal(path: Path, after_step: int) -> None:
    """On resume, forget the episodes of steps after the checkpoint: they are run again."""
    from repairrl.records import read_journal, write_jsonl

    if path.is_file():
        write_jsonl(path, [r for r in read_journal(path) if r.get("step", 0) < after_step])


# Script flags that say where things are or how many run at once, not what is trained.
NOT_STATE_ARGS = ("model", "tasks", "out", "resume", "cache_dir", "work_root", "rollout_workers",
                  *TRACKING_FIELDS)


def grpo_fingerprint(args: GRPOScriptArguments, config: RepairGRPOConfig) -> dict:
    """What the checkpoints (and the episode journal and metrics that go with them) are trained from."""
    inputs = {"model": fingerprint.model_signature(args.model), "tasks": fingerprint.path_signature(args.tasks)}
    script = {k: v for k, v in vars(args).items() if k not in NOT_STATE_ARGS}
    # The default is built with this run's batch shape: TRL's defaults need not divide over its processes.
    batch = {k: getattr(config, k) for k in ("tasks_per_step", "num_generations", "per_device_train_batch_size")}
    default = type(config)(output_dir=config.output_dir, generation="inprocess", **batch)
    trainer = fingerprint.changed_fields(config, default, fingerprint.NOT_STATE_FIELDS)
    return fingerprint.stage_fingerprint(inputs, {**script, **batch, **trainer})


def train_grpo(args: GRPOScriptArguments, config: RepairGRPOConfig) -> dict:
    from repairrl.grading.rewards import check_rewards_computable
    from repairrl.tasks import read_task_table

    out_dir = Path(args.out)
    lora = args.lora and not args.full
    tasks = read_task_table(args.tasks, args.task)
    # Before the model loads: a reward the grader cannot compute would train on zeros.
    check_rewards_computable(parse_rewards(args.rewards), args.task, tasks, args.sandbox)
    resume_from = resume_point(
        out_dir, config.output_dir, grpo_fingerprint(args, config), stage="grpo", resume=args.resume
    )
    if not resume_from:
        (out_dir / EPISODES).unlink(missing_ok=True)
    else:
        truncate_journal(out_dir / EPISODES, checkpoint_step(resume_from))
    model, tokenizer = load_for_training(args.model, bool(config.bf16), lora)
    rollout_config = rollout_config_from(args, config, out_dir)
    trainer = build_trainer(model, tokenizer, tasks, config, rollout_config, lora_config(args) if lora else None,
                            metrics_path=out_dir / METRICS, resume_from=resume_from)
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.monotonic() - started
    summary = {
        "algorithm": config.algorithm, "method": "lora" if lora else "full", "generation": config.generation,
        "global_step": trainer.state.global_step, "resumed_from": resume_from, "train_loss": result.training_loss,
        "train_seconds": round(seconds, 2), "tasks": len(tasks), "num_generations": config.num_generations,
        "rewards": rollout_config.rewards, "task": args.task,
    }
    trainer.save_model(str(out_dir / FINAL))  # on every rank: the Trainer writes once, and gathers where sharded
    finish_training(trainer, tokenizer, tokenizer.chat_template, out_dir, args.model, summary, config)
    return summary


def parse_args(argv: list[str] | None = None) -> tuple[GRPOScriptArguments, RepairGRPOConfig]:
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a.split("=")[0] in ("--output_dir", "--output-dir") for a in argv):
        out = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--out"),
                   next((a.split("=", 1)[1] for a in argv if a.startswith("--out=")), None))
        if out:  # checkpoints live under OUT; set before the config's own checks run
            argv += ["--output_dir", str(Path(out) / CHECKPOINTS)]
    args, config = TrlParser((GRPOScriptArguments, RepairGRPOConfig)).parse_args_and_config(args=argv)
    if args.full:
        args.lora = False
    return args, config


def main(argv: list[str] | None = None) -> int:
    from repairrl.grading.rewards import RewardNotComputableError

    argv = list(sys.argv[1:] if argv is None else argv)
    args, config = parse_args(argv)
    start_tracking(args, config, Path(args.out), "grpo", argv)
    try:
        summary = train_grpo(args, config)
    except RewardNotComputableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
