"""Rewards: pure functions of (task, trajectory, outcome), composed by the weights of the config."""

from __future__ import annotations

import pytest
from repairrl.grading import grade
from repairrl.grading.grade import GradingOutcome
from repairrl.grading.rewards import (
    REWARDS,
    MissingOutcomeError,
    UnknownRewardError,
    compose_rewards,
    final_patch,
)
from repairrl.tasks import Task

GOLD = """diff --git a/pkg/a.py b/pkg/a.py
--- a/pkg/a.py
+++ b/pkg/a.py
@@ -1,2 +1,2 @@
 def f(x):
-    return x - 1
+    return x + 1
"""
TASK = Task(
    instance_id="local__pkg-1",
    dataset="local",
    repo="local/pkg",
    repo_url="file:///nonexistent",
    base_commit="0" * 40,
    problem_statement="f is off by two",
    gold_patch=GOLD,
    test_patch="",
    fail_to_pass=["tests/test_a.py::test_f"],
    pass_to_pass=[],
)


def outcome(status: str) -> GradingOutcome:
    return GradingOutcome(
        instance_id=TASK.instance_id,
        model_name_or_path="m",
        status=status,
        resolved=status == grade.RESOLVED,
        patch_applied=status in (grade.RESOLVED, grade.UNRESOLVED),
        reason=None,
        report={},
    )


def test_gold_patch_gets_the_top_total():
    rewards = compose_rewards({"similarity": 0.2, "resolved": 1.0, "nonempty_patch": 0.1})
    score = rewards(TASK, {"model_patch": GOLD}, outcome(grade.RESOLVED))
    assert score.components == {"similarity": 1.0, "resolved": 1.0, "nonempty_patch": 1.0}
    assert score.total == pytest.approx(rewards.max_total) == pytest.approx(1.3)


def test_empty_patch_scores_zero_everywhere():
    rewards = compose_rewards(
        {"similarity": 0.2, "resolved": 1.0, "nonempty_patch": 0.1, "patch_applies": 0.1}
    )
    score = rewards(TASK, {"model_patch": ""}, outcome(grade.EMPTY_PATCH))
    assert score.total == 0.0 and set(score.components.values()) == {0.0}


def test_unresolved_patch_keeps_its_similarity_and_format_credit():
    rewards = compose_rewards({"similarity": 0.5, "resolved": 1.0, "patch_applies": 0.25})
    score = rewards(TASK, GOLD.replace("x + 1", "x + 2"), outcome(grade.UNRESOLVED))
    assert score.components["resolved"] == 0.0 and score.components["patch_applies"] == 1.0
    assert 0.8 < score.components["similarity"] < 1.0
    assert score.total == pytest.approx(0.5 * score.components["similarity"] + 0.25)


def test_unknown_reward_name_lists_the_choices():
    with pytest.raises(
        UnknownRewardError, match=r"'similarty'.*choose from answer_format, correct_label, nonempty_patch, patch_applies, resolved"
    ):
        compose_rewards({"similarty": 1.0})


def test_test_based_reward_without_an_outcome_says_what_to_do():
    rewards = compose_rewards({"resolved": 1.0})
    assert rewards.needs_tests
    with pytest.raises(MissingOutcomeError, match="grade_with_tests"):
        rewards(TASK, GOLD, None)
    similarity_only = compose_rewards({"similarity": 1.0, "resolved": 0.0})
    assert not similarity_only.needs_tests
    assert similarity_only(TASK, GOLD, None).components["similarity"] == 1.0


class Trajectory:
    model_patch = GOLD


@pytest.mark.parametrize("trajectory", [GOLD, {"model_patch": GOLD}, Trajectory()])
def test_final_patch_reads_every_trajectory_shape(trajectory):
    assert final_patch(trajectory) == GOLD


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_every_reward_is_a_pure_float_in_unit_range(name):
    from repairrl.grading.rewards import TASK_REWARDS
    from repairrl.tasks import DetectionSample

    reward = REWARDS[name]
    task, trajectory = TASK, GOLD
    if name in TASK_REWARDS["detection"]:  # detection rewards score a label answer on a sample
        task = DetectionSample(sample_id="s", dataset="d", code="int f(void);", label="benign", cwe=[],
                               project=None, commit_id=None, pair_id=None)
        trajectory = "<answer>benign</answer>"
    for status in (grade.RESOLVED, grade.UNRESOLVED, grade.PATCH_APPLY_FAILED):
        first = reward(task, trajectory, outcome(status))
        assert isinstance(first, float) and 0.0 <= first <= 1.0
        assert reward(task, trajectory, outcome(status)) == first
