"""Single-turn tasks through the shared stages: episodes, expert demos, SFT selection, GRPO rollouts, rewards."""

# The GRPO module's fixtures are imported, so test arguments of the same names are pytest's injections.
# ruff: noqa: F811

from __future__ import annotations

import subprocess
from functools import partial

import pytest
from repairrl.agent.run import run_tasks
from repairrl.data.loaders import DatasetSpec, load_tasks
from repairrl.grading.rewards import UnknownRewardError, compose_rewards
from repairrl.grading.similarity import diff_similarity
from repairrl.models.backends import ScriptedBackend
from repairrl.records import read_jsonl, validate_record
from repairrl.singleturn.episode import make_environment, run_single_turn
from repairrl.singleturn.file_repair import files_to_repair
from repairrl.tasks import DetectionSample, Task

from .conftest import git
from .test_grpo import BUGGY, GOLD, calc_tasks, tiny_config, tiny_model_dir  # noqa: F401

FIXING_ANSWER = """The subtraction is the bug.

```python
### calc.py
<<<<<<< SEARCH
    return a - b
=======
    return a + b
>>>>>>> REPLACE
```"""

VULNERABLE = DetectionSample(
    sample_id="demo-1",
    dataset="test",
    code="void f(char *s) { char b[8]; strcpy(b, s); }",
    label="vulnerable",
    cwe=["CWE-787"],
    project="demo",
    commit_id="a" * 40,
    pair_id="demo-pair",
    split="train",
    extra={},
)
PATCHED = DetectionSample(
    sample_id="demo-2",
    dataset="test",
    code="void f(char *s) { char b[8]; strncpy(b, s, 7); b[7] = 0; }",
    label="benign",
    cwe=["CWE-787"],
    project="demo",
    commit_id="a" * 40,
    pair_id="demo-pair",
    split="train",
    extra={},
)


def test_file_repair_answer_becomes_a_diff_that_git_applies(calc_tasks, tmp_path):
    tasks, cache = calc_tasks
    environment = make_environment("file_repair", cache)
    record = run_single_turn(environment, tasks[0], ScriptedBackend([FIXING_ANSWER]), sample=0)
    validate_record(record, "trajectory", "file_repair episode")
    assert record["answer_error"] is None and record["task_kind"] == "file_repair"
    assert BUGGY in record["messages"][1]["content"], "the prompt shows the file at the base commit"
    assert diff_similarity(record["diff"], GOLD) > 0.9
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "calc.py").write_text(BUGGY)
    subprocess.run(["git", "apply"], input=record["diff"], text=True, cwd=repo, check=True)
    assert "return a + b" in (repo / "calc.py").read_text()


def test_edits_that_do_not_apply_are_the_models_failure_not_the_episodes(calc_tasks):
    tasks, cache = calc_tasks
    answer = FIXING_ANSWER.replace("return a - b", "return a * b")
    record = run_single_turn(make_environment("file_repair", cache), tasks[0], ScriptedBackend([answer]))
    assert record["status"] == "ok" and record["diff"] == ""
    assert record["answer_error"].startswith("NoMatchError") and "calc.py" in record["answer_error"]


def test_a_task_whose_files_are_not_in_the_cache_fails_alone(calc_tasks, tmp_path):
    tasks, cache = calc_tasks
    missing = Task(
        **{
            **tasks[1].to_record(),
            "instance_id": "calc-elsewhere",
            "gold_patch": GOLD.replace("calc.py", "nowhere.py"),
        }
    )
    out = tmp_path / "trajectories.jsonl"
    summary = run_tasks(
        [tasks[0], missing],
        ScriptedBackend([FIXING_ANSWER] * 2),
        out,
        None,
        None,
        workers=1,
        progress=False,
        single_turn=make_environment("file_repair", cache),
    )
    records = {r["instance_id"]: r for r in read_jsonl(out)}
    assert summary["failed"] == 1
    assert records["calc-0"]["status"] == "ok" and records["calc-0"]["diff"]
    assert (
        records["calc-elsewhere"]["status"] == "failed" and "nowhere.py" in records["calc-elsewhere"]["error"]
    )


def test_detection_episode_reads_the_last_answer_and_records_unreadable_ones():
    environment = make_environment("detection")
    good = run_single_turn(
        environment, VULNERABLE, ScriptedBackend(["Overflow.\n<answer>vulnerable</answer>"])
    )
    bad = run_single_turn(environment, PATCHED, ScriptedBackend(["It looks fine to me."]))
    assert good["answer"] == "vulnerable" and good["answer_error"] is None and good["diff"] == ""
    assert bad["answer"] is None and "well-formed" in bad["answer_error"]
    assert VULNERABLE.code in good["messages"][1]["content"]


def test_detection_rewards_and_their_task_check():
    rewards = compose_rewards({"correct_label": 1.0, "answer_format": 0.1}, "detection")
    right = rewards(VULNERABLE, {"answer_text": "<answer>vulnerable</answer>"})
    wrong = rewards(PATCHED, {"answer_text": "<answer>vulnerable</answer>"})
    unreadable = rewards(PATCHED, {"answer_text": "benign"})
    assert (right.total, wrong.total, unreadable.total) == (pytest.approx(1.1), pytest.approx(0.1), 0.0)
    with pytest.raises(UnknownRewardError, match="do not apply to task 'detection'"):
        compose_rewards({"similarity": 1.0}, "detection")
    with pytest.raises(UnknownRewardError, match="do not apply to task 'file_repair'"):
        compose_rewards({"correct_label": 1.0}, "file_repair")


def test_expert_demos_of_single_turn_tasks_answer_what_the_parsers_accept(calc_tasks):
    from repairrl.sft.expert import build_expert_demos

    tasks, cache = calc_tasks
    (repair,), failures = build_expert_demos(tasks[:1], cache, "file_repair")
    assert failures == []
    environment = make_environment("file_repair", cache)
    replay = run_single_turn(environment, tasks[0], ScriptedBackend([repair["messages"][-1]["content"]]))
    assert diff_similarity(replay["diff"], GOLD) == pytest.approx(1.0)
    demos, _ = build_expert_demos([VULNERABLE, PATCHED], None, "detection")
    detection = make_environment("detection")
    answers = [
        run_single_turn(detection, s, ScriptedBackend([d["messages"][-1]["content"]]))["answer"]
        for s, d in zip([VULNERABLE, PATCHED], demos, strict=True)
    ]
    assert answers == ["vulnerable", "benign"]


def test_sft_selection_keeps_detection_episodes_with_the_right_label(tmp_path):
    from repairrl.sft.dataset import select_sft_rows
    from repairrl.tasks import write_samples

    environment = make_environment("detection")
    right = run_single_turn(environment, VULNERABLE, ScriptedBackend(["<answer>vulnerable</answer>"]))
    wrong = run_single_turn(environment, PATCHED, ScriptedBackend(["<answer>vulnerable</answer>"]))
    write_samples(tmp_path / "samples.jsonl", [VULNERABLE, PATCHED])
    rows, stats = select_sft_rows(
        [right, wrong], 1.0, "correct_label", items={s.instance_id: s for s in (VULNERABLE, PATCHED)}
    )
    assert [r["instance_id"] for r in rows] == ["demo-1"] and stats["dropped_tasks"] == ["demo-2"]


def test_file_level_training_data_keeps_single_file_gold_patches():
    two_files = GOLD + GOLD.replace("calc.py", "other.py")
    # One file, but a created one: a file-level repair has nothing to show for it.
    created = "diff --git a/new.py b/new.py\nnew file mode 100644\n--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+x = 1\n"
    rows = [
        {
            "instance_id": f"t-{i}",
            "repo": "o/r",
            "base_commit": "a" * 40,
            "problem_statement": "p",
            "patch": patch,
            "test_patch": "",
            "FAIL_TO_PASS": [],
            "PASS_TO_PASS": [],
            # o/r has no swebench spec: the row says how it is graded (the new row shape).
            "eval_script": "#!/bin/bash\npytest -rA\n",
            "log_parser": "parse_log_pytest",
        }
        for i, patch in enumerate([GOLD, two_files, created])
    ]
    spec = DatasetSpec(name="d", format="swe-gym", single_file_patch=True)
    kept = load_tasks(spec, rows).tasks
    assert [t.instance_id for t in kept] == ["t-0"]
    assert kept[0].changes_one_existing_file() and files_to_repair(kept[0]) == ["calc.py"]
    assert len(load_tasks(DatasetSpec(name="d", format="swe-gym"), rows).tasks) == 3


@pytest.mark.parametrize("kind", ["file_repair", "detection"])
def test_grpo_step_on_a_single_turn_task_trains_on_the_answer_alone(
    kind, tiny_model_dir, calc_tasks, tmp_path
):
    from repairrl.grpo.rollout import RolloutConfig, inprocess_policy_backend
    from repairrl.grpo.train import build_trainer
    from repairrl.models.backends import SamplingParams
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .test_grpo import ScriptedPolicyBackend

    tasks, cache = calc_tasks
    if kind == "file_repair":
        items, rewards, script = tasks[:1], {"similarity": 1.0}, [FIXING_ANSWER]
    else:
        items, rewards, script = (
            [VULNERABLE],
            {"correct_label": 1.0, "answer_format": 0.1},
            ["<answer>vulnerable</answer>"],
        )

    def factory(trainer):
        sampling = SamplingParams(temperature=trainer.args.temperature, max_new_tokens=96)
        return inprocess_policy_backend(
            trainer, sampling, backend_class=partial(ScriptedPolicyBackend, script=script)
        )

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir / "hf")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir / "hf")
    config = RolloutConfig(
        cache_dir=cache,
        rewards=rewards,
        max_completion_length=256,
        max_new_tokens_per_turn=96,
        episodes_path=tmp_path / "episodes.jsonl",
        task_kind=kind,
    )
    trainer = build_trainer(
        model, tokenizer, items, tiny_config(tmp_path, tasks_per_step=1), config, backend_factory=factory
    )
    outputs = []
    inner = trainer.rollout_func
    trainer.rollout_func = lambda prompts, t: outputs.append(inner(prompts, t)) or outputs[-1]
    trainer.train()
    episodes = read_jsonl(tmp_path / "episodes.jsonl")
    assert len(episodes) == 2 and all(e["task_kind"] == kind and e["turns"] == 1 for e in episodes)
    assert all(e["reward"] == pytest.approx(sum(rewards.values()), abs=0.01) for e in episodes)
    completion = outputs[0]["completion_ids"][0]
    text = tokenizer.decode(completion)
    assert script[0].strip()[:20] in text and "<|im_start|>" not in text, (
        "one assistant turn, no tool results"
    )
    assert all(outputs[0]["env_mask"][0][:-1]), "every generated token is trained on"
