"""SFT data by best-of-N rollouts: the best episode of each task whose reward passes a threshold, as a chat dataset.

    python -m repairrl.sft.dataset --trajectories rollouts.jsonl [more.jsonl ...] --tasks tasks.jsonl \
        --threshold 0.8 --criterion similarity --out results/.../sft/data --stats results/.../sft/stats.json \
        [--expert-demos demos.jsonl] [--grades teacher.sample0.eval.json ...]

Criteria: `similarity` (the reference: diff similarity of the episode's final patch to the gold patch, computed
here when `--tasks` is given, else read from the record), `resolved` (the tests pass: 1.0 or 0.0, the verdict of
the harness that graded the rollouts, `--grades`: the run summaries of `python -m repairrl.evaluate harness` on
the predictions of `python -m repairrl.evaluate predictions --samples N`, one per sample) and, for the detection
task, `correct_label` (the answer's label is the sample's; computed here). An episode passes when its reward is
at least the threshold. Per task the best passing episode is kept; ties go to the shorter episode (fewer
messages), then to the one read first. An episode the grader gave no verdict (it crashed, or never graded it) is
counted in the statistics as ungraded and left out, never scored 0.

A task with no passing rollout takes its expert demonstration (`repairrl.sft.expert`) when one is given: rows are
labelled `source: rollout` or `source: expert_demo`, in the data and in the statistics.

The output is a Hugging Face dataset (`save_to_disk`) with a `messages` column in the agent's chat format (tool
calls as hermes `<tool_call>` text in assistant messages, tool results as `tool` messages), which TRL's
SFTTrainer reads as a conversational dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from repairrl.evaluate.predictions import sample_of_model_name
from repairrl.records import atomic_write, read_jsonl, validate_record
from repairrl.trajectories import episode_patch

ROLLOUT_SOURCE = "rollout"
EXPERT_SOURCE = "expert_demo"
CRITERIA = ("similarity", "resolved", "correct_label")
CHAT_ROLES = ("system", "user", "assistant", "tool")


class EmptySFTDatasetError(RuntimeError):
    """No episode passed the threshold and no expert demonstration filled in: there is nothing to train on."""


class TrajectoryRecordError(ValueError):
    """A trajectory record lacks what the SFT data needs (instance id, messages, a reward)."""


# --- reading the grading of the rollouts (criterion resolved) ---

# (instance id, sample) -> 1.0 resolved, 0.0 not resolved, None no verdict
Verdicts = Mapping[tuple[str, int], float | None]


def read_verdicts(summaries: Iterable[Mapping]) -> dict[tuple[str, int], float | None]:
    """Each graded episode's verdict from the harness's run summaries (the grading_report run_summary), one
    summary per sample, named by `repairrl.evaluate.predictions.sample_model_name`.

    An empty patch, a patch that does not apply or a test timeout is the model's failure (0.0); a grading error
    (the grader crashed, the test patch did not apply, not graded) is no verdict (None).
    """
    verdicts: dict[tuple[str, int], float | None] = {}
    for summary in summaries:
        sample = sample_of_model_name(summary["model_name_or_path"])
        no_verdict = set(summary.get("grading_error_ids", [])) | set(summary.get("infra_failure_ids", []))
        resolved = set(summary["resolved_ids"])
        failed = set(summary["unresolved_ids"]) | set(summary["empty_patch_ids"]) | set(summary["error_ids"])
        for instance_id in summary["submitted_ids"]:
            if instance_id in no_verdict or instance_id not in resolved | failed:
                verdicts[instance_id, sample] = None
            else:
                verdicts[instance_id, sample] = 1.0 if instance_id in resolved else 0.0
    return verdicts


# --- reading trajectory records (plain dicts: the agent's trajectory schema is read here and nowhere else) ---


def _recorded_score(record: Mapping, name: str) -> float | None:
    """A reward the record already carries: top level, or under `rewards` / `components` / `outcome`."""
    for holder in (record, record.get("rewards"), record.get("components"), record.get("outcome")):
        if isinstance(holder, Mapping) and isinstance(holder.get(name), bool | int | float):
            return float(holder[name])
    return None


def episode_reward(record: Mapping, criterion: str, gold_patch: str | None = None, item=None,
                   verdicts: Verdicts | None = None) -> float | None:
    """The episode's reward under `criterion`, in [0, 1]; None for an episode the grader gave no verdict.

    `similarity` is computed from the final patch when the gold patch is known (so every episode is scored the
    same way), else read from the record; `resolved` is the verdict of the grading of the rollouts.
    """
    if criterion == "resolved":
        if verdicts is None:
            raise TrajectoryRecordError("criterion resolved needs the grading of the rollouts (--grades)")
        return verdicts.get((record.get("instance_id"), record.get("sample", 0)))
    if criterion == "correct_label":
        if item is None:
            raise TrajectoryRecordError(f"criterion correct_label needs the samples (--tasks) for "
                                        f"{record.get('instance_id', '?')!r}")
        from repairrl.grading.rewards import correct_label

        answer = next((m.get("content") or "" for m in reversed(record.get("messages") or [])
                       if m.get("role") == "assistant"), "")
        return correct_label(item, answer)
    if criterion == "similarity" and gold_patch is not None:
        from repairrl.grading.similarity import diff_similarity

        return diff_similarity(episode_patch(record), gold_patch)
    score = _recorded_score(record, criterion)
    if score is None:
        raise TrajectoryRecordError(
            f"trajectory of {record.get('instance_id', '?')!r} carries no {criterion!r} reward; pass --tasks so it "
            "can be computed"
        )
    return score


def _tool_call_text(call: Mapping) -> str:
    function = call.get("function", call)
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        arguments = json.loads(arguments)
    body = json.dumps({"name": function["name"], "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>{body}</tool_call>"


def chat_messages(record: Mapping, where: str = "trajectory") -> list[dict]:
    """The episode as `{"role", "content"}` messages, the columns every row of the dataset shares.

    Token ids, loss masks and per-message metadata of the record are dropped: the trainer re-tokenizes with the
    training chat template. Structured `tool_calls` that are not already in the content are written into it as
    hermes text, the one form the agent parses.
    """
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TrajectoryRecordError(f"{where}: no 'messages' list")
    rows = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise TrajectoryRecordError(
                f"{where}: message {index} has role {role!r}, expected one of {CHAT_ROLES}"
            )
        content = message.get("content") or ""
        if not isinstance(content, str):  # OpenAI-style content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
        calls = message.get("tool_calls") or []
        if calls and "<tool_call>" not in content:
            content = content + "".join(_tool_call_text(call) for call in calls)
        rows.append({"role": role, "content": content})
    if not any(row["role"] == "assistant" for row in rows):
        raise TrajectoryRecordError(f"{where}: no assistant message, nothing to learn from")
    return rows


# --- selection (pure: records in, rows and statistics out) ---


def best_episodes(
    scored: Iterable[tuple[float, dict]], threshold: float
) -> tuple[dict[str, tuple[float, dict]], dict[str, float]]:
    """Per task, the best episode with reward >= threshold; and per task the best reward seen (kept or not).

    Ties on reward go to the episode with fewer messages, then to the one seen first.
    """
    best: dict[str, tuple[float, dict]] = {}
    best_seen: dict[str, float] = {}
    for reward, record in scored:
        instance_id = record["instance_id"]
        best_seen[instance_id] = max(reward, best_seen.get(instance_id, float("-inf")))
        if reward < threshold:
            continue
        current = best.get(instance_id)
        if current is None or (reward, -len(record["messages"])) > (current[0], -len(current[1]["messages"])):
            best[instance_id] = (reward, record)
    return best, best_seen


def select_sft_rows(
    trajectories: list[dict],
    threshold: float,
    criterion: str = "similarity",
    gold_patches: Mapping[str, str] | None = None,
    repos: Mapping[str, str] | None = None,
    expert_demos: list[dict] | None = None,
    items: Mapping[str, object] | None = None,
    verdicts: Verdicts | None = None,
) -> tuple[list[dict], dict]:
    """(rows, stats): the SFT rows, one per task, and the statistics written beside them. `verdicts` are the
    graded episodes' outcomes (criterion resolved, `read_verdicts`).

    Raises EmptySFTDatasetError when no row is left, naming the threshold and the best reward seen.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    gold_patches = gold_patches or {}
    repos = dict(repos or {})
    scored, ungraded = [], []
    for index, record in enumerate(trajectories):
        where = f"trajectory {index} ({record.get('instance_id', '?')})"
        if not record.get("instance_id"):
            raise TrajectoryRecordError(f"{where}: no 'instance_id'")
        repos.setdefault(record["instance_id"], record.get("repo") or "unknown")
        normalized = {**record, "messages": chat_messages(record, where), "_index": index}
        reward = episode_reward(record, criterion, gold_patches.get(record["instance_id"]),
                                (items or {}).get(record["instance_id"]), verdicts)
        if reward is None:  # no verdict: an error of the grading, not a failed episode
            ungraded.append(f"{record['instance_id']}#{record.get('sample', 0)}")
            continue
        scored.append((reward, normalized))
    best, best_seen = best_episodes(scored, threshold)

    rows = []
    for instance_id, (reward, record) in best.items():
        rows.append(_row(record, instance_id, repos[instance_id], ROLLOUT_SOURCE, reward, record["_index"]))
    covered = set(best)
    for index, demo in enumerate(expert_demos or []):
        instance_id = demo.get("instance_id")
        if not instance_id:
            raise TrajectoryRecordError(f"expert demo {index}: no 'instance_id'")
        if instance_id in covered:
            continue  # a rollout that passed beats the scripted demo; one demo per task
        covered.add(instance_id)
        repos.setdefault(instance_id, demo.get("repo") or "unknown")
        messages = chat_messages(demo, f"expert demo {index} ({instance_id})")
        demo_row = {**demo, "messages": messages}
        rows.append(_row(demo_row, instance_id, repos[instance_id], EXPERT_SOURCE, 1.0, index))

    best_reward = max(best_seen.values(), default=None)
    if not rows:
        if best_reward is None:
            seen = "no episode had a verdict" if ungraded else "no trajectories were given"
        else:
            top = max(best_seen, key=best_seen.get)
            seen = f"the best {criterion} reward seen was {best_reward:.3f} ({top}, {len(scored)} episodes)"
        if ungraded:
            seen += f"; {len(ungraded)} episodes had no verdict from the grader (its log says why)"
        raise EmptySFTDatasetError(
            f"the SFT dataset is empty: no episode reached --threshold {threshold} on criterion {criterion!r}; "
            f"{seen}. Lower --threshold (to at most the best reward seen), or add --expert-demos "
            "(python -m repairrl.sft.expert) to train on scripted demonstrations."
        )

    rows.sort(key=lambda row: row["instance_id"])
    per_repo: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        per_repo[row["repo"]][row["source"]] += 1
    stats = {
        "criterion": criterion,
        "threshold": threshold,
        "episodes": len(scored) + len(ungraded),
        "ungraded_episodes": sorted(ungraded),
        "tasks_seen": len(best_seen),
        "tasks_passing": len(best),
        "kept": len(rows),
        "kept_by_source": {ROLLOUT_SOURCE: len(best), EXPERT_SOURCE: len(rows) - len(best)},
        "per_repo": {repo: dict(counts) for repo, counts in sorted(per_repo.items())},
        "best_reward_seen": best_reward,
        "best_reward_per_task": dict(sorted(best_seen.items())),
        "dropped_tasks": sorted(set(best_seen) - set(best)),
    }
    return rows, stats


def _row(record: Mapping, instance_id: str, repo: str, source: str, reward: float, index: int) -> dict:
    return {
        "instance_id": instance_id,
        "repo": repo,
        "source": source,
        "reward": float(reward),
        "episode": str(
            next((record[k] for k in ("episode_id", "trajectory_id", "sample") if k in record), index)
        ),
        "messages": record["messages"],
    }


# --- writing ---


def save_dataset_atomically(rows: list[dict], out_dir: Path) -> None:
    """`save_to_disk` into a temporary directory beside `out_dir`, then rename it into place."""
    from datasets import Dataset

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        Dataset.from_list(rows).save_to_disk(str(staging))
        if out_dir.exists():
            retired = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.old")
            out_dir.rename(retired)
            shutil.rmtree(retired)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_sft_dataset(
    trajectory_paths: list[Path],
    out_dir: Path,
    stats_path: Path,
    threshold: float = 0.8,
    criterion: str = "similarity",
    tasks_path: Path | None = None,
    expert_demos_path: Path | None = None,
    task_kind: str = "repo_repair",
    grades_paths: list[Path] | None = None,
) -> dict:
    gold_patches, repos, items = {}, {}, {}
    if tasks_path is not None:
        from repairrl.tasks import read_task_table

        tasks = read_task_table(tasks_path, task_kind)
        for task in tasks:
            items[task.instance_id] = task
            repos[task.instance_id] = task.repo
            if task_kind != "detection":
                gold_patches[task.instance_id] = task.gold_patch
    trajectories = [record for path in trajectory_paths for record in read_jsonl(path)]
    demos = read_jsonl(expert_demos_path) if expert_demos_path else None
    verdicts = None
    if grades_paths:
        from repairrl.grading.run_evaluation import validate_report

        summaries = [json.loads(Path(path).read_text()) for path in grades_paths]
        for summary in summaries:
            validate_report(summary, "run_summary")
        verdicts = read_verdicts(summaries)
    rows, stats = select_sft_rows(trajectories, threshold, criterion, gold_patches, repos, demos, items, verdicts)
    for row in rows:
        validate_record(row, "sft_example", f"SFT row {row['instance_id']}")
    validate_record(stats, "sft_stats", str(stats_path))
    save_dataset_atomically(rows, out_dir)
    with atomic_write(stats_path) as handle:
        json.dump(stats, handle, indent=2)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the SFT chat dataset from agent rollouts: the best passing episode per task."
    )
    parser.add_argument("--trajectories", nargs="*", default=[], type=Path, help="trajectory JSONL file(s)")
    parser.add_argument(
        "--tasks", type=Path, help="task table: gold patches (similarity) and repository names"
    )
    # No defaults for what the workflow always passes: they live in the config schema (sft.threshold, ...).
    parser.add_argument("--threshold", type=float, required=True, help="minimum reward kept")
    parser.add_argument("--criterion", choices=CRITERIA, required=True)
    parser.add_argument("--task", choices=("repo_repair", "file_repair", "detection"), default="repo_repair",
                        help="what the task table holds")
    parser.add_argument(
        "--expert-demos", type=Path, help="scripted demos (repairrl.sft.expert) for tasks left out"
    )
    parser.add_argument("--grades", nargs="+", type=Path, help="criterion resolved: the run summaries of the "
                        "rollouts' grading (python -m repairrl.evaluate harness), one per sample")
    parser.add_argument("--out", required=True, type=Path, help="dataset directory (save_to_disk)")
    parser.add_argument("--stats", required=True, type=Path, help="statistics JSON to write")
    args = parser.parse_args(argv)
    try:
        stats = build_sft_dataset(
            args.trajectories,
            args.out,
            args.stats,
            args.threshold,
            args.criterion,
            args.tasks,
            args.expert_demos,
            args.task,
            args.grades,
        )
    except (EmptySFTDatasetError, TrajectoryRecordError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = {key: stats[key] for key in ("episodes", "kept", "kept_by_source", "best_reward_seen")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
