"""Run the agent on many tasks, N samples each, in parallel, resumably.

    python -m repairrl.agent --tasks tasks.jsonl --model results/models/smollm2 --backend inprocess \
        --samples 4 --workers 8 --cache-dir results/cache --sandbox bwrap --out trajectories.jsonl

`--task file_repair | detection` runs single-turn episodes instead (repairrl.singleturn.episode): one prompt,
one answer, no sandbox, recorded in the same trajectory format.

Each finished (task, sample) pair is appended to a journal (`<out>.journal`) at once; a rerun skips the pairs
already there, so a killed job loses only the episodes in flight. The output is written atomically at the end.
An episode that could not reach the model server (EndpointUnavailableError) is not journaled: the run ends with
an error after the others, and a rerun (SLURM's retry of the job) runs it again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from repairrl.agent.loop import AgentConfig, run_episode
from repairrl.models.backends import ChatBackend, EndpointUnavailableError, SamplingParams, make_backend
from repairrl.records import append_jsonl, read_journal, validate_record, write_jsonl
from repairrl.repos import anonymous_worktree_path
from repairrl.sandbox.base import Sandbox, SandboxLimits
from repairrl.scratch import make_scratch
from repairrl.singleturn.episode import SingleTurnEnvironment, make_environment, run_single_turn
from repairrl.tasks import TASK_KINDS, Task, read_task_table
from repairrl.trajectories import failed_record

# (task, destination) -> the working copy; (working copy, task) -> an open-able sandbox on it.
PrepareWorktree = Callable[[Task, Path], Path]
OpenSandbox = Callable[[Path, Task], Sandbox]


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".journal")


def episode_seed(seed: int | None, task_index: int, sample: int, samples: int) -> int | None:
    return None if seed is None else seed + task_index * samples + sample


def run_tasks(tasks: list[Task], backend: ChatBackend, out: Path, prepare_worktree: PrepareWorktree,
              open_sandbox: OpenSandbox, config: AgentConfig | None = None, samples: int = 1, workers: int = 4,
              seed: int | None = None, work_root: Path | None = None, retry_failed: bool = False,
              keep_worktrees: bool = False, progress: bool = True,
              single_turn: SingleTurnEnvironment | None = None) -> dict:
    """Run every (task, sample) pair not yet in the journal; write all records to `out`; return a summary.

    With `single_turn`, each pair is one prompt and one answer of that environment (no working copy, no sandbox).
    """
    out, config = Path(out), config or AgentConfig()
    journal = journal_path(out)
    done = {(r["instance_id"], r["sample"]) for r in read_journal(journal)
            if r.get("status") == "ok" or not retry_failed}
    pending = [(index, task, sample) for index, task in enumerate(tasks) for sample in range(samples)
               if (task.instance_id, sample) not in done]
    journal_lock = threading.Lock()
    unavailable: list[EndpointUnavailableError] = []
    scratch = make_scratch("repairrl-agent-", work_root)

    from tqdm import tqdm

    bar = tqdm(total=len(tasks) * samples, initial=len(tasks) * samples - len(pending), unit="episode",
               disable=not progress, file=sys.stderr)

    def run_pair(index: int, task: Task, sample: int) -> None:
        pair_seed = episode_seed(seed, index, sample, samples)
        dest = anonymous_worktree_path(scratch)
        try:
            if single_turn is not None:
                record = run_single_turn(single_turn, task, backend, sample=sample, seed=pair_seed)
            else:
                workdir = prepare_worktree(task, dest)
                with open_sandbox(workdir, task) as sandbox:
                    record = run_episode(task, backend, sandbox, workdir, config, sample=sample, seed=pair_seed)
        except EndpointUnavailableError as error:
            # The model server is gone: not this episode's result. It is not journaled, so a rerun runs it.
            with journal_lock:
                unavailable.append(error)
                bar.update(1)
            return
        except Exception as error:  # noqa: BLE001 - one task's failure is recorded with it; the run goes on
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            record = failed_record(task, sample, backend.model_name, detail, seed=pair_seed)
        finally:
            if not keep_worktrees:
                shutil.rmtree(dest, ignore_errors=True)
        validate_record(record, "trajectory", f"{task.instance_id} sample {sample}")
        with journal_lock:
            append_jsonl(journal, record)
            bar.update(1)

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="episode") as pool:
            for future in [pool.submit(run_pair, *pair) for pair in pending]:
                future.result()
    finally:
        bar.close()
        if not keep_worktrees:
            shutil.rmtree(scratch, ignore_errors=True)

    if unavailable:
        raise EndpointUnavailableError(
            f"{len(unavailable)} of {len(pending)} episodes could not reach the model server and were not recorded "
            f"(the journal keeps the {len(pending) - len(unavailable)} others); rerun to run them: {unavailable[0]}")
    order = {task.instance_id: index for index, task in enumerate(tasks)}
    latest = {(r["instance_id"], r["sample"]): r for r in read_journal(journal)  # a retried pair: the last wins
              if r["instance_id"] in order and r["sample"] < samples}
    records = sorted(latest.values(), key=lambda r: (order[r["instance_id"]], r["sample"]))
    write_jsonl(out, records)
    failed = [r for r in records if r["status"] != "ok"]
    return {"episodes": len(records), "ran": len(pending), "skipped": len(tasks) * samples - len(pending),
            "failed": len(failed), "out": str(out)}


def _parser() -> argparse.ArgumentParser:
    defaults, sampling = AgentConfig(), SamplingParams()
    parser = argparse.ArgumentParser(prog="python -m repairrl.agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", required=True, type=Path, help="tasks JSONL (repairrl.tasks schema, or detection "
                        "samples for --task detection)")
    parser.add_argument("--task", choices=TASK_KINDS, default="repo_repair", help="repo_repair: the agent in a "
                        "sandbox; file_repair, detection: single-turn episodes")
    parser.add_argument("--max-file-chars", type=int, help="file_repair: largest file shown in a prompt")
    parser.add_argument("--out", required=True, type=Path, help="trajectories JSONL; its journal is <out>.journal")
    parser.add_argument("--model", help="inprocess: a prepared model (manifest dir); openai: the endpoint URL, "
                        "or the served model name when --base-url is given")
    parser.add_argument("--backend", choices=("inprocess", "openai"), default="inprocess")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint (implies --backend openai)")
    parser.add_argument("--model-name", help="name recorded in the trajectories (openai: the served model; "
                        "default: the endpoint's first model)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable with the API key")
    parser.add_argument("--samples", type=int, default=1, help="episodes per task")
    parser.add_argument("--workers", type=int, default=4, help="episodes run at once")
    parser.add_argument("--cache-dir", type=Path, help="repository cache (python -m repairrl.repos)")
    parser.add_argument("--sandbox", default="bwrap", choices=("bwrap", "apptainer", "docker", "unsafe-local"),
                        help="sandbox backend (repairrl.sandbox.task_sandbox): containers use each task's image, "
                             "bwrap where a task has none")
    parser.add_argument("--unsafe", action="store_true", help="allow the unconfined unsafe-local backend")
    parser.add_argument("--work-root", type=Path, help="where working copies are made (default: $TMPDIR)")
    parser.add_argument("--keep-worktrees", action="store_true", help="keep working copies, for debugging")
    parser.add_argument("--retry-failed", action="store_true", help="rerun pairs whose journal record failed")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--temperature", type=float, default=sampling.temperature)
    parser.add_argument("--top-p", type=float, default=sampling.top_p)
    parser.add_argument("--max-new-tokens", type=int, default=sampling.max_new_tokens, help="per model turn")
    parser.add_argument("--seed", type=int, default=sampling.seed)
    parser.add_argument("--max-tool-calls", type=int, default=defaults.max_tool_calls)
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens, help="conversation length cap")
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds per episode")
    parser.add_argument("--command-timeout", type=float, default=defaults.command_timeout_s)
    limits = SandboxLimits()
    parser.add_argument("--memory-mb", type=int, default=limits.memory_mb, help="memory of the whole sandbox")
    parser.add_argument("--cpus", type=float, default=limits.cpus, help="cores' worth of CPU time of the sandbox")
    parser.add_argument("--max-workdir-mb", type=int, default=limits.max_workdir_mb,
                        help="largest working copy; past it the episode ends (sandbox_limit)")
    parser.add_argument("--batch-size", type=int, default=16, help="inprocess: most requests per generate call")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tasks = read_task_table(args.tasks, args.task)
    sampling = SamplingParams(args.temperature, args.top_p, args.max_new_tokens, args.seed)
    config = AgentConfig(args.max_tool_calls, args.max_tokens, args.timeout, args.command_timeout)
    if args.cache_dir is None and args.task != "detection":
        raise SystemExit("--cache-dir is required: the repository cache the working copies are cloned from")
    single_turn = None if args.task == "repo_repair" else make_environment(args.task, args.cache_dir,
                                                                              args.max_file_chars)

    from repairrl.repos import materialize_worktree
    from repairrl.sandbox import task_sandbox
    limits = SandboxLimits(command_timeout_s=args.command_timeout, memory_mb=args.memory_mb, cpus=args.cpus,
                           max_workdir_mb=args.max_workdir_mb)

    def open_sandbox(workdir: Path, task: Task) -> Sandbox:
        return task_sandbox(args.sandbox, workdir, task, limits=limits, unsafe=args.unsafe)

    if args.base_url or args.backend == "openai":
        endpoint = args.base_url or args.model
        name = args.model_name or (args.model if args.base_url else None)
        backend = make_backend("openai", endpoint, sampling, model_name=name,
                               api_key=os.environ.get(args.api_key_env, "EMPTY"))
    else:
        if not args.model:
            raise SystemExit("--model is required: a prepared model directory (results/models/<name>)")
        backend = make_backend("inprocess", args.model, sampling, max_batch_size=args.batch_size,
                               model_name=args.model_name or Path(args.model).name)
    try:
        summary = run_tasks(
            tasks, backend, args.out, lambda task, dest: materialize_worktree(args.cache_dir, task, dest),
            open_sandbox, config, samples=args.samples, workers=args.workers, seed=args.seed,
            work_root=args.work_root, retry_failed=args.retry_failed, keep_worktrees=args.keep_worktrees,
            progress=not args.no_progress, single_turn=single_turn,
        )
    except EndpointUnavailableError as error:
        raise SystemExit(f"error: {error}") from None
    finally:
        backend.close()
    print(f"{summary['episodes']} episodes in {args.out} ({summary['ran']} run now, {summary['skipped']} resumed, "
          f"{summary['failed']} failed)")
    return 0
