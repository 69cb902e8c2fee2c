"""How long does a GRPO step wait for the `resolved` reward when each patch is graded in the task's image?

A group of G rollouts of one task (gold, gold, a patch that does nothing, a test-tampering patch, repeated) is
graded as the rollout grades it (repairrl.grading.grade_with_tests with backend docker: a fresh container of the
task's image, the patch applied, the eval script run, swebench's verdict), one after the other and then with G
threads, as repairrl.grpo.rollout grades a step's records. The image is a mini benchmark task published as a
SWE-bench instance (repairrl.data.mini_images) on tests/docker/local_docker.sh's base image.
Usage: python bench/container_grading.py [--group 4] [--repeats 3] [--task mini__pager-1]
Needs a running Docker daemon (tests/docker/local_docker.sh start; root).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from repairrl.data.mini_benchmark import build_benchmark, load_tasks
from repairrl.data.mini_images import publish_tasks
from repairrl.grading.grade import grade_with_tests
from repairrl.repos import cache_tasks

DOCKER_SCRIPT = Path(__file__).resolve().parents[1] / "tests" / "docker" / "local_docker.sh"
NOOP_PATCH = (
    "diff --git a/NOTES.txt b/NOTES.txt\nnew file mode 100644\n--- /dev/null\n+++ b/NOTES.txt\n"
    "@@ -0,0 +1 @@\n+not a fix\n"
)
TAMPER_PATCH = (
    "diff --git a/conftest.py b/conftest.py\nnew file mode 100644\n--- /dev/null\n+++ b/conftest.py\n"
    "@@ -0,0 +1,2 @@\n+import pytest\n+collect_ignore = ['tests']\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--group", type=int, default=4, help="rollouts per prompt (GRPO's num_generations)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--task", default="mini__pager-1")
    args = parser.parse_args()
    base_image = subprocess.run(
        [DOCKER_SCRIPT, "image"], check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        build_benchmark(root / "mini")
        tasks = [t for t in load_tasks(root / "mini") if t.instance_id == args.task]
        cache_tasks(tasks, root / "cache")
        (task,) = publish_tasks(tasks, base_image, root)
        kinds = [task.gold_patch, task.gold_patch, NOOP_PATCH, TAMPER_PATCH]
        patches = [kinds[i % len(kinds)] for i in range(args.group)]

        def grade(patch: str) -> float:
            outcome = grade_with_tests(
                task, patch, root / "cache", backend="docker", timeout_s=300, work_root=root
            )
            return float(outcome.resolved)

        grade(task.gold_patch)  # warm: the page cache holds the image's layers
        serial, parallel = [], []
        for _ in range(args.repeats):
            started = time.monotonic()
            serial_rewards = [grade(patch) for patch in patches]
            serial.append(time.monotonic() - started)
            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=args.group) as pool:
                parallel_rewards = list(pool.map(grade, patches))
            parallel.append(time.monotonic() - started)
            assert serial_rewards == parallel_rewards, (serial_rewards, parallel_rewards)
        subprocess.run(["docker", "image", "rm", "--force", task.image], capture_output=True, check=False)
    print(f"rewards of the group: {serial_rewards}")
    print(f"group of {args.group}, one container each ({args.repeats} repeats, median):")
    print(
        f"  serial    {statistics.median(serial):6.2f} s  ({statistics.median(serial) / args.group:.2f} s a patch)"
    )
    print(
        f"  parallel  {statistics.median(parallel):6.2f} s  (speed-up {statistics.median(serial) / statistics.median(parallel):.1f}x)"
    )


if __name__ == "__main__":
    main()
