"""How long does turning a file-level repair answer into a diff take, as files grow?

For each file size, an answer with a few search/replace blocks spread over the file (exact matches, one needing the
whitespace-tolerant match) is parsed, applied and diffed (`diff_from_answer`, what every file_repair episode runs),
and a gold diff is turned back into blocks (`diff_to_edit_blocks`, the expert demos). Prints milliseconds per call.
Usage: python bench/search_replace.py [--sizes 200,2000,20000] [--repeats 5]
Goal: well under the model's own time per answer (~seconds): <= 50 ms for a 20,000-line file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from repairrl.singleturn.diffs import diff_from_answer, diff_to_edit_blocks


def source(lines: int) -> str:
    # Repetitive on purpose: blank lines and identical bodies are what makes line diffs slow.
    return "".join(f"def f{n}(x):\n    if x is None:\n        return None\n    return x\n\n" for n in range(lines // 5))


def answer(lines: int) -> str:
    functions = lines // 5
    blocks = []
    for n in (1, functions // 2, functions - 2):
        blocks.append(f"### f.py\n<<<<<<< SEARCH\ndef f{n}(x):\n=======\ndef f{n}(x, y=None):\n>>>>>>> REPLACE\n")
    # Indented one level more than the file: only the whitespace-tolerant match finds it.
    blocks.append(f"### f.py\n<<<<<<< SEARCH\n        def f{functions // 3}(x):\n            if x is None:\n"
                  f"=======\n        def f{functions // 3}(x):\n            if not x:\n>>>>>>> REPLACE\n")
    return "\n".join(blocks)


def timed(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="200,2000,20000", help="file sizes in lines")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for lines in (int(size) for size in args.sizes.split(",")):
        files = {"f.py": source(lines)}
        text = answer(lines)
        diff = diff_from_answer(files, text)
        row = {
            "lines": lines,
            "answer_to_diff_ms": round(timed(lambda files=files, text=text: diff_from_answer(files, text), args.repeats), 2),
            "diff_to_blocks_ms": round(timed(lambda files=files, diff=diff: diff_to_edit_blocks(files, diff), args.repeats), 2),
            "hunks": diff.count("\n@@ "),
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
