"""CLI of the fetch rule: load one configured dataset into the task table.

    python -m repairrl.data.fetch --dataset NAME --spec '{"format": ..., "source": ...}' [--path FILE] \
        --out tasks.jsonl --skipped skipped.jsonl

A dataset that cannot be read, or a bad row under `on_bad_row: error`, ends the job with one line that names the
file, line or row and the field, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from repairrl.data.loaders import load_tasks
from repairrl.data.spec import DatasetError, DatasetSpec
from repairrl.records import write_jsonl
from repairrl.tasks import DATA_FORMATS, write_tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="dataset name (a key of `datasets` in the config)")
    parser.add_argument("--spec", required=True, help="the dataset's config entry as JSON")
    parser.add_argument("--path", help="local file that overrides the entry's source (e.g. the built mini benchmark)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--skipped", required=True, type=Path)
    args = parser.parse_args(argv)

    try:
        return fetch(args)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def fetch(args: argparse.Namespace) -> int:
    entry = json.loads(args.spec)
    if args.path:
        entry = {**entry, "source": {**entry.get("source", {}), "path": args.path}}
    spec = DatasetSpec.from_config(args.dataset, entry)
    if spec.format in DATA_FORMATS["detection"]:
        from repairrl.data.detection import load_detection_samples
        from repairrl.tasks import write_samples

        samples, skipped = load_detection_samples(spec)
        write_jsonl(args.skipped, skipped)
        count = write_samples(args.out, samples)
    else:
        result = load_tasks(spec)
        write_jsonl(args.skipped, result.skipped)
        count, skipped = write_tasks(args.out, result.tasks), result.skipped
    print(f"dataset '{spec.name}': {count} tasks, {len(skipped)} rows skipped -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
