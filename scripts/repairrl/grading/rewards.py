"""Rewards, verifiers style: small pure functions `(task, trajectory, outcome) -> float`, composed by weights.

    rewards = compose_rewards({"similarity": 0.2, "resolved": 1.0})
    score = rewards(task, trajectory, outcome)   # RewardScore(total=..., components={"similarity": ..., ...})

A trajectory is whatever the agent stage records, as long as its final patch can be read: an object with a
`model_patch` attribute, a mapping with a "model_patch" key (a swebench prediction), or the patch text itself.
The detection rewards read the model's answer text instead (`answer_text`, the same shapes), and their task is a
detection sample (repairrl.data.detection) rather than a repair task.
`outcome` is the GradingOutcome of `grade_with_tests`; only rewards that read test results need it, and
`WeightedRewards.needs_tests` tells the caller whether to run the tests at all.

`test_tampering` is a penalty: 1 when the final patch edits test infrastructure (conftest.py, pytest
configuration, the tests, Java test sources and build files, or source code that hooks the test runner; the
policy is repairrl.grading.infrastructure's), computed from the patch and the task alone, so no tests run for
it. Give it a negative weight (`{"resolved": 1.0, "test_tampering": -0.5}`); negative weights lower the total
and leave `max_total` as it is. The grader already discards such edits (or fails the patch), so the penalty
does not stop a hack from working; it tells the policy that trying costs something.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from repairrl.grading.grade import GradingOutcome
from repairrl.grading.infrastructure import classify_patch
from repairrl.grading.similarity import diff_similarity, file_changes
from repairrl.tasks import Task

RewardFn = Callable[[Task, Any, "GradingOutcome | None"], float]


class UnknownRewardError(KeyError):
    """A reward name in the config is not one of the registered rewards."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class MissingOutcomeError(ValueError):
    """A reward that reads test results was given no grading outcome."""


def final_patch(trajectory: Any) -> str | None:
    """The patch a trajectory ends with (see the module docstring for the accepted shapes)."""
    if trajectory is None or isinstance(trajectory, str):
        return trajectory
    if isinstance(trajectory, Mapping):
        return trajectory.get("model_patch")
    return getattr(trajectory, "model_patch", None)


def _require_outcome(name: str, outcome: GradingOutcome | None) -> GradingOutcome:
    if outcome is None:
        raise MissingOutcomeError(
            f"reward {name!r} reads test results: grade the patch with grade_with_tests and pass its outcome"
        )
    return outcome


def similarity(task: Task, trajectory: Any, outcome: GradingOutcome | None = None) -> float:
    """Diff similarity of the final patch to the gold patch, in [0, 1] (no tests run)."""
    return diff_similarity(final_patch(trajectory), task.gold_patch)


def resolved(task: Task, trajectory: Any, outcome: GradingOutcome | None = None) -> float:
    """1 if every FAIL_TO_PASS and PASS_TO_PASS test passes with the patch (swebench's RESOLVED_FULL)."""
    return 1.0 if _require_outcome("resolved", outcome).resolved else 0.0


def patch_applies(task: Task, trajectory: Any, outcome: GradingOutcome | None = None) -> float:
    """1 if the harness's apply commands accepted the patch, whatever the tests say."""
    return 1.0 if _require_outcome("patch_applies", outcome).patch_applied else 0.0


def nonempty_patch(task: Task, trajectory: Any, outcome: GradingOutcome | None = None) -> float:
    """The format reward: 1 if the final patch is a non-empty unified diff."""
    return 1.0 if file_changes(final_patch(trajectory)) else 0.0


def test_tampering(task: Task, trajectory: Any, outcome: GradingOutcome | None = None) -> float:
    """1 if the final patch edits test infrastructure (repairrl.grading.infrastructure), else 0; a penalty."""
    return 1.0 if classify_patch(final_patch(trajectory), task) else 0.0


test_tampering.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, despite the name


def answer_text(trajectory: Any) -> str:
    """The model's final answer: `answer_text` of a mapping or object, or the text itself."""
    if trajectory is None or isinstance(trajectory, str):
        return trajectory or ""
    if isinstance(trajectory, Mapping):
        return trajectory.get("answer_text") or ""
    return getattr(trajectory, "answer_text", None) or ""


def correct_label(task: Any, trajectory: Any, outcome: GradingOutcome | None = None) -> float:
    """Detection: 1 if the answer's label is the sample's label (an answer with no well-formed label scores 0)."""
    from repairrl.singleturn.detection import label_reward

    return label_reward(task, answer_text(trajectory))


def answer_format(task: Any, trajectory: Any, outcome: GradingOutcome | None = None) -> float:
    """Detection's format reward: 1 if the answer ends with a well-formed <answer>label</answer>."""
    from repairrl.singleturn.detection import answer_format_reward

    return answer_format_reward(answer_text(trajectory))


REWARDS: dict[str, RewardFn] = {
    "similarity": similarity,
    "resolved": resolved,
    "patch_applies": patch_applies,
    "nonempty_patch": nonempty_patch,
    "test_tampering": test_tampering,
    "correct_label": correct_label,
    "answer_format": answer_format,
}
# The rewards each task kind can use (repairrl.tasks.TASK_KINDS).
REPAIR_REWARDS = frozenset({"similarity", "resolved", "patch_applies", "nonempty_patch", "test_tampering"})
TASK_REWARDS = {"repo_repair": REPAIR_REWARDS, "file_repair": REPAIR_REWARDS,
                "detection": frozenset({"correct_label", "answer_format"})}
# Rewards that read a GradingOutcome, so the tests must run before they can be computed.
NEEDS_TESTS = frozenset({"resolved", "patch_applies"})


@dataclass(frozen=True)
class RewardScore:
    total: float
    components: dict[str, float]  # each reward's unweighted value, for logging


@dataclass(frozen=True)
class WeightedRewards:
    weights: dict[str, float]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(REWARDS))
        if unknown:
            raise UnknownRewardError(
                f"unknown reward(s) {', '.join(map(repr, unknown))} in the reward weights; "
                f"choose from {', '.join(sorted(REWARDS))}"
            )

    @property
    def needs_tests(self) -> bool:
        return any(name in NEEDS_TESTS and weight != 0 for name, weight in self.weights.items())

    @property
    def max_total(self) -> float:
        """The best total a patch can get: every reward lies in [0, 1], so a negative weight (a penalty) adds
        nothing to the best total and can only lower a patch's own."""
        return sum(weight for weight in self.weights.values() if weight > 0)

    def __call__(self, task: Task, trajectory: Any, outcome: GradingOutcome | None = None) -> RewardScore:
        # A zero-weight reward is still logged, except a test-based one when no tests were run for it.
        names = [
            name
            for name, weight in self.weights.items()
            if not (weight == 0 and name in NEEDS_TESTS and outcome is None)
        ]
        components = {name: float(REWARDS[name](task, trajectory, outcome)) for name in names}
        total = sum(self.weights[name] * value for name, value in components.items())
        return RewardScore(total=total, components=components)


def compose_rewards(weights: Mapping[str, float], task_kind: str | None = None) -> WeightedRewards:
    """Rewards weighted as in the config, e.g. `{"similarity": 0.2, "resolved": 1.0}`; with `task_kind`, only
    the rewards that task can compute are accepted."""
    rewards = WeightedRewards(weights={name: float(weight) for name, weight in weights.items()})
    if task_kind is not None:
        allowed = TASK_REWARDS.get(task_kind, frozenset())
        wrong = sorted(set(rewards.weights) - allowed)
        if wrong:
            raise UnknownRewardError(
                f"reward(s) {', '.join(map(repr, wrong))} do not apply to task {task_kind!r}; "
                f"it can use {', '.join(sorted(allowed))}"
            )
    return rewards


# --- which configured rewards the grader can compute, checked before a stage starts ---

# The sandboxes repairrl's own grader (repairrl.grading.grade.grade_with_tests) runs tests in. On a host checkout it
# runs only these frameworks (repairrl.grading.test_runner); the image graders (grade.IMAGE_BACKENDS) run a
# swebench-format task's eval script in its own image instead (repairrl.grading.container), and need that task's
# eval script and log parser. gitbug-java tasks need GitBug-Java's runner: repairrl.evaluate's, not here.
LOCAL_GRADERS = ("bwrap", "docker", "apptainer", "unsafe-local")
LOCALLY_RUN_FRAMEWORKS = ("pytest", "junit4")


class RewardNotComputableError(ValueError):
    """A configured reward reads test results the grader cannot produce for some tasks: it would score 0."""


@dataclass(frozen=True)
class UncomputableReward:
    reward: str
    instance_ids: list[str]
    reason: str


def uncomputable_rewards(
    weights: Mapping[str, float], task_kind: str, tasks: list, grader: str
) -> list[UncomputableReward]:
    """The weighted test-based rewards that GRADER cannot compute, each with the tasks it fails on and why.

    Only repair tasks run tests (detection rewards read the answer); a zero weight asks for nothing.
    """
    if task_kind == "detection":
        return []
    if grader not in LOCAL_GRADERS:
        raise ValueError(f"unknown grader {grader!r}; one of {', '.join(LOCAL_GRADERS)}")
    from repairrl.grading.grade import IMAGE_BACKENDS

    wanted = [name for name, weight in weights.items() if name in NEEDS_TESTS and weight != 0]
    by_framework: dict[str, list[str]] = {}
    no_eval_script: list[str] = []
    for task in tasks:
        if grader in IMAGE_BACKENDS:
            if not (getattr(task, "eval_script", None) and getattr(task, "log_parser", None)):
                no_eval_script.append(task.instance_id)
            continue
        framework = getattr(task, "test_framework", None)
        if framework not in LOCALLY_RUN_FRAMEWORKS:
            by_framework.setdefault(str(framework), []).append(task.instance_id)
    found = []
    for name in wanted:
        for framework, ids in sorted(by_framework.items()):
            found.append(UncomputableReward(
                reward=name, instance_ids=ids,
                reason=f"their tests are {framework!r}-framework tests, and the local grader (sandbox {grader!r}) "
                       f"runs only {' and '.join(LOCALLY_RUN_FRAMEWORKS)} tests",
            ))  # fmt: skip
        if no_eval_script:
            found.append(UncomputableReward(
                reward=name, instance_ids=no_eval_script,
                reason=f"the {grader!r} grader runs each task's eval script in the task's image, and these tasks "
                       "have no eval script or log parser (fetch them again, or grade with the bwrap sandbox)",
            ))  # fmt: skip
    return found


def check_rewards_computable(weights: Mapping[str, float], task_kind: str, tasks: list, grader: str) -> None:
    """Raise RewardNotComputableError, saying what to change, if a weighted reward cannot be computed."""
    problems = uncomputable_rewards(weights, task_kind, tasks, grader)
    if not problems:
        return
    lines = []
    for problem in problems:
        shown = ", ".join(problem.instance_ids[:3]) + (", ..." if len(problem.instance_ids) > 3 else "")
        lines.append(f"reward {problem.reward!r} cannot be computed for {len(problem.instance_ids)} of {len(tasks)} "
                     f"tasks ({shown}): {problem.reason}")
    names = sorted({problem.reward for problem in problems})
    kept = {name: weight for name, weight in weights.items() if name not in names}
    drop = ",".join(f"{name}={weight:g}" for name, weight in kept.items()) or "similarity=1.0"
    raise RewardNotComputableError(
        "; ".join(lines) + ". Every such episode would score 0 on it. Either drop "
        f"{', '.join(map(repr, names))} from the rewards (e.g. --rewards {drop}), or train on tasks whose tests "
        "run locally (pytest/junit4, e.g. the mini benchmark), or grade swebench-format tasks in their own "
        "image (sandbox docker: each task's eval script in its image, repairrl.grading.container)."
    )
