"""GRPO step time with multi-turn agent rollouts against TRL's plain single-turn GRPO, same model and batch.

    .venv/bin/python bench/grpo_step.py [--steps 4] [--hidden 256] [--layers 4] [--tokenizer DIR]

Both runs use a random Llama with SmolLM2's tokenizer, 2 tasks x 2 generations a step, LoRA and gradient
checkpointing on CPU, and generate the same number of tokens per completion with the model's own `generate`:

- plain:      TRL's GRPOTrainer, one turn of N tokens (min_new_tokens = max_new_tokens = N) from the task prompt.
- multi-turn: repairrl.grpo's agent rollout, three turns that together are N generated tokens (the turns are
              scripted tool calls, each a real batched `model.generate` of the in-process backend forced to the
              script's tokens), the tools run in a sandbox on a working copy from the repository cache, and the
              tool results enter the completion.

The goal is multi-turn <= 1.2x plain. The first step of each run (warm-up) is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

TOKENIZER_DIR = REPO_ROOT / "results" / "embedded" / "models" / "base" / "hf"
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@b"}


def hermes(name: str, **arguments: str) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


SCRIPT = [hermes("shell", cmd="cat calc.py"), hermes("apply_patch", path="calc.py", search="a - b", replace="a + b"),
          "Fixed: add now returns a + b."]


def make_tasks(root: Path):
    from repairrl.repos import fetch_base_commit
    from repairrl.tasks import Task

    origin = root / "origin"
    origin.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "uploadpack.allowAnySHA1InWant", "true"]):
        subprocess.run(["git", *args], cwd=origin, check=True, env=GIT_ENV)
    (origin / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    subprocess.run(["git", "add", "-A"], cwd=origin, check=True, env=GIT_ENV)
    subprocess.run(["git", "commit", "-q", "-m", "calc"], cwd=origin, check=True, env=GIT_ENV)
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=origin, check=True, env=GIT_ENV, capture_output=True,
                          text=True).stdout.strip()
    tasks = [Task(instance_id=f"calc-{i}", dataset="bench", repo="bench/calc", repo_url=f"file://{origin}",
                  base_commit=base, problem_statement=f"add(2, 3) returns -1 instead of 5 ({i}).", gold_patch="",
                  test_patch="", fail_to_pass=[], pass_to_pass=[]) for i in range(2)]
    fetch_base_commit(root / "cache", tasks[0])
    return tasks, root / "cache"


def make_model(tokenizer_dir: Path, hidden: int, layers: int):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config), tokenizer


def timed_backend_class():
    """The in-process backend generating the script: each turn a real batched `model.generate` (KV cache reuse
    across turns included) whose every step is forced to the script's next token."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from repairrl.models.backends import InProcessBackend

    class ForcedTokens(LogitsProcessor):
        def __init__(self, turns: list[list[int]], width: int):
            self.turns, self.width = turns, width

        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - self.width
            forced = torch.full_like(scores, float("-inf"))
            for row, turn in enumerate(self.turns):
                forced[row, turn[min(step, len(turn) - 1)]] = 0.0
            return forced

    class TimedScriptBackend(InProcessBackend):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._header = self._encode("<|im_start|>assistant")
            self._turns = [self._encode(text) + [min(self.eos_ids)] for text in SCRIPT]

        def _turn(self, prompt_ids: list[int]) -> list[int]:
            n = len(self._header)
            k = sum(prompt_ids[i: i + n] == self._header for i in range(len(prompt_ids) - n + 1)) - 1
            return self._turns[min(k, len(self._turns) - 1)]

        def _decoding_options(self, batch) -> dict:
            width = max(len(r.prompt_ids) for r in batch)
            forced = ForcedTokens([self._turn(r.prompt_ids) for r in batch], width)
            return {**super()._decoding_options(batch), "logits_processor": LogitsProcessorList([forced])}

    return TimedScriptBackend


def cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for (git, the sandboxes' shells)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class StepTimer:
    """Wall time per step, and CPU time per step: on a shared machine the wall time moves with the other load,
    the CPU time much less."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer.started, timer.cpu_started = time.perf_counter(), cpu_seconds()

            def on_step_end(self, args, state, control, **kwargs):
                timer.seconds.append(time.perf_counter() - timer.started)
                timer.cpu.append(cpu_seconds() - timer.cpu_started)

        self.seconds: list[float] = []
        self.cpu: list[float] = []
        self.callback = Callback()

    def mean(self) -> tuple[float, float]:
        """Mean wall and CPU seconds per step, the warm-up step left out."""
        wall, cpu = self.seconds[1:] or self.seconds, self.cpu[1:] or self.cpu
        return sum(wall) / len(wall), sum(cpu) / len(cpu)


def common_config(out: Path, steps: int, completion_length: int) -> dict:
    return {"output_dir": str(out), "num_generations": 2, "per_device_train_batch_size": 4, "max_steps": steps,
            "max_completion_length": completion_length, "learning_rate": 1e-4, "temperature": 1.0,
            "save_strategy": "no", "report_to": "none", "seed": 0, "logging_steps": 1, "use_cpu": True,
            "bf16": False, "loss_type": "grpo", "importance_sampling_level": "sequence", "disable_dropout": True}


def run_plain(tasks, tokenizer_dir, hidden, layers, steps, generated, out: Path) -> tuple[float, float]:
    from datasets import Dataset
    from peft import LoraConfig
    from repairrl.agent.loop import SYSTEM_PROMPT
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = make_model(tokenizer_dir, hidden, layers)
    prompts = [[{"role": "system", "content": SYSTEM_PROMPT.format(repo_path="/repo")},
                {"role": "user", "content": t.problem_statement}] for t in tasks]
    config = GRPOConfig(**common_config(out, steps, generated),
                        generation_kwargs={"min_new_tokens": generated})
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [float(len(c[0]["content"]) % 7)
                                                                               for c in completions],
                          args=config, train_dataset=Dataset.from_dict({"prompt": prompts}),
                          processing_class=tokenizer, peft_config=LoraConfig(task_type="CAUSAL_LM", r=16,
                                                                             target_modules="all-linear"),
                          callbacks=[timer.callback])
    trainer.train()
    return timer.mean()


def run_multi_turn(tasks, cache, tokenizer_dir, hidden, layers, steps, completion_length, out: Path,
                   gap_every: int) -> tuple[tuple[float, float], str]:
    from peft import LoraConfig
    from repairrl.grpo.rollout import RolloutConfig, inprocess_policy_backend
    from repairrl.grpo.train import RepairGRPOConfig, build_trainer
    from repairrl.models.backends import SamplingParams

    model, tokenizer = make_model(tokenizer_dir, hidden, layers)
    backend_class = timed_backend_class()

    def factory(trainer):
        sampling = SamplingParams(temperature=1.0, max_new_tokens=128)
        return inprocess_policy_backend(trainer, sampling, backend_class=partial(backend_class))

    values = common_config(out, steps, completion_length)
    values.pop("per_device_train_batch_size")
    for key in ("use_cpu", "bf16", "loss_type", "importance_sampling_level"):
        values.pop(key)
    config = RepairGRPOConfig(**values, algorithm="gspo", tasks_per_step=2, logprob_gap_every=gap_every)
    config.epsilon, config.epsilon_high = 0.2, 0.2  # the plain run's clip range; it does not change the cost
    sandbox = "bwrap" if subprocess.run(["which", "bwrap"], check=False, capture_output=True).returncode == 0 else "unsafe-local"
    rollout_config = RolloutConfig(cache_dir=cache, rewards={"similarity": 1.0, "nonempty_patch": 0.1},
                                   max_completion_length=completion_length, max_new_tokens_per_turn=128,
                                   sandbox=sandbox, unsafe=True)
    timer = StepTimer()
    trainer = build_trainer(model, tokenizer, tasks, config, rollout_config,
                            LoraConfig(task_type="CAUSAL_LM", r=16, target_modules="all-linear"),
                            backend_factory=factory)
    trainer.add_callback(timer.callback)
    trainer.train()
    return timer.mean(), sandbox


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER_DIR,
                        help="the converted embedded model's hf/ directory (prepare_model's output)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's intra-op threads (default: one per core). On a machine shared with other "
                             "work, 1: OpenMP's threads then never wait for a descheduled sibling, which can make "
                             "the main thread's generate (the plain run's) several times slower than the "
                             "backend's generate thread and the ratio meaningless")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not (args.tokenizer / "tokenizer.json").is_file():
        print(f"needs the converted embedded model at {args.tokenizer} (run prepare_model)", file=sys.stderr)
        return 1
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    generated = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in SCRIPT)
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        root = Path(tmp)
        tasks, cache = make_tasks(root)
        plain = run_plain(tasks, args.tokenizer, args.hidden, args.layers, args.steps, generated, root / "plain")
        multi, sandbox = run_multi_turn(tasks, cache, args.tokenizer, args.hidden, args.layers, args.steps, 512, root / "multi", 1)
        no_gap, _ = run_multi_turn(tasks, cache, args.tokenizer, args.hidden, args.layers, args.steps, 512, root / "nogap", 0)
    import torch

    print(f"model: random Llama hidden {args.hidden}, {args.layers} layers, SmolLM2 tokenizer; LoRA r16; CPU, "
          f"{torch.get_num_threads()} torch threads")
    print(f"batch: 2 tasks x 2 generations; {generated} generated tokens per completion; "
          f"{args.steps - 1} steps timed after 1 warm-up")
    print(f"{'':42} {'wall s/step':>12} {'ratio':>6} {'CPU s/step':>11} {'ratio':>6}")
    for label, (wall, cpu) in ((f"plain single-turn GRPO (TRL)", plain),
                               (f"multi-turn agent GRPO ({sandbox}, gap check)", multi),
                               ("multi-turn agent GRPO (no gap check)", no_gap)):
        print(f"{label:42} {wall:12.3f} {wall / plain[0]:5.2f}x {cpu:11.3f} {cpu / plain[1]:5.2f}x")
    print("goal: multi-turn <= 1.2x plain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
