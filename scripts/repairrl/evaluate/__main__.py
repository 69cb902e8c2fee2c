"""`python -m repairrl.evaluate`: evaluation of one model on one benchmark, as the evaluate rules call it.

    python -m repairrl.evaluate shard --tasks T --shard I --num-shards N --model-name M \
        --trajectories traj.jsonl --out predictions.jsonl [--serve-model PATH [--lora NAME=PATH] [--port P]] \
        [--vllm-log LOG] -- [agent arguments]
        run the agent on the shard's unfinished tasks (under the shard's own vLLM server, on a free port of
        127.0.0.1, when --serve-model is given), journal their trajectories, and write the shard's swebench
        predictions

    python -m repairrl.evaluate predictions --tasks T --trajectories a.jsonl [b.jsonl ...] --model-name M \
        --out predictions.jsonl [--samples N]
        predictions from trajectories already on disk (merging the shards); with --samples, one per
        (task, sample), sample k under the model name M.sample<k> (best-of-N rollouts, graded per sample)

    python -m repairrl.evaluate detection --tasks T --predictions P --out DIR --run-id R
        score detection answers against the labels: DIR/<model>.<run>.json with accuracy, per-class
        precision/recall and pairwise metrics

    python -m repairrl.evaluate harness --tasks T --predictions P --out DIR --run-id R \
        [--backend auto|swebench|apptainer|local|gitbug] [--cache-dir C] [--sandbox bwrap] [--workers W] \
        [--timeout S] [--dataset D] [--work-dir W] [--gitbug-java-root G]
        grade the predictions; DIR/<model>/<id>/report.json and DIR/<model>.<run>.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from repairrl.agent.run import journal_path
from repairrl.evaluate import harness, predictions
from repairrl.evaluate.gitbug import GitBugJavaConfig, run_gitbug_harness
from repairrl.fingerprint import claim_state
from repairrl.grading.run_evaluation import read_predictions
from repairrl.records import atomic_write, read_journal, read_jsonl
from repairrl.tasks import TASK_KINDS, Task, read_task_table, read_tasks, write_tasks


class AgentRunError(RuntimeError):
    """The agent CLI failed on a shard's tasks; its output names the cause."""


def agent_cli_runner(agent_args: list[str], base_url: str | None, log_path: Path | None, agent_out: Path):
    """Run `python -m repairrl.agent --tasks PENDING --out AGENT_OUT [--base-url URL/v1] AGENT_ARGS` once.

    One call for all the shard's pending tasks: the in-process backend loads the model once and batches every
    concurrent episode into one generate call, which is where a CPU run spends its time. Nothing is lost to a kill:
    AGENT_OUT stays between runs, the agent journals every episode in `<AGENT_OUT>.journal` as it ends and skips
    those on a rerun, so an episode finished before a kill is never run twice.
    """

    def run(pending: list[Task]) -> Iterator[dict]:
        with tempfile.TemporaryDirectory(prefix="repairrl-eval-") as scratch:
            tasks_path = Path(scratch, "tasks.jsonl")
            write_tasks(tasks_path, pending)
            command = [sys.executable, "-m", "repairrl.agent", "--tasks", str(tasks_path), "--out", str(agent_out)]
            if base_url:
                command += ["--base-url", f"{base_url}/v1"]
            command += agent_args
            with contextlib.ExitStack() as stack:
                log = stack.enter_context(open(log_path, "a", encoding="utf-8")) if log_path else None
                if log:
                    log.write(f"$ {shlex.join(command)}\n")
                    log.flush()
                completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT if log else None,
                                           check=False)
            if completed.returncode != 0:
                raise AgentRunError(
                    f"the agent exited with code {completed.returncode} on {len(pending)} tasks; see {log_path}"
                )
            wanted = {task.instance_id for task in pending}
            yield from (r for r in read_journal(agent_out) if r.get("instance_id") in wanted)

    return run


def _lora(values: list[str]) -> dict[str, str]:
    modules = {}
    for value in values:
        name, _, path = value.partition("=")
        if not path:
            raise SystemExit(f"--lora {value!r}: expected NAME=PATH")
        modules[name] = path
    return modules


def shard_server_log(args: argparse.Namespace) -> Path:
    """The shard's own server log: --vllm-log, else beside the agent log, else beside the trajectories.

    Never one file for all shards: shards of one model run at once, and their servers' lines would interleave.
    """
    if args.vllm_log is not None:
        return args.vllm_log
    if args.agent_log is not None:
        name = args.agent_log.name.removesuffix(".log").removesuffix(".agent")
        return args.agent_log.with_name(f"{name}.vllm.log")
    return args.trajectories.with_name(f"{args.trajectories.stem}.vllm.log")


def cmd_shard(args: argparse.Namespace) -> int:
    from repairrl.evaluate.serve import VLLMServerConfig, vllm_server

    tasks = predictions.select_shard(read_task_table(args.tasks, args.task), args.shard, args.num_shards)
    agent_args = list(args.agent_args)
    if agent_args[:1] == ["--"]:
        agent_args = agent_args[1:]

    agent_out = args.trajectories.with_name(f".agent-{args.trajectories.name}")
    # The shard's journal and the agent's own (which it skips finished episodes by) hold one model's episodes.
    fingerprint = predictions.shard_fingerprint(tasks, args.model_name, agent_args, args.serve_model)
    claim_state(args.trajectories, fingerprint, also=[agent_out, journal_path(agent_out)],
                what=f"evaluate shard {args.shard}")

    def go(base_url: str | None) -> dict:
        runner = agent_cli_runner(agent_args, base_url, args.agent_log, agent_out)
        return predictions.run_shard(tasks, runner, args.trajectories, args.out, args.model_name)

    if args.serve_model:
        # A prepared model's manifest directory (the rules pass those) or a path/hub id vLLM loads directly.
        served = args.serve_model
        if Path(served, "model.json").is_file():
            from repairrl.models.loading import resolve_model_path

            served = resolve_model_path(served)
        config = VLLMServerConfig(
            model=served, port=args.port, lora_modules=_lora(args.lora),
            startup_timeout_s=args.startup_timeout,
        )  # fmt: skip
        with vllm_server(config, shard_server_log(args), args.vllm_executable) as base_url:
            summary = go(base_url)
    else:
        summary = go(args.base_url)
    print(json.dumps(summary, sort_keys=True))
    return 0


def cmd_predictions(args: argparse.Namespace) -> int:
    tasks = read_task_table(args.tasks, args.task)
    trajectories = [record for path in args.trajectories for record in read_journal(path)]
    if args.samples is None:
        rows = predictions.predictions_for(tasks, trajectories, args.model_name)
    else:
        rows = predictions.predictions_per_sample(tasks, trajectories, args.model_name, args.samples)
    written = predictions.write_predictions(args.out, rows)
    print(f"{written} predictions for {len(tasks)} tasks -> {args.out}")
    return 0


def cmd_detection(args: argparse.Namespace) -> int:
    from repairrl.singleturn.detection import detection_metrics
    from repairrl.tasks import read_samples

    samples = read_samples(args.tasks)
    rows = read_jsonl(args.predictions)
    by_model: dict[str, list[dict]] = {}
    for row in rows:
        by_model.setdefault(row["model_name_or_path"], []).append(row)
    labels = {sample.instance_id: sample.label for sample in samples}
    for model_name, model_rows in by_model.items():
        answers = [{"sample_id": r["instance_id"], "predicted": r.get("answer")} for r in model_rows]
        summary = {
            "task": "detection",
            "model": model_name,
            "run_id": args.run_id,
            **detection_metrics(answers, samples),
            "per_sample": {a["sample_id"]: {"label": labels.get(a["sample_id"]), "predicted": a["predicted"]}
                           for a in answers},
        }
        args.out.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.out / f"{model_name}.{args.run_id}.json") as handle:
            json.dump(summary, handle, indent=2, sort_keys=True)
        print(f"{model_name} [detection]: accuracy {summary['accuracy']:.3f} on {summary['n']} samples")
    return 0


def cmd_harness(args: argparse.Namespace) -> int:
    tasks = read_tasks(args.tasks)
    preds = read_predictions(args.predictions)
    args.out.mkdir(parents=True, exist_ok=True)
    backends = {harness.default_backend(t, args.container_backend) for t in tasks}
    backend = args.backend if args.backend != "auto" else (backends.pop() if len(backends) == 1 else None)
    if backend is None:
        raise SystemExit(
            f"tasks need several backends {sorted(backends)}; evaluate them as separate benchmarks"
        )
    work_dir = args.work_dir or args.out.parent / f"{args.out.name}.work"
    if backend == "local":
        if args.cache_dir is None:
            raise SystemExit("--backend local needs --cache-dir (the repository cache)")
        summaries = harness.run_local_harness(
            tasks, preds, args.out, args.run_id, cache_dir=args.cache_dir, workers=args.workers,
            timeout_s=args.timeout, sandbox=args.sandbox, test_timeout_s=args.test_timeout,
        )  # fmt: skip
    elif backend == "swebench":
        summaries = harness.run_swebench_harness(
            tasks, preds, args.out, args.run_id, work_dir=work_dir, dataset=args.dataset,
            max_workers=args.workers, timeout_s=int(args.timeout),
        )  # fmt: skip
    elif backend == "apptainer":
        config = harness.ApptainerConfig(timeout_s=args.timeout, sif_dir=args.sif_dir)
        summaries = harness.run_apptainer_harness(
            tasks, preds, args.out, args.run_id, workers=args.workers, config=config
        )
    else:
        if args.gitbug_java_root is None:
            raise SystemExit("--backend gitbug needs --gitbug-java-root (the set-up gitbug-java checkout)")
        config = GitBugJavaConfig(root=args.gitbug_java_root, timeout_s=args.timeout)
        summaries = run_gitbug_harness(
            tasks, preds, args.out, args.run_id, config=config, workers=args.workers
        )
    for model_name, summary in summaries.items():
        print(
            f"{model_name} [{backend}]: {summary['resolved_instances']}/{summary['total_instances']} resolved, "
            f"{summary['empty_patch_instances']} empty, {summary['error_instances']} errors"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repairrl.evaluate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    shard = sub.add_parser("shard", help="run the agent on one shard and write its predictions")
    shard.add_argument("--tasks", required=True, type=Path)
    shard.add_argument("--shard", type=int, default=0)
    shard.add_argument("--num-shards", type=int, default=1)
    shard.add_argument("--model-name", required=True, help="model_name_or_path of the predictions")
    shard.add_argument("--task", choices=TASK_KINDS, default="repo_repair", help="what the task table holds")
    shard.add_argument(
        "--trajectories", required=True, type=Path,
        help="the shard's trajectory journal (resumed if written by the same model, tasks and agent flags)",
    )
    shard.add_argument("--out", required=True, type=Path, help="the shard's predictions (.jsonl)")
    shard.add_argument("--agent-log", type=Path)
    shard.add_argument("--base-url", help="an OpenAI-compatible server already running")
    shard.add_argument("--serve-model", help="start `vllm serve` on this model for the shard")
    shard.add_argument("--lora", action="append", default=[], help="NAME=PATH adapter for vLLM (repeatable)")
    shard.add_argument("--port", type=int, help="the server's port (default: one free at start-up, so shards on "
                       "one node never share a server)")
    shard.add_argument("--startup-timeout", type=float, default=900.0)
    shard.add_argument("--vllm-log", type=Path, help="the server's log (default: beside --agent-log, per shard)")
    shard.add_argument("--vllm-executable", default="vllm", help="the `vllm` command (a site wrapper)")
    shard.add_argument(
        "agent_args", nargs=argparse.REMAINDER, help="after --: arguments for python -m repairrl.agent"
    )
    shard.set_defaults(func=cmd_shard)

    preds = sub.add_parser("predictions", help="swebench predictions from trajectory files")
    preds.add_argument("--tasks", required=True, type=Path)
    preds.add_argument("--trajectories", required=True, nargs="+", type=Path)
    preds.add_argument("--model-name", required=True)
    preds.add_argument("--task", choices=TASK_KINDS, default="repo_repair")
    preds.add_argument("--samples", type=int, help="one prediction per (task, sample) for samples 0..N-1, "
                       "sample k as model MODEL_NAME.sample<k>; default: one per task, its latest episode")
    preds.add_argument("--out", required=True, type=Path)
    preds.set_defaults(func=cmd_predictions)

    detection = sub.add_parser("detection", help="score detection answers against the labels")
    detection.add_argument("--tasks", required=True, type=Path, help="detection samples (tasks.jsonl)")
    detection.add_argument("--predictions", required=True, type=Path)
    detection.add_argument("--out", required=True, type=Path)
    detection.add_argument("--run-id", default="repairrl")
    detection.set_defaults(func=cmd_detection)

    grade = sub.add_parser("harness", help="grade predictions with a harness backend")
    grade.add_argument("--tasks", required=True, type=Path)
    grade.add_argument("--predictions", required=True, type=Path)
    grade.add_argument("--out", required=True, type=Path)
    grade.add_argument("--run-id", default="repairrl")
    grade.add_argument("--backend", default="auto", choices=["auto", *harness.BACKENDS])
    grade.add_argument("--container-backend", default="swebench", choices=["swebench", "apptainer"],
                       help="what `auto` uses for swebench tasks")  # fmt: skip
    grade.add_argument("--cache-dir", type=Path)
    grade.add_argument("--sandbox", default="bwrap", help="local backend: bwrap, apptainer, docker or unsafe")
    grade.add_argument("--workers", type=int, default=2)
    grade.add_argument("--timeout", type=float, default=1800.0, help="seconds per instance's tests")
    grade.add_argument("--test-timeout", type=float, default=30.0, help="local backend: seconds per test; a test "
                       "that runs longer fails and the others still run")
    grade.add_argument("--dataset", help="swebench backend: dataset name or file (default: the task table)")
    grade.add_argument("--work-dir", type=Path, help="swebench backend: where its logs/ go")
    grade.add_argument("--gitbug-java-root", type=Path)
    grade.add_argument("--sif-dir", type=Path, help="apptainer: folder of pulled instance images (<name>_<tag>.sif)")
    grade.set_defaults(func=cmd_harness)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
