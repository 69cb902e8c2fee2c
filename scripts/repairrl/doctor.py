"""`python -m repairrl.doctor` (scripts/gpu_check.sh): what to run first on a new cluster, on one GPU node.

    scripts/gpu_check.sh [--work-dir DIR] [--only environment,serve_and_evaluate,...]

With the embedded model (no hub access) it checks, in order, and prints a pass/fail table:

    environment         torch sees the GPUs; its CUDA line is the one vLLM's kernels were built for; vllm,
                        deepspeed and trl import
    prepare_model       the embedded GGUF converts into a checkpoint vLLM and transformers both load
    serve_and_evaluate  `vllm serve` of that checkpoint with our tool parser, on a free port of 127.0.0.1, and
                        two evaluation episodes through it (python -m repairrl.evaluate shard)
    grpo_vllm           two GRPO steps generating through TRL's vLLM server, with the weight sync between them
                        (python -m repairrl.grpo.server; server on GPU 0, trainer on GPU 1: needs two)
    zero2_launch        accelerate + DeepSpeed ZeRO-2 with two processes, one GRPO step (needs two GPUs)

Each check's output goes to WORK_DIR/<check>.log; a failed check names its log. The exit code is 0 only when no
check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PASS, FAIL, SKIP = "pass", "FAIL", "skip"
CALC = "def add(a, b):\n    return a - b\n"


@dataclass
class CheckResult:
    name: str
    status: str
    seconds: float
    detail: str


class CheckSkipped(Exception):
    """The check does not apply here (no second GPU); the message says why."""


def format_table(results: list[CheckResult]) -> str:
    rows = [("check", "result", "seconds", "detail")]
    rows += [(r.name, r.status, f"{r.seconds:.0f}", r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
             for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


class Doctor:
    def __init__(self, work_dir: Path, vllm_executable: str = "vllm", sandbox: str | None = None):
        self.work = Path(work_dir).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.vllm = vllm_executable
        self.sandbox = sandbox or ("bwrap" if shutil.which("bwrap") else "unsafe-local")
        self.model = self.work / "models" / "base"

    def run(self, name: str, command: list[str], timeout_s: float, env: dict | None = None) -> str:
        log = self.work / f"{name}.log"
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"$ {' '.join(command)}\n")
            handle.flush()
            try:
                done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout_s,
                                      env={**os.environ, **(env or {})}, check=False, cwd=self.work)
            except subprocess.TimeoutExpired as error:
                raise RuntimeError(f"timed out after {timeout_s:.0f} s; see {log}") from error
        if done.returncode != 0:
            tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
            raise RuntimeError(f"exit {done.returncode}: {tail[0][:120] if tail else ''} (see {log})")
        return str(log)

    # The checks -----------------------------------------------------------------------------------------------

    def environment(self) -> str:
        import importlib.metadata
        import importlib.util

        import torch

        missing = [m for m in ("vllm", "deepspeed", "trl") if importlib.util.find_spec(m) is None]
        if missing:
            raise RuntimeError(f"not installed: {', '.join(missing)} (pip install -e '.[gpu]')")
        if not torch.cuda.is_available():
            raise RuntimeError(f"torch {torch.__version__} sees no GPU (CUDA build: {torch.version.cuda})")
        vllm_version = importlib.metadata.version("vllm")
        # vLLM's kernels link the CUDA runtime of the torch they were built with: a mismatch fails at import.
        probe = subprocess.run([sys.executable, "-c", "import vllm._C"], capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            raise RuntimeError(f"vllm {vllm_version}'s kernels do not load with torch {torch.__version__} "
                               f"(CUDA {torch.version.cuda}): {probe.stderr.strip().splitlines()[-1][:160]}")
        return (f"torch {torch.__version__} CUDA {torch.version.cuda}, {torch.cuda.device_count()} x "
                f"{torch.cuda.get_device_name(0)}, vllm {vllm_version}")

    def prepare_model(self) -> str:
        self.run("prepare_model", [sys.executable, "-m", "repairrl.models.prepare", "--name", "base",
                                   "--source", "embedded", "--out", str(self.model)], 900)
        return str(self.model)

    def _tasks(self) -> tuple[Path, Path]:
        """One small repository with a bug, its task table and its repository cache."""
        from repairrl.repos import cache_tasks
        from repairrl.tasks import Task, write_tasks

        origin = self.work / "calc"
        if not origin.exists():
            origin.mkdir()
            identity = {"GIT_AUTHOR_NAME": "gpu check", "GIT_AUTHOR_EMAIL": "check@repairrl.invalid",
                        "GIT_COMMITTER_NAME": "gpu check", "GIT_COMMITTER_EMAIL": "check@repairrl.invalid"}
            (origin / "calc.py").write_text(CALC)
            for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "calc"],
                         ["config", "uploadpack.allowAnySHA1InWant", "true"]):
                subprocess.run(["git", *args], cwd=origin, check=True, env={**os.environ, **identity})
        base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=origin, check=True, capture_output=True,
                              text=True).stdout.strip()
        tasks = [Task(instance_id=f"calc-{i}", dataset="gpu-check", repo="check/calc", repo_url=f"file://{origin}",
                      base_commit=base, problem_statement="add(2, 3) returns -1 instead of 5.",
                      gold_patch="--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n"
                                 "+    return a + b\n", test_patch="", fail_to_pass=[], pass_to_pass=[])
                 for i in range(2)]
        path, cache = self.work / "tasks.jsonl", self.work / "cache"
        write_tasks(path, tasks)
        if any(status["status"] != "ok" for status in cache_tasks(tasks, cache)):
            raise RuntimeError(f"could not cache the check's repository {origin}")
        return path, cache

    def _agent_flags(self, cache: Path) -> list[str]:
        flags = ["--cache-dir", str(cache), "--sandbox", self.sandbox, "--max-tool-calls", "3", "--max-new-tokens",
                 "256", "--no-progress"]
        return flags + (["--unsafe"] if self.sandbox == "unsafe-local" else [])

    def serve_and_evaluate(self) -> str:
        tasks, cache = self._tasks()
        journal = self.work / "eval" / "trajectories.jsonl"
        self.run("serve_and_evaluate", [
            sys.executable, "-m", "repairrl.evaluate", "shard", "--tasks", str(tasks), "--model-name", "base",
            "--trajectories", str(journal), "--out", str(self.work / "eval" / "predictions.jsonl"),
            "--serve-model", str(self.model), "--vllm-executable", self.vllm, "--startup-timeout", "900",
            "--agent-log", str(self.work / "eval" / "shard.agent.log"), "--", *self._agent_flags(cache)], 1800)
        records = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
        bad = [r for r in records if r["status"] != "ok" or r["stop_reason"] in ("model_error", "error")]
        if len(records) != 2 or bad:
            raise RuntimeError(f"{len(records)} episodes, {len(bad)} failed: {bad[0]['error'] if bad else ''}")
        return f"2 episodes ({', '.join(r['stop_reason'] for r in records)}) through vllm serve"

    def _grpo_command(self, out: Path, tasks: Path, cache: Path) -> list[str]:
        return ["-m", "repairrl.grpo.train", "--model", str(self.model), "--tasks", str(tasks), "--cache-dir",
                str(cache), "--out", str(out), "--num-generations", "2", "--tasks-per-step", "2",
                "--max-completion-length", "1024", "--episode-max-new-tokens", "128", "--episode-max-tool-calls",
                "2", "--sandbox", self.sandbox, "--rewards", "similarity=1.0", "--save-steps", "100",
                "--learning-rate", "1e-5", *(["--unsafe"] if self.sandbox == "unsafe-local" else [])]

    def grpo_vllm(self) -> str:
        import torch

        # NCCL's weight-update group cannot hold the trainer and the server on one device.
        if torch.cuda.device_count() < 2:
            raise CheckSkipped(f"{torch.cuda.device_count()} GPU: the weight sync needs the server and the trainer "
                               "on two")
        tasks, cache = self._tasks()
        out = self.work / "grpo_vllm"
        shutil.rmtree(out, ignore_errors=True)
        self.run("grpo_vllm", [
            sys.executable, "-m", "repairrl.grpo.server", "--model", str(self.model), "--server-gpus", "0",
            "--trainer-gpus", "1", "--log", str(self.work / "grpo_vllm.vllm.log"),
            "--vllm-arg=--gpu-memory-utilization", "--vllm-arg=0.3", "--vllm-arg=--max-model-len",
            "--vllm-arg=4096", "--", sys.executable, *self._grpo_command(out, tasks, cache), "--max-steps", "2"],
            1800)
        steps = [line for line in (out / "metrics.csv").read_text().splitlines()[1:] if line.strip()]
        if len(steps) != 2:
            raise RuntimeError(f"{len(steps)} steps in {out / 'metrics.csv'}, expected 2")
        return "2 steps, weights synced to the server between them (logprob gap checked)"

    def zero2_launch(self) -> str:
        import torch

        if torch.cuda.device_count() < 2:
            raise CheckSkipped(f"{torch.cuda.device_count()} GPU: ZeRO-2 with two processes needs two")
        tasks, cache = self._tasks()
        out = self.work / "zero2"
        shutil.rmtree(out, ignore_errors=True)
        config = Path(__file__).resolve().parents[2] / "config" / "accelerate" / "zero2.yaml"
        self.run("zero2_launch", ["accelerate", "launch", "--config_file", str(config), "--num_processes", "2",
                                  *self._grpo_command(out, tasks, cache), "--max-steps", "1"], 1800)
        return "1 step on 2 processes"

    CHECKS = ("environment", "prepare_model", "serve_and_evaluate", "grpo_vllm", "zero2_launch")

    def check_all(self, only: list[str] | None = None, print_progress: Callable[[str], None] = print
                  ) -> list[CheckResult]:
        results = []
        failed_before = False
        for name in self.CHECKS:
            if only and name not in only:
                continue
            started = time.monotonic()
            if failed_before and name != "environment" and not only:
                results.append(CheckResult(name, SKIP, 0.0, "an earlier check failed"))
                continue
            try:
                detail, status = getattr(self, name)(), PASS
            except CheckSkipped as skipped:
                detail, status = str(skipped), SKIP
            except Exception as error:  # noqa: BLE001 - every check's failure is one row of the table
                detail, status = f"{type(error).__name__}: {error}", FAIL
                failed_before = True
            results.append(CheckResult(name, status, time.monotonic() - started, detail))
            print_progress(f"{name}: {status} {detail}")
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repairrl.doctor", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--work-dir", type=Path, default=Path("results/gpu_check"))
    parser.add_argument("--only", help=f"comma-separated checks among {', '.join(Doctor.CHECKS)}")
    parser.add_argument("--vllm-executable", default="vllm")
    parser.add_argument("--sandbox", help="the episodes' sandbox (default: bwrap if installed, else unsafe-local)")
    args = parser.parse_args(argv)
    doctor = Doctor(args.work_dir, args.vllm_executable, args.sandbox)
    results = doctor.check_all(args.only.split(",") if args.only else None,
                               print_progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(results))
    return 1 if any(r.status == FAIL for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
