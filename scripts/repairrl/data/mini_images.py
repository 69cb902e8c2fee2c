"""The mini benchmark's Python tasks as SWE-bench instances: an image per task and swebench's row fields.

SWE-bench and SWE-Gym images come from a registry; where none is reachable (CI, this project's test machines),
this gives the same shape locally, so that swebench's harness, `sandbox: docker` and the container-graded
`resolved` reward run for real:

    image        FROM a base image with python3, pytest and git (tests/docker/local_docker.sh builds one):
                 the repository at /testbed, checked out at the base commit with its whole history (the fix
                 commit included, as SWE-bench's images hold it) and an untracked build product, as an install
                 leaves compiled extensions
    eval_script  swebench's eval script for a Python repository (repairrl.data.swebench_specs), running every
                 test file: a mini task's PASS_TO_PASS spans files the test patch does not touch
    log_parser   parse_log_pytest

    python -m repairrl.data.mini_images --mini results/data/mini --base-image repairrl-task-base:TAG --out tasks.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import tempfile
from pathlib import Path

from repairrl.tasks import Task

TEST_CMD = "python3 -m pytest -rA -p no:cacheprovider"
BUILD_PRODUCT = "BUILD_INFO.txt"


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def build_instance_image(task: Task, base_image: str, context: Path, docker: str = "docker") -> str:
    """`docker build FROM BASE_IMAGE` of the task's repository at /testbed; the image's name is swebench's."""
    from repairrl.grading.container import instance_image

    testbed = Path(context) / "testbed"
    _git("clone", "-q", task.repo_url.removeprefix("file://"), str(testbed), cwd=Path(context))
    _git("checkout", "-q", "--detach", task.base_commit, cwd=testbed)
    (testbed / BUILD_PRODUCT).write_text("built by the image's install\n")
    (Path(context) / "Dockerfile").write_text(f"FROM {base_image}\nCOPY testbed /testbed\nWORKDIR /testbed\n")
    image = instance_image(task.instance_id)
    subprocess.run([docker, "build", "-q", "-t", image, str(context)], check=True, capture_output=True)
    return image


def as_swebench_task(task: Task, image: str) -> Task:
    """The task as SWE-bench publishes one: its image, and swebench's eval script and log parser for it."""
    from repairrl.data.swebench_specs import make_eval_script

    script = make_eval_script(task.repo, task.base_commit, task.test_patch, {"test_cmd": f"{TEST_CMD} tests"})
    return dataclasses.replace(
        task, image=image, eval_script=script, log_parser="parse_log_pytest", version=task.version or "0.1"
    )


def publish_tasks(tasks: list[Task], base_image: str, work_dir: Path | None = None) -> list[Task]:
    """Build every task's image (Python tasks only) and return the tasks in swebench's shape."""
    published = []
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        for task in tasks:
            if task.language != "python":
                continue
            context = Path(scratch) / task.instance_id
            context.mkdir()
            published.append(as_swebench_task(task, build_instance_image(task, base_image, context)))
    return published


def main(argv: list[str] | None = None) -> None:
    from repairrl.data.mini_benchmark import load_tasks
    from repairrl.records import write_jsonl

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mini", required=True, type=Path, help="a built mini benchmark (tasks.jsonl, repos/)")
    parser.add_argument("--base-image", required=True, help="tests/docker/local_docker.sh image prints one")
    parser.add_argument("--instances", nargs="*", help="instance ids (default: every Python task)")
    parser.add_argument("--out", required=True, type=Path, help="the tasks in swebench's shape (.jsonl)")
    args = parser.parse_args(argv)
    tasks = [t for t in load_tasks(args.mini) if not args.instances or t.instance_id in args.instances]
    published = publish_tasks(tasks, args.base_image)
    write_jsonl(args.out, [task.to_record() for task in published])
    print(f"built {len(published)} instance images; tasks in {args.out}")


if __name__ == "__main__":
    main()
