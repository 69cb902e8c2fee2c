"""Single-turn episodes: one prompt, one answer, no tools, recorded in the agent's trajectory format.

The single-turn task kinds (repairrl.tasks.TASK_KINDS; repo_repair is the agent's loop, not handled here):

    file_repair   the issue and the files to change -> search/replace edits -> a unified diff
    detection     one function -> <answer>vulnerable|benign</answer>

The record has every field of an agent trajectory (so predictions, SFT data, GRPO and the report read it the same
way) plus `task_kind`, `answer` (the parsed label, detection only) and `answer_error` (why the answer could not be
used: edits that do not apply, no well-formed label). A bad answer is the model's failure, recorded with status ok;
status failed is kept for episodes that could not run at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from repairrl.models.backends import ChatBackend, EndpointUnavailableError, ModelError
from repairrl.tasks import UnknownTaskKindError, check_task_kind
from repairrl.trajectories import trajectory_record


@dataclass(frozen=True)
class Prompt:
    messages: list[dict]
    context: Any = None  # what interpreting the answer needs (file_repair: the files shown)


@dataclass(frozen=True)
class Interpretation:
    diff: str = ""
    answer: str | None = None
    error: str | None = None


class SingleTurnEnvironment(Protocol):
    kind: str

    def prompt(self, item: Any) -> Prompt: ...

    def interpret(self, item: Any, prompt: Prompt, answer: str) -> Interpretation: ...


class FileRepairEnvironment:
    """Files come from the repository cache at the task's base commit (no working copy, no sandbox)."""

    kind = "file_repair"

    def __init__(
        self,
        cache_dir: str | Path,
        max_file_chars: int | None = None,
        file_reader: Callable[[Any], Callable[[str], str]] | None = None,
    ):
        from repairrl.singleturn.file_repair import DEFAULT_MAX_FILE_CHARS

        self.cache_dir = Path(cache_dir)
        self.max_file_chars = max_file_chars or DEFAULT_MAX_FILE_CHARS
        self.file_reader = file_reader or self._cache_reader

    def _cache_reader(self, task: Any) -> Callable[[str], str]:
        from repairrl.repos import base_file_reader

        return base_file_reader(self.cache_dir, task)

    def prompt(self, item: Any) -> Prompt:
        from repairrl.singleturn.file_repair import file_repair_messages, load_files

        files = load_files(item, self.file_reader(item), self.max_file_chars)
        return Prompt(file_repair_messages(item, files), files)

    def interpret(self, item: Any, prompt: Prompt, answer: str) -> Interpretation:
        from repairrl.singleturn.file_repair import answer_diff

        diff, error = answer_diff(prompt.context, answer)
        return Interpretation(diff=diff, error=error)


class DetectionEnvironment:
    kind = "detection"

    def prompt(self, item: Any) -> Prompt:
        from repairrl.singleturn.detection import detection_messages

        return Prompt(detection_messages(item))

    def interpret(self, item: Any, prompt: Prompt, answer: str) -> Interpretation:
        from repairrl.singleturn.detection import parse_detection_answer

        label = parse_detection_answer(answer)
        error = (
            None if label is not None else "no well-formed <answer>vulnerable|benign</answer> in the answer"
        )
        return Interpretation(answer=label, error=error)


def make_environment(
    kind: str, cache_dir: str | Path | None = None, max_file_chars: int | None = None
) -> SingleTurnEnvironment:
    if check_task_kind(kind) == "file_repair":
        if cache_dir is None:
            raise ValueError(
                "file_repair reads the files to fix from the repository cache: give its directory"
            )
        return FileRepairEnvironment(cache_dir, max_file_chars)
    if kind == "detection":
        return DetectionEnvironment()
    raise UnknownTaskKindError(f"task {kind!r} is not a single-turn task (the agent runs {kind} episodes)")


def run_single_turn(
    environment: SingleTurnEnvironment,
    item: Any,
    backend: ChatBackend,
    sample: int = 0,
    seed: int | None = None,
    max_new_tokens: int | None = None,
) -> dict:
    """One prompt, one answer; the record of `repairrl.agent.loop.run_episode` plus the answer's reading.

    Raises what building the prompt raises (a file missing from the cache, a file too big): the caller records the
    episode as failed, as it does when an agent episode cannot start.
    """
    started = time.monotonic()
    prompt = environment.prompt(item)
    messages = list(prompt.messages)
    session = backend.start_session(tools=None, seed=seed)
    stop_reason, error, interpretation = "no_tool_call", None, Interpretation()
    context_tokens = completion_tokens = turns = 0
    try:
        try:
            turn = session.generate(messages, max_new_tokens=max_new_tokens)
        except EndpointUnavailableError:
            raise  # the server is gone: not this episode's result (the caller reruns it)
        except ModelError as model_error:
            stop_reason, error = "model_error", str(model_error)
        else:
            turns, context_tokens, completion_tokens = 1, turn.context_tokens, turn.completion_tokens
            messages.append({"role": "assistant", "content": turn.content})
            if turn.finish_reason == "length":
                stop_reason = "max_tokens"
    finally:
        session.close()
    model_s = time.monotonic() - started
    if turns:
        interpretation = environment.interpret(item, prompt, messages[-1]["content"])
    record = trajectory_record(
        item, sample, seed, backend.model_name, stop_reason=stop_reason, error=error, messages=messages,
        tool_calls=[], tool_stats=None, diff=interpretation.diff, trace=session.trace,
        tokens={"context": context_tokens, "completion": completion_tokens, "turns": turns},
        timings={"model_s": round(model_s, 4), "tool_s": 0.0, "command_s": 0.0, "diff_s": 0.0,
                 "total_s": round(time.monotonic() - started, 4)},
        config={"task_kind": environment.kind, "max_new_tokens": max_new_tokens},
    )
    return {**record, "task_kind": environment.kind, "answer": interpretation.answer,
            "answer_error": interpretation.error}
