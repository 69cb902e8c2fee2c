"""GRPO rollouts with the agent in the loop: TRL's `rollout_func` runs one agent episode per completion.

    rollout = AgentRollout(tasks, RolloutConfig(cache_dir=..., rewards={"similarity": 0.2, "resolved": 1.0}))
    trainer = GRPOTrainer(..., rollout_func=rollout, reward_funcs=component_reward_funcs(rollout.rewards))

TRL calls `rollout(prompts, trainer)` with every prompt (a task's instance id) already repeated `num_generations`
times. Each entry gets its own working copy from the repository cache and its own sandbox; all episodes of the
step run at once in threads and start their first turns together once every one is set up, so the in-process
backend batches their generate calls into one `model.generate` per turn.

Token-in, token-out: the completion is the episode's token trace after the initial rendered prompt, exactly as the
backend recorded it: generated ids (env_mask 1, with their sampling logprobs) and tool-result ids (env_mask 0).
Nothing is re-tokenized. An episode longer than `max_completion_length` is cut there; every completion is closed
with an end-of-turn token the model did not write (masked), so that TRL does not take it for a cut-off generation.
An episode that fails (no working copy, the sandbox does not start, the backend crashes) gets reward 0 and a
one-token masked completion; it is recorded with its error and the step goes on.

Single-turn tasks (`task_kind` file_repair or detection) run the same way with a one-turn episode of
`repairrl.singleturn.episode` instead of the agent: no working copy, no sandbox, the answer read by the task's parser.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repairrl.agent.loop import SYSTEM_PROMPT, AgentConfig, run_episode
from repairrl.agent.tools import COMMAND_KINDS, TOOL_SCHEMAS, TOOLS
from repairrl.grading.infrastructure import test_infrastructure_edits
from repairrl.grading.rewards import compose_rewards
from repairrl.models.backends import (
    INPROCESS,
    ChatBackend,
    EndpointUnavailableError,
    ModelTurn,
    SamplingParams,
    TokenTrace,
)
from repairrl.records import append_jsonl, validate_record
from repairrl.repos import anonymous_worktree_path
from repairrl.sandbox.base import Sandbox, SandboxLimits
from repairrl.scratch import make_scratch
from repairrl.singleturn.episode import make_environment, run_single_turn
from repairrl.tasks import SINGLE_TURN_KINDS, Task, check_task_kind
from repairrl.trajectories import failed_record

# A backend for one rollout call, built from the trainer (so it can use the current policy weights).
BackendFactory = Callable[[Any], Any]  # trainer -> context manager yielding a ChatBackend
OpenSandbox = Callable[[Path, Task], Sandbox]
PrepareWorktree = Callable[[Task, Path], Path]


class RolloutError(RuntimeError):
    """The rollout cannot run at all (unknown task id, no usable backend); one episode's failure is not this."""


@dataclass
class RolloutConfig:
    cache_dir: Path | None = None
    rewards: dict[str, float] = field(default_factory=lambda: {"similarity": 1.0})
    agent: AgentConfig = field(default_factory=lambda: AgentConfig(max_tool_calls=8, timeout_s=600.0))
    max_completion_length: int = 2048
    max_new_tokens_per_turn: int = 512
    sandbox: str = "bwrap"
    unsafe: bool = False
    sandbox_limits: SandboxLimits = field(default_factory=SandboxLimits)  # the episode's; its command timeout
    # is the agent's
    grading_timeout_s: float = 300.0  # the whole grading of one episode's patch
    grading_test_timeout_s: float = 30.0  # one test
    workers: int = 16  # episodes run at once (each one thread; generation is batched across them)
    work_root: Path | None = None  # where working copies are made (default: $TMPDIR)
    episodes_path: Path | None = None  # JSONL journal of every episode (one record each)
    # Overlong filtering (DAPO): an episode cut at max_completion_length trains nothing, though it still counts
    # in its group's baseline. Off by default: a cut episode's earlier turns are still the policy's own tokens.
    mask_truncated: bool = False
    seed: int | None = None
    task_kind: str = "repo_repair"  # or a single-turn task: file_repair, detection
    max_file_chars: int | None = None  # file_repair: largest file shown in a prompt


@dataclass
class Completion:
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    logprobs: list[float]
    truncated: bool
    trainable: bool


def trace_to_completion(token_ids: list[int], loss_mask: list[int], logprobs: list[float], eos_ids: list[int],
                        max_completion_length: int, mask_truncated: bool = False) -> Completion:
    """Split an episode's token trace into TRL's prompt and completion, cut and closed.

    The prompt is everything before the first generated token: the initial rendered conversation. The closing
    token, where one is needed, is `eos_ids[0]`.
    """
    if not token_ids or 1 not in loss_mask:
        raise RolloutError("the episode generated no tokens")
    start = loss_mask.index(1)
    ids, mask, logps = token_ids[start:], loss_mask[start:], logprobs[start:]
    truncated = len(ids) >= max_completion_length
    if truncated:  # keep room for the closing token
        keep = max_completion_length - 1
        ids, mask, logps = ids[:keep], mask[:keep], logps[:keep]
    if mask_truncated and truncated:
        mask = [0] * len(mask)
    if ids[-1] not in eos_ids or mask[-1] == 0:
        # Close the episode with a token the model did not write, so TRL sees an ended completion. A turn the
        # model ended itself already ends with its own end-of-turn token, trained on as usual.
        ids, mask, logps = [*ids, eos_ids[0]], [*mask, 0], [*logps, 0.0]
    logps = [lp if m else 0.0 for lp, m in zip(logps, mask, strict=True)]
    return Completion(token_ids[:start], ids, mask, logps, truncated, trainable=any(mask))


class _CompletionBudget:
    """Wraps a chat backend so that an episode never generates past the completion budget.

    The budget counts every token after the initial prompt (tool results too, as TRL's completion does). When it is
    spent the session answers an empty, cut-off turn, which ends the episode with stop reason `max_tokens`.
    """

    def __init__(self, backend: ChatBackend, max_completion_length: int):
        self.backend = backend
        self.max_completion_length = max_completion_length
        self.model_name = backend.model_name

    def start_session(self, tools: list[dict] | None = None, seed: int | None = None) -> _BudgetSession:
        return _BudgetSession(self.backend.start_session(tools=tools, seed=seed), self.max_completion_length)

    def close(self) -> None:
        pass


class _BudgetSession:
    def __init__(self, session: Any, max_completion_length: int):
        self.session = session
        self.max_completion_length = max_completion_length
        self.prompt_tokens: int | None = None
        self.context_tokens = 0

    @property
    def trace(self) -> TokenTrace:
        return self.session.trace

    def generate(self, messages: list[dict], max_new_tokens: int | None = None) -> ModelTurn:
        # Tool results since the last turn are not counted yet (the backend tokenizes them inside generate): an
        # episode may overshoot by one tool result, which the cut in `trace_to_completion` removes.
        used = 0 if self.prompt_tokens is None else self.context_tokens - self.prompt_tokens
        remaining = self.max_completion_length - used
        if remaining <= 0:
            return ModelTurn("", None, "length", self.context_tokens, 0)
        turn = self.session.generate(messages, max_new_tokens=min(max_new_tokens or remaining, remaining))
        if self.prompt_tokens is None:
            self.prompt_tokens = turn.context_tokens - turn.completion_tokens
        self.context_tokens = turn.context_tokens
        return turn

    def close(self) -> None:
        self.session.close()


@contextmanager
def inprocess_policy_backend(trainer: Any, sampling: SamplingParams, max_batch_size: int = 64,
                             backend_class: Callable[..., Any] | None = None):
    """The in-process backend on the trainer's current policy weights (no copy), in eval mode while it runs."""
    import torch
    from trl.models import unwrap_model_for_generation

    from repairrl.models.backends import InProcessBackend

    args = trainer.args
    with unwrap_model_for_generation(
        trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation,
        gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
    ) as model, torch.no_grad():
        was_training = model.training
        model.eval()
        backend = (backend_class or InProcessBackend)(model, trainer.processing_class, sampling,
                                                      model_name="policy", max_batch_size=max_batch_size)
        try:
            yield backend
        finally:
            backend.close()
            model.train(was_training)


class _StartTogether:
    """The first wave of a step's episodes (as many as run at once) starts its first turns together.

    A batching backend (in-process) batches the turns of the sessions that are open. Without this, the episode
    whose working copy and sandbox are ready first asks alone, the others join one turn later, and every later
    batch mixes turns of different lengths: a third more decoding steps and one more generate call per step.
    Each of those episodes arrives once, after its setup or on its failure; later waves start as workers free up.
    """

    def __init__(self, parties: int, timeout_s: float = 600.0):
        self.parties = parties
        self._barrier = threading.Barrier(parties, timeout=timeout_s) if parties > 1 else None
        self._arrived: set[int] = set()
        self._lock = threading.Lock()

    def arrive(self, index: int) -> None:
        if self._barrier is None or index >= self.parties:
            return
        with self._lock:
            if index in self._arrived:
                return
            self._arrived.add(index)
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:
            pass  # one episode's setup outlasted the timeout: the others go on unbatched rather than wait


def episode_stats(record: dict) -> dict:
    """The per-episode numbers the step metrics average: tool calls by kind, turns, tokens, times."""
    stats = record.get("tool_stats") or {}
    by_tool = stats.get("by_tool") or {}
    kinds = stats.get("command_kinds") or {}
    row = {
        "tool_calls": stats.get("calls", 0),
        "tool_failures": stats.get("failures", 0),
        "invalid_calls": stats.get("invalid_calls", 0),
        "turns": record["tokens"]["turns"],
    }
    for name in TOOLS:
        row[f"calls_{name}"] = (by_tool.get(name) or {}).get("calls", 0)
    for kind in COMMAND_KINDS:
        row[f"commands_{kind}"] = kinds.get(kind, 0)
    return row


class AgentRollout:
    """TRL's `rollout_func`: one agent episode per prompt entry, graded, as token ids with an env mask."""

    def __init__(self, tasks: list[Task], config: RolloutConfig, backend_factory: BackendFactory | None = None,
                 open_sandbox: OpenSandbox | None = None, prepare_worktree: PrepareWorktree | None = None):
        self.tasks = {task.instance_id: task for task in tasks}
        self.config = config
        self.rewards = compose_rewards(config.rewards, check_task_kind(config.task_kind))
        self.single_turn = (make_environment(config.task_kind, config.cache_dir, config.max_file_chars)
                            if config.task_kind in SINGLE_TURN_KINDS else None)
        self.backend_factory = backend_factory
        self.open_sandbox = open_sandbox or self._default_sandbox
        self.prepare_worktree = prepare_worktree or self._default_worktree
        self.step_stats: list[dict] = []  # one entry per call; the metrics callback drains it
        self._lock = threading.Lock()
        self.calls = 0

    # Defaults: the repository cache and task_sandbox ---------------------------------------------------------

    def _default_worktree(self, task: Task, dest: Path) -> Path:
        from repairrl.repos import materialize_worktree

        if self.config.cache_dir is None:
            raise RolloutError("RolloutConfig.cache_dir is not set: the repository cache the copies come from")
        return materialize_worktree(Path(self.config.cache_dir), task, dest)

    def _default_sandbox(self, workdir: Path, task: Task) -> Sandbox:
        from repairrl.sandbox import task_sandbox

        limits = dataclasses.replace(self.config.sandbox_limits, command_timeout_s=self.config.agent.command_timeout_s)
        return task_sandbox(self.config.sandbox, workdir, task, limits=limits, unsafe=self.config.unsafe)

    # One episode ----------------------------------------------------------------------------------------------

    def _grade(self, task: Task, record: dict) -> tuple[dict[str, float | None], float, dict | None]:
        started = time.monotonic()
        outcome = None
        if record["status"] == "ok" and self.rewards.needs_tests:
            from repairrl.grading.grade import grade_with_tests

            backend = "unsafe" if self.config.sandbox == "unsafe-local" else self.config.sandbox
            outcome = grade_with_tests(task, record["diff"], self.config.cache_dir, model_name="policy",
                                       timeout_s=self.config.grading_timeout_s,
                                       test_timeout_s=self.config.grading_test_timeout_s, backend=backend,
                                       work_root=self.config.work_root)
        if record["status"] != "ok":
            components: dict[str, float | None] = dict.fromkeys(self.rewards.weights, 0.0)
        else:
            answer = next((m["content"] for m in reversed(record["messages"]) if m["role"] == "assistant"), "")
            score = self.rewards(task, {"model_patch": record["diff"], "answer_text": answer}, outcome)
            components = {name: score.components.get(name) for name in self.rewards.weights}
        total = sum(self.rewards.weights[n] * (v or 0.0) for n, v in components.items())
        outcome_record = outcome.to_record() if outcome is not None else None
        return components, total, {"seconds": time.monotonic() - started, "outcome": outcome_record}

    def _episode(self, index: int, task_id: str, backend: ChatBackend, scratch: Path, step: int,
                 start: _StartTogether | None = None) -> dict:
        task = self.tasks[task_id]
        seed = None if self.config.seed is None else self.config.seed + 1000 * step + index
        dest = anonymous_worktree_path(scratch)
        started = time.monotonic()
        start = start or _StartTogether(0)
        try:
            if self.single_turn is not None:
                record = run_single_turn(self.single_turn, task, backend, sample=index, seed=seed,
                                         max_new_tokens=self.config.max_new_tokens_per_turn)
            else:
                workdir = self.prepare_worktree(task, dest)
                with self.open_sandbox(workdir, task) as sandbox:
                    start.arrive(index)
                    record = run_episode(task, backend, sandbox, workdir, self.config.agent, sample=index, seed=seed)
        except EndpointUnavailableError:
            raise  # the generation server is gone: a step of zero rewards would train on nothing but the outage
        except Exception as error:  # noqa: BLE001 - one episode's failure is recorded with it; the step goes on
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            record = failed_record(task, index, backend.model_name, detail, seed=seed)
        finally:
            start.arrive(index)  # an episode whose working copy or sandbox failed must not hold the others
            shutil.rmtree(dest, ignore_errors=True)
        record["episode_s"] = time.monotonic() - started
        return record

    def _to_completion(self, record: dict, eos_ids: list[int]) -> Completion | None:
        if record["status"] != "ok":
            return None
        if record["token_source"] != INPROCESS and record["token_source"] != "endpoint":
            record["status"], record["error"] = "failed", (
                f"the backend recorded no token trace (source {record['token_source']!r}); GRPO needs token ids")
            return None
        try:
            return trace_to_completion(record["token_ids"], record["loss_mask"], record["logprobs"], eos_ids,
                                       self.config.max_completion_length, self.config.mask_truncated)
        except RolloutError as error:
            record["status"], record["error"] = "failed", str(error)
            return None

    def _fallback_prompt_ids(self, tokenizer: Any, task: Task) -> list[int]:
        """A failed episode's prompt: the conversation it would have started with (it is never trained on)."""
        if self.single_turn is None:
            messages = [{"role": "system", "content": SYSTEM_PROMPT.format(repo_path=self.config.agent.repo_path)},
                        {"role": "user", "content": task.problem_statement}]
        else:
            try:
                messages = self.single_turn.prompt(task).messages
            except Exception:  # noqa: BLE001 - the prompt is what failed; any prompt will do for a masked row
                messages = [{"role": "user", "content": task.instance_id}]
        tools = TOOL_SCHEMAS if self.single_turn is None else None  # as the episodes' prompts render them
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    # TRL's extension point --------------------------------------------------------------------------------------

    def __call__(self, prompts: list, trainer: Any) -> dict[str, list]:
        unknown = sorted({p for p in prompts if p not in self.tasks})
        if unknown:
            raise RolloutError(f"prompt(s) {unknown[:3]} are not instance ids of the task table given to the rollout")
        tokenizer = trainer.processing_class
        eos_ids = list(trainer.eos_token_ids)
        step = trainer.state.global_step
        args = trainer.args
        sampling = SamplingParams(temperature=args.temperature, top_p=args.top_p,
                                  max_new_tokens=self.config.max_new_tokens_per_turn,
                                  seed=None if self.config.seed is None else self.config.seed + step)
        started = time.monotonic()
        scratch = make_scratch("repairrl-grpo-", self.config.work_root)
        factory = self.backend_factory or (lambda t: inprocess_policy_backend(t, sampling))
        workers = max(1, min(self.config.workers, len(prompts)))
        try:
            # Each episode is graded as soon as it ends, while the others still generate: the tests of a finished
            # episode (a container, a test suite) need no GPU. reward_s is only what the step waits after generation.
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpo-grade") as grading:

                start = _StartTogether(workers)

                def episode_then_grade(index: int, task_id: str) -> tuple[dict, Any]:
                    record = self._episode(index, task_id, backend, scratch, step, start)
                    return record, grading.submit(self._grade, self.tasks[record["instance_id"]], record)

                with factory(trainer) as inner:
                    backend = _CompletionBudget(inner, self.config.max_completion_length)
                    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpo-episode") as pool:
                        pending = list(pool.map(lambda pair: episode_then_grade(*pair), enumerate(prompts)))
                generation_s = time.monotonic() - started
                reward_started = time.monotonic()
                records = [record for record, _ in pending]
                graded = [future.result() for _, future in pending]
                reward_s = time.monotonic() - reward_started
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return self._assemble(records, graded, tokenizer, eos_ids, step, generation_s, reward_s)

    def _assemble(self, records: list[dict], graded: list, tokenizer: Any, eos_ids: list[int],
                  step: int, generation_s: float, reward_s: float) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("prompt_ids", "completion_ids", "logprobs", "env_mask",
                                                "reward_components", "episode")}
        rows = []
        for record, (components, total, grading) in zip(records, graded, strict=True):
            completion = self._to_completion(record, eos_ids)
            if completion is None:  # a failed episode: reward 0, nothing trained on
                components = dict.fromkeys(components, 0.0)
                total = 0.0
                task = self.tasks[record["instance_id"]]
                completion = Completion(self._fallback_prompt_ids(tokenizer, task),
                                        [eos_ids[0]], [0], [0.0], truncated=False, trainable=False)
            truncated = completion.truncated or record["stop_reason"] == "max_tokens"
            episode = {
                "step": step, "instance_id": record["instance_id"], "sample": record["sample"],
                "status": record["status"], "stop_reason": record["stop_reason"], "error": record["error"],
                "reward": total, "reward_components": components, "resolved": bool(components.get("resolved")),
                "truncated": truncated, "trainable": completion.trainable, "diff": record["diff"],
                "prompt_tokens": len(completion.prompt_ids), "completion_tokens": len(completion.completion_ids),
                "generated_tokens": sum(completion.env_mask), "tool_stats": record["tool_stats"],
                "turns": record["tokens"]["turns"], "timings": record["timings"],
                "episode_s": round(record.get("episode_s", 0.0), 4), "grading_s": round(grading["seconds"], 4),
                "grading": grading["outcome"], "task_kind": self.config.task_kind,
                "answer": record.get("answer"), "answer_error": record.get("answer_error"),
            }
            validate_record(episode, "grpo_episode", f"{record['instance_id']} episode {record['sample']}")
            if self.config.episodes_path is not None:
                with self._lock:
                    append_jsonl(self.config.episodes_path, episode)
            out["prompt_ids"].append(completion.prompt_ids)
            out["completion_ids"].append(completion.completion_ids)
            out["logprobs"].append(completion.logprobs)
            out["env_mask"].append(completion.env_mask)
            out["reward_components"].append(components)
            out["episode"].append(episode)
            rows.append({**episode_stats(record), **grading_flags(record, grading["outcome"], self.config.task_kind,
                                                               self.tasks[record["instance_id"]]),
                         "reward": total, "failed": record["status"] != "ok",
                         "truncated": truncated, "resolved": episode["resolved"],
                         "completion_tokens": len(completion.completion_ids),
                         "generated_tokens": sum(completion.env_mask),
                         "model_s": record["timings"]["model_s"], "tool_s": record["timings"]["tool_s"]})
        with self._lock:
            self.calls += 1
            self.step_stats.append(summarize_episodes(rows, generation_s, reward_s))
        return out


def grading_flags(record: dict, outcome: dict | None, task_kind: str, task: Task) -> dict:
    """Whether the episode's grading failed, a test timed out, and the patch edited test infrastructure.

    Counted per step so that a reward of 0 from a grader that could not grade is never mistaken for a result.
    Infrastructure edits are read from the patch itself (the grader's policy), so they are counted even when no
    test-based reward ran.
    """
    outcome = outcome or {}
    edits = (test_infrastructure_edits(record["diff"], task)
             if task_kind != "detection" and record["status"] == "ok" else [])
    return {
        "grading_error": outcome.get("status") == "error",
        "test_timeout": outcome.get("status") == "timeout" or bool(outcome.get("timed_out_tests")),
        "test_infra_edit": bool(edits),
    }


def summarize_episodes(rows: list[dict], generation_s: float, reward_s: float) -> dict:
    """One rollout call's metrics: means per episode, rates, and where the wall time went."""
    count = max(len(rows), 1)

    def mean(key: str) -> float:
        return sum(float(r[key]) for r in rows) / count

    totals = Counter()
    for row in rows:
        totals.update({k: v for k, v in row.items() if k.startswith(("calls_", "commands_"))})
    summary = {
        "episodes": len(rows),
        "failure_rate": mean("failed"),
        "resolve_rate": mean("resolved"),
        "truncation_rate": mean("truncated"),
        "turns_per_episode": mean("turns"),
        "tokens_per_episode": mean("completion_tokens"),
        "generated_tokens_per_episode": mean("generated_tokens"),
        "tool_calls_per_episode": mean("tool_calls"),
        "tool_failures_per_episode": mean("tool_failures"),
        "invalid_calls_per_episode": mean("invalid_calls"),
        # Counts, not rates: each is a reward that does not mean what it says (see grading_flags).
        "grading_errors": sum(bool(r.get("grading_error")) for r in rows),
        "test_timeouts": sum(bool(r.get("test_timeout")) for r in rows),
        "test_infra_edits": sum(bool(r.get("test_infra_edit")) for r in rows),
        "rollout_s": generation_s + reward_s,
        "reward_s": reward_s,
        # Episode threads overlap, so the model/tool split of the rollout's wall time is by their summed shares.
        "generation_s": generation_s * _share(rows, "model_s"),
        "tools_s": generation_s * (1 - _share(rows, "model_s")),
        "episodes_per_hour": 3600.0 * len(rows) / max(generation_s + reward_s, 1e-9),
    }
    summary.update({f"{k}_per_episode": v / count for k, v in sorted(totals.items())})
    return summary


def _share(rows: list[dict], key: str) -> float:
    model = sum(r["model_s"] for r in rows)
    tools = sum(r["tool_s"] for r in rows)
    return model / (model + tools) if model + tools > 0 else 1.0


def component_reward_funcs(weights: dict[str, float]) -> tuple[list[Callable], list[float]]:
    """One TRL reward function per reward component, reading what the rollout graded; and their weights.

    TRL logs each function's mean and std under its name and sums them with `reward_weights`, which is exactly
    `compose_rewards(weights)`'s total.
    """
    funcs = []
    for name in weights:
        def read(prompts: list, completions: list, reward_components: list[dict], _name: str = name,
                 **kwargs: Any) -> list[float | None]:
            return [components.get(_name) for components in reward_components]

        read.__name__ = name
        funcs.append(read)
    return funcs, [float(w) for w in weights.values()]


def as_context(backend: ChatBackend):
    """A fixed backend (an OpenAI-compatible server, a test double) as a rollout backend factory's result."""
    return nullcontext(backend)
