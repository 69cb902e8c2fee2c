"""Per-command cost of the bwrap sandbox: a trivial command (`true`) through the persistent sandbox shell, as a
bare subprocess, and through a fresh bwrap per command. The goal is at most 2 ms added over the bare subprocess.
Also the check of the working copy's size after each command, which grows with the entries of the working copy
(an empty one in the main figure; a checkout of --files files in the last lines).

    python bench/sandbox_overhead.py [--runs 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from repairrl.sandbox.base import SandboxLimits, workdir_usage
from repairrl.sandbox.bwrap import BwrapSandbox


def median_ms(run, runs: int) -> float:
    for _ in range(min(20, runs)):  # warm-up: page cache, first-fork costs
        run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--files", type=int, default=5000, help="files of the checkout-sized working copy")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir, BwrapSandbox(workdir, SandboxLimits()) as sandbox:

        def persistent() -> None:
            assert sandbox.run("true").exit_code == 0

        # The same confinement, started for every command (the sandbox's own argv with `true` as the program).
        fresh_argv = [*sandbox.bwrap_args(sandbox._identity_dir), "/bin/true"]

        def fresh() -> None:
            subprocess.run(fresh_argv, check=True)

        def bare() -> None:
            subprocess.run(["true"], check=True)

        start_ms = median_ms(lambda: BwrapSandbox(workdir).__enter__().close(), min(args.runs, 30))
        results = {
            "bare subprocess.run(['true'])": median_ms(bare, args.runs),
            "persistent bwrap sandbox.run('true')": median_ms(persistent, args.runs),
            "fresh bwrap per command": median_ms(fresh, args.runs),
        }
    bare_ms = results["bare subprocess.run(['true'])"]
    print(f"median per command over {args.runs} runs (ms)")
    for name, value in results.items():
        print(f"  {name:40s} {value:7.2f}   (+{value - bare_ms:5.2f} vs bare)")
    print(f"  {'sandbox start + close (once per episode)':40s} {start_ms:7.2f}")
    added = results["persistent bwrap sandbox.run('true')"] - bare_ms
    print(
        f"added per command by the persistent sandbox: {added:+.2f} ms (goal <= 2 ms): "
        f"{'met' if added <= 2 else 'NOT met'}"
    )
    with tempfile.TemporaryDirectory() as workdir:
        # A checkout-like tree: 20 files a directory, a few KB each (django's checkout has about 6,500 files).
        for index in range(args.files):
            directory = Path(workdir, f"pkg{index // 400}", f"mod{index // 20}")
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"file{index}.py").write_bytes(os.urandom(64) * 40)
        entries = workdir_usage(workdir)[1]
        check_ms = median_ms(lambda: workdir_usage(workdir), min(args.runs, 50))
        with BwrapSandbox(workdir, SandboxLimits()) as sandbox:
            in_checkout_ms = median_ms(lambda: sandbox.run("true"), min(args.runs, 50))
    print(
        f"working-copy check for {entries} entries: {check_ms:.2f} ms ({check_ms * 1000 / entries:.1f} us an entry); "
        f"sandbox.run('true') there: {in_checkout_ms:.2f} ms"
    )


if __name__ == "__main__":
    main()
