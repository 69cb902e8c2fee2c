"""Per-episode time of the in-process backend over a multi-turn episode, with and without KV cache reuse.

Each episode is the agent's real first prompt (system prompt with the tools block, a problem statement), then
`--turns` model turns of `--new-tokens` greedy tokens, each answered by the same tool output (a file of about
`--tool-lines` lines), as `--episodes` episodes batched together the way a GRPO step runs them. Model time only:
no sandbox, no tools. Both runs must give the same token ids, which the bench checks.
Usage: python bench/inprocess_turns.py [--model results/embedded/models/base] [--turns 6] [--episodes 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(backend, episodes: int, turns: int, tool_output: str) -> tuple[list[float], list[list[int]]]:
    from repairrl.agent.loop import SYSTEM_PROMPT
    from repairrl.agent.tools import TOOL_SCHEMAS

    seconds, traces = [0.0] * episodes, [[] for _ in range(episodes)]

    def episode(index: int) -> None:
        started = time.perf_counter()
        session = backend.start_session(tools=TOOL_SCHEMAS)
        messages = [{"role": "system", "content": SYSTEM_PROMPT.format(repo_path="/repo")},
                    {"role": "user", "content": f"add(2, 3) returns -1 instead of 5 in calc.py (report {index})."}]
        try:
            for number in range(turns):
                turn = session.generate(messages)
                messages += [{"role": "assistant", "content": turn.content},
                             {"role": "tool", "tool_call_id": f"call_{number}", "content": tool_output}]
        finally:
            session.close()
        seconds[index], traces[index] = time.perf_counter() - started, session.trace.token_ids

    threads = [threading.Thread(target=episode, args=(i,)) for i in range(episodes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seconds, traces


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO_ROOT / "results" / "embedded" / "models" / "base"),
                        help="a prepared model's manifest directory (prepare_model's output)")
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--tool-lines", type=int, default=30)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from repairrl.models.backends import InProcessBackend, SamplingParams

    tool_output = "".join(f"def function_{i}(x):\n    return x + {i}\n" for i in range(args.tool_lines // 2))
    greedy = SamplingParams(temperature=0.0, max_new_tokens=args.new_tokens)
    reference = InProcessBackend.from_manifest(args.model, greedy)
    reference.close()
    model, tokenizer = reference.model, reference.tokenizer
    results = {}
    for reuse in (False, True):
        times, prefilled = [], 0
        for _ in range(args.repeats):
            backend = InProcessBackend(model, tokenizer, greedy, reuse_kv_cache=reuse)
            try:
                seconds, traces = run(backend, args.episodes, args.turns, tool_output)
            finally:
                backend.close()
            times.append(statistics.median(seconds))
            prefilled = backend.prefilled_tokens / args.episodes
        results[reuse] = (statistics.median(times), prefilled, traces)
    (full_s, full_prefill, full_traces), (reuse_s, reuse_prefill, reuse_traces) = results[False], results[True]
    context = statistics.mean(len(t) for t in full_traces)
    print(f"model: {args.model}; {args.episodes} episodes batched, {args.turns} turns of <= {args.new_tokens} "
          f"greedy tokens, tool output {args.tool_lines} lines; {context:.0f} tokens per episode at the end; "
          f"median of {args.repeats}")
    print(f"full prefill every turn   {full_s:8.3f} s/episode   {full_prefill:7.0f} prompt tokens fed per episode")
    print(f"KV cache reused           {reuse_s:8.3f} s/episode   {reuse_prefill:7.0f} prompt tokens fed per episode"
          f"   {full_s / reuse_s:5.2f}x faster")
    print(f"token ids identical: {reuse_traces == full_traces}")
    return 0 if reuse_traces == full_traces else 1


if __name__ == "__main__":
    sys.exit(main())
