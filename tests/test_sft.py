"""SFT stage: the data filter, the scripted expert, the assistant-only loss mask, training, resume and export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from repairrl.evaluate.predictions import predictions_per_sample, sample_model_name, sample_of_model_name
from repairrl.grading.run_evaluation import validate_report
from repairrl.records import validate_record
from repairrl.sft.dataset import (
    EXPERT_SOURCE,
    ROLLOUT_SOURCE,
    EmptySFTDatasetError,
    TrajectoryRecordError,
    build_sft_dataset,
    read_verdicts,
    select_sft_rows,
)
from repairrl.sft.expert import (
    APPLY_PATCH_TOOL,
    SHELL_TOOL,
    ExpertDemoError,
    expert_demo,
    gold_edits,
)
from repairrl.tasks import Task

REPO_ROOT = Path(__file__).resolve().parents[1]

GOLD_PATCH = """\
diff --git a/calc/ops.py b/calc/ops.py
--- a/calc/ops.py
+++ b/calc/ops.py
@@ -1,4 +1,4 @@
 def add(a, b):
-    return a - b
+    return a + b
 
 
@@ -8,3 +8,3 @@ def mul(a, b):
 def div(a, b):
-    return a * b
+    return a / b
 
"""
BASE_FILE = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n\n\ndef div(a, b):\n    return a * b\n\n"
FIXED_FILE = BASE_FILE.replace("return a - b", "return a + b").replace(
    "def div(a, b):\n    return a * b", "def div(a, b):\n    return a / b"
)


def make_task(instance_id: str = "calc-1", gold_patch: str = GOLD_PATCH) -> Task:
    return Task(
        instance_id=instance_id,
        dataset="unit",
        repo="acme/calc",
        repo_url="file:///nonexistent",
        base_commit="0" * 40,
        problem_statement="add() subtracts and div() multiplies.",
        gold_patch=gold_patch,
        test_patch="",
        fail_to_pass=[],
        pass_to_pass=[],
    )


def episode(
    instance_id: str, reward: float | None = None, turns: int = 1, resolved: bool | None = None, **extra
):
    messages = [{"role": "user", "content": f"fix {instance_id}"}]
    for turn in range(turns):
        messages.append({"role": "assistant", "content": f"step {turn}"})
        messages.append({"role": "tool", "content": "ok"})
    messages.append({"role": "assistant", "content": "done"})
    record = {
        "instance_id": instance_id,
        "repo": f"acme/{instance_id.split('-')[0]}",
        "messages": messages,
        **extra,
    }
    if reward is not None:
        record["rewards"] = {"similarity": reward}
    if resolved is not None:
        record["resolved"] = resolved
    return record


# --- the threshold filter ---


def test_filter_keeps_the_best_passing_episode_per_task_and_drops_the_rest():
    trajectories = [
        episode("a-1", 0.85, episode_id="a-low"),
        episode("a-1", 0.95, episode_id="a-best"),
        episode("b-1", 0.79, episode_id="b-below"),
        episode("c-1", 0.80, episode_id="c-at-threshold"),
    ]
    rows, stats = select_sft_rows(trajectories, threshold=0.8)
    assert [(row["instance_id"], row["episode"]) for row in rows] == [
        ("a-1", "a-best"),
        ("c-1", "c-at-threshold"),
    ]
    assert all(row["source"] == ROLLOUT_SOURCE for row in rows)
    assert stats["episodes"] == 4 and stats["kept"] == 2 and stats["dropped_tasks"] == ["b-1"]
    assert stats["per_repo"] == {"acme/a": {"rollout": 1}, "acme/c": {"rollout": 1}}
    assert stats["best_reward_seen"] == 0.95
    validate_record(stats, "sft_stats")


def test_filter_breaks_ties_by_shorter_episode_then_first_seen():
    trajectories = [
        episode("a-1", 0.9, turns=3, episode_id="long"),
        episode("a-1", 0.9, turns=1, episode_id="short-first"),
        episode("a-1", 0.9, turns=1, episode_id="short-second"),
    ]
    rows, _ = select_sft_rows(trajectories, threshold=0.8)
    assert [row["episode"] for row in rows] == ["short-first"]


def test_filter_computes_similarity_from_the_gold_patch_when_tasks_are_known():
    exact = episode("calc-1", model_patch=GOLD_PATCH, episode_id="exact")
    empty = episode("calc-1", model_patch="", episode_id="empty")
    rows, stats = select_sft_rows([empty, exact], 0.8, gold_patches={"calc-1": GOLD_PATCH})
    assert [row["episode"] for row in rows] == ["exact"] and rows[0]["reward"] == pytest.approx(1.0)
    assert stats["best_reward_per_task"] == {"calc-1": pytest.approx(1.0)}


def run_summary(model: str, resolved=(), unresolved=(), empty=(), errors=(), grading_errors=()) -> dict:
    """A harness's run summary (grading_report's run_summary) of the episodes graded under `model`."""
    submitted = sorted({*resolved, *unresolved, *empty, *errors, *grading_errors})
    summary = {
        "model_name_or_path": model, "run_id": "sft", "total_instances": len(submitted),
        "submitted_instances": len(submitted), "completed_instances": len(resolved) + len(unresolved),
        "resolved_instances": len(resolved), "unresolved_instances": len(unresolved),
        "empty_patch_instances": len(empty), "error_instances": len(errors) + len(grading_errors),
        "completed_ids": sorted({*resolved, *unresolved}), "incomplete_ids": [], "empty_patch_ids": sorted(empty),
        "submitted_ids": submitted, "resolved_ids": sorted(resolved), "unresolved_ids": sorted(unresolved),
        "error_ids": sorted({*errors, *grading_errors}), "grading_error_ids": sorted(grading_errors),
        "schema_version": 2,
    }
    validate_report(summary, "run_summary")
    return summary


def test_resolved_criterion_takes_each_samples_verdict_from_the_grading_of_the_rollouts():
    # Best-of-2: each sample is graded under a model name of its own (the harness keys by instance id).
    trajectories = [
        episode("a-1", sample=0, episode_id="a-fail"),
        episode("a-1", sample=1, episode_id="a-pass"),
        episode("b-1", sample=0, episode_id="b-empty"),
        episode("b-1", sample=1, episode_id="b-no-apply"),
    ]
    verdicts = read_verdicts([
        run_summary(sample_model_name("teacher", 0), unresolved=["a-1"], empty=["b-1"]),
        run_summary(sample_model_name("teacher", 1), resolved=["a-1"], errors=["b-1"]),
    ])
    assert verdicts == {("a-1", 0): 0.0, ("a-1", 1): 1.0, ("b-1", 0): 0.0, ("b-1", 1): 0.0}
    rows, stats = select_sft_rows(trajectories, threshold=0.8, criterion="resolved", verdicts=verdicts)
    assert [row["episode"] for row in rows] == ["a-pass"]
    assert stats["criterion"] == "resolved" and stats["dropped_tasks"] == ["b-1"]
    assert stats["episodes"] == 4 and stats["ungraded_episodes"] == []


def test_an_episode_without_a_verdict_is_counted_as_ungraded_not_scored_zero():
    trajectories = [episode("a-1", sample=0), episode("a-1", sample=1), episode("b-1", sample=0)]
    verdicts = read_verdicts([
        run_summary("teacher.sample0", resolved=["a-1"], grading_errors=["b-1"]),
        run_summary("teacher.sample1", grading_errors=["a-1"]),
    ])
    rows, stats = select_sft_rows(trajectories, threshold=0.8, criterion="resolved", verdicts=verdicts)
    assert [row["instance_id"] for row in rows] == ["a-1"]
    assert stats["ungraded_episodes"] == ["a-1#1", "b-1#0"] and stats["episodes"] == 3
    assert "b-1" not in stats["best_reward_per_task"], "no verdict is not a reward of 0"
    with pytest.raises(EmptySFTDatasetError, match="no episode had a verdict; 1 episodes had no verdict"):
        select_sft_rows([episode("b-1", sample=0)], threshold=0.8, criterion="resolved", verdicts=verdicts)
    with pytest.raises(TrajectoryRecordError, match="needs the grading of the rollouts"):
        select_sft_rows(trajectories, threshold=0.8, criterion="resolved")


def test_per_sample_predictions_name_each_sample_and_the_name_gives_it_back():
    tasks = [make_task("a-1"), make_task("b-1")]
    journal = [episode("a-1", sample=s, diff=f"patch {s}") for s in (0, 1)]
    journal += [episode("b-1", sample=1, diff="first"), episode("b-1", sample=1, diff="rerun")]
    rows = predictions_per_sample(tasks, journal, "teacher", samples=2)
    assert [(r["instance_id"], r["model_name_or_path"], r["model_patch"]) for r in rows] == [
        ("a-1", "teacher.sample0", "patch 0"), ("a-1", "teacher.sample1", "patch 1"),
        ("b-1", "teacher.sample1", "rerun")]
    assert [sample_of_model_name(r["model_name_or_path"]) for r in rows] == [0, 1, 1]
    with pytest.raises(ValueError, match="not a per-sample model name"):
        sample_of_model_name("teacher")


def test_empty_dataset_error_names_the_threshold_and_the_best_reward_seen():
    with pytest.raises(EmptySFTDatasetError, match=r"--threshold 0\.8.*0\.420 \(b-1"):
        select_sft_rows([episode("a-1", 0.1), episode("b-1", 0.42)], threshold=0.8)


def test_expert_demos_fill_tasks_without_a_passing_rollout_and_are_labelled():
    demos = [episode("a-1", episode_id="demo-a"), episode("b-1", episode_id="demo-b")]
    rows, stats = select_sft_rows([episode("a-1", 0.9, episode_id="rollout-a")], 0.8, expert_demos=demos)
    assert [(row["instance_id"], row["source"], row["episode"]) for row in rows] == [
        ("a-1", ROLLOUT_SOURCE, "rollout-a"),
        ("b-1", EXPERT_SOURCE, "demo-b"),
    ]
    assert stats["kept_by_source"] == {"rollout": 1, "expert_demo": 1}
    assert stats["per_repo"]["acme/b"] == {"expert_demo": 1}


def test_build_sft_dataset_saves_a_conversational_dataset_and_its_stats(tmp_path):
    from datasets import load_from_disk

    rollouts = tmp_path / "rollouts.jsonl"
    rollouts.write_text("\n".join(json.dumps(episode(f"t{i}-1", 0.5 + i / 10)) for i in range(5)) + "\n")
    out, stats_path = tmp_path / "data", tmp_path / "stats.json"
    build_sft_dataset([rollouts], out, stats_path, threshold=0.75)
    dataset = load_from_disk(str(out))
    assert sorted(dataset["instance_id"]) == ["t3-1", "t4-1"]
    assert dataset[0]["messages"][0] == {"role": "user", "content": "fix t3-1"}
    assert json.loads(stats_path.read_text())["kept"] == 2
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


# --- the scripted expert ---


def test_gold_edits_turn_hunks_into_search_and_replace_with_context():
    (file_edits,) = gold_edits(GOLD_PATCH)
    assert file_edits.path == "calc/ops.py"
    first, second = file_edits.hunks
    assert first.search == "def add(a, b):\n    return a - b\n\n\n"
    assert first.replace == "def add(a, b):\n    return a + b\n\n\n"
    assert second.search == "def div(a, b):\n    return a * b\n\n"


def test_expert_demo_reads_each_file_applies_each_hunk_and_ends_without_a_tool_call():
    demo = expert_demo(make_task(), read_file={"calc/ops.py": BASE_FILE}.__getitem__)
    messages = demo["messages"]
    assert [m["role"] for m in messages] == ["system", "user"] + ["assistant", "tool"] * 3 + ["assistant"]
    calls = [
        json.loads(m["content"].removeprefix("<tool_call>").removesuffix("</tool_call>"))
        for m in messages
        if m["role"] == "assistant" and m["content"].startswith("<tool_call>")
    ]
    assert [call["name"] for call in calls] == [SHELL_TOOL, APPLY_PATCH_TOOL, APPLY_PATCH_TOOL]
    assert calls[0]["arguments"] == {"cmd": "cat calc/ops.py"}
    assert (
        messages[3]["content"] == BASE_FILE.rstrip("\n") + "\n[exit code: 0]"
    )  # the shell tool's own output
    assert messages[5]["content"] == "patched calc/ops.py (1 replacement)"
    text = BASE_FILE
    for call in calls[1:]:
        text = text.replace(call["arguments"]["search"], call["arguments"]["replace"], 1)
    assert text == FIXED_FILE
    assert "<tool_call>" not in messages[-1]["content"]
    assert demo["source"] == EXPERT_SOURCE and demo["model_patch"] == GOLD_PATCH


def test_expert_refuses_a_demo_whose_edit_the_agent_tool_would_reject():
    doubled = {"calc/ops.py": BASE_FILE + BASE_FILE}
    with pytest.raises(ExpertDemoError, match="occurs 2 times"):
        expert_demo(make_task(), read_file=doubled.__getitem__)


# --- training: mask, run, resume, export (tiny random Llama with SmolLM2's tokenizer) ---

TOOL_CONVERSATION = [
    {"role": "system", "content": "You fix bugs. SYSTEM-TEXT"},
    {"role": "user", "content": "USER-TEXT: add() subtracts."},
    {
        "role": "assistant",
        "content": '<tool_call>{"name": "shell", "arguments": {"command": "cat ops.py"}}</tool_call>',
    },
    {"role": "tool", "content": "TOOL-TEXT def add(a, b): return a - b"},
    {
        "role": "assistant",
        "content": '<tool_call>{"name": "apply_patch", "arguments": {"path": "ops.py", "search": "a - b", '
        '"replace": "a + b"}}</tool_call>',
    },
    {"role": "tool", "content": "TOOL-TEXT Applied the edit to ops.py."},
    {"role": "assistant", "content": "Fixed: add() now adds."},
]


@pytest.fixture(scope="module")
def tiny_model_manifest(tmp_path_factory, embedded_model_dir) -> Path:
    """A 2-layer random Llama with the SmolLM2 tokenizer, prepared like a local model (model.json)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir / "hf")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    root = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    (root / "model.json").write_text(json.dumps({"name": "tiny", "kind": "local", "path": str(root / "hf")}))
    return root


def test_training_template_renders_the_same_text_as_the_model_template(tiny_model_manifest):
    from repairrl.sft.train import CHATML_TRAINING_TEMPLATE
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_manifest / "hf")
    for messages in (TOOL_CONVERSATION, TOOL_CONVERSATION[1:]):  # with and without a system message
        for generation_prompt in (False, True):
            kwargs = {"tokenize": False, "add_generation_prompt": generation_prompt}
            expected = tokenizer.apply_chat_template(messages, **kwargs)
            rendered = tokenizer.apply_chat_template(
                messages, chat_template=CHATML_TRAINING_TEMPLATE.read_text(), **kwargs
            )
            assert rendered == expected


def test_our_chatml_template_is_used_only_where_it_renders_like_the_model_template(tiny_model_manifest):
    from repairrl.sft.train import CHATML_TRAINING_TEMPLATE, training_chat_template
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_manifest / "hf")
    assert training_chat_template(tokenizer) == CHATML_TRAINING_TEMPLATE.read_text()
    tokenizer.chat_template = tokenizer.chat_template.replace("named SmolLM", "named Other")
    assert training_chat_template(tokenizer) is None  # left to TRL, which knows its own families


def sft_config(out: Path, **overrides):
    from repairrl.sft.train import RepairSFTConfig

    values = {"output_dir": str(out), "max_steps": 2, "save_steps": 2, "max_length": 256, "logging_steps": 1}
    return RepairSFTConfig(**{**values, **overrides})


def test_assistant_only_loss_trains_assistant_turns_and_masks_system_user_and_tool_tokens(
    tiny_model_manifest, tmp_path
):
    from datasets import Dataset
    from repairrl.models.loading import load_for_training
    from repairrl.sft.train import build_trainer

    config = sft_config(tmp_path / "checkpoints")
    assert config.assistant_only_loss and config.use_cpu and not config.bf16 and not config.fp16
    model, tokenizer = load_for_training(tiny_model_manifest, bool(config.bf16), lora=False)
    trainer = build_trainer(model, tokenizer, Dataset.from_list([{"messages": TOOL_CONVERSATION}]), config)
    example = trainer.train_dataset[0]
    input_ids = example["input_ids"]
    trained = [label != -100 for label in example["labels"]]

    spans, start = [], None  # maximal runs of trained tokens, decoded
    for position, flag in enumerate([*trained, False]):
        if flag and start is None:
            start = position
        elif not flag and start is not None:
            spans.append(tokenizer.decode(input_ids[start:position]))
            start = None
    expected = [m["content"] + "<|im_end|>" for m in TOOL_CONVERSATION if m["role"] == "assistant"]
    assert spans == expected
    untrained = tokenizer.decode([t for t, flag in zip(input_ids, trained, strict=True) if not flag])
    for marker in ("SYSTEM-TEXT", "USER-TEXT", "TOOL-TEXT def add", "TOOL-TEXT Applied"):
        assert marker in untrained
    assert "<|im_start|>assistant" in untrained  # the turn header is the template's, not the model's


def test_train_writes_checkpoints_resumes_to_step_4_and_exports_a_loadable_merged_model(
    tiny_model_manifest, tmp_path
):
    from datasets import Dataset
    from repairrl.models.loading import resolve_model_path
    from repairrl.sft.train import has_generation_markers, main
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = tmp_path / "data"
    Dataset.from_list([{"messages": TOOL_CONVERSATION, "source": "expert_demo"}] * 2).save_to_disk(str(data))
    out = tmp_path / "sft"
    common = ["--model", str(tiny_model_manifest), "--dataset", str(data), "--out", str(out)]
    common += ["--save-steps", "2", "--max-length", "256", "--lora-r", "4", "--disable-tqdm", "true"]
    common += ["--tracking", "disabled"]

    assert main([*common, "--max-steps", "2"]) == 0
    assert (out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert not (out / "wandb").exists()

    (out / "metrics.csv").unlink()  # as Snakemake deletes a failed job's outputs
    assert main([*common, "--max-steps", "4", "--resume"]) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 4 and summary["resumed_from"].endswith("checkpoint-2")
    assert summary["method"] == "lora" and summary["precision"] == "fp32"
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    with open(out / "metrics.csv") as handle:  # the whole curve: the first steps from the checkpoint's log
        assert [int(row["step"]) for row in csv.DictReader(handle) if row["loss"]] == [1, 2, 3, 4]

    merged = resolve_model_path(out)
    assert Path(merged).resolve() == (out / "merged").resolve()
    # The manifest holds paths relative to itself: a moved results tree loads its own weights.
    moved = out.rename(tmp_path / "moved-sft")
    assert Path(resolve_model_path(moved)).resolve() == (moved / "merged").resolve()
    merged = resolve_model_path(moved)
    model = AutoModelForCausalLM.from_pretrained(merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert not has_generation_markers(tokenizer.chat_template)  # the model's own template ships, not ours
    ids = tokenizer.apply_chat_template(
        TOOL_CONVERSATION[:2], add_generation_prompt=True, return_tensors="pt"
    )
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert model(ids).logits.shape[-1] == len(tokenizer)


def test_changed_sft_data_trains_again_from_step_0_and_the_same_data_resumes(tiny_model_manifest, tmp_path, capfd):
    """The rule always passes --resume: only checkpoints of the same model, data and flags are resumed from.
    Each run is also an offline wandb run in the study's group (the default tracking)."""
    from datasets import Dataset
    from repairrl.sft.train import main

    data = tmp_path / "data"
    Dataset.from_list([{"messages": TOOL_CONVERSATION}] * 2).save_to_disk(str(data))
    out = tmp_path / "sft"
    common = ["--model", str(tiny_model_manifest), "--dataset", str(data), "--out", str(out), "--resume"]
    common += ["--save-steps", "2", "--max-length", "256", "--lora-r", "4", "--disable-tqdm", "true"]
    common += ["--tracking-dir", str(tmp_path / "study"), "--tracking-group", "study"]

    def summary() -> dict:
        return json.loads((out / "train_summary.json").read_text())

    assert main([*common, "--max-steps", "2"]) == 0
    assert (out / "checkpoints.fingerprint.json").is_file()
    (run,) = (tmp_path / "study" / "wandb").glob("offline-run-*")
    (log,) = run.glob("run-*.wandb")
    assert b"train/loss" in log.read_bytes() and b"study" in log.read_bytes()  # the trainer's logs, the group
    assert main([*common, "--max-steps", "2"]) == 0  # same inputs: the finished run is resumed, no new steps
    assert summary()["resumed_from"].endswith("checkpoint-2")

    changed = [{"messages": [*TOOL_CONVERSATION[:-1], {"role": "assistant", "content": "Fixed, differently."}]}]
    Dataset.from_list(changed * 2).save_to_disk(str(data))
    capfd.readouterr()
    assert main([*common, "--max-steps", "2"]) == 0
    assert "sft: not resuming" in capfd.readouterr().err
    assert summary()["resumed_from"] is None and summary()["global_step"] == 2
    state = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2]  # trained both steps
    with open(out / "metrics.csv") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [1, 2]

    assert main([*common, "--max-steps", "2", "--learning-rate", "1e-3"]) == 0  # a flag that changes training
    assert summary()["resumed_from"] is None
