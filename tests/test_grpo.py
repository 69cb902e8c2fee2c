"""GRPO with the agent in the loop, on a tiny random Llama with SmolLM2's tokenizer and a real repository cache."""

from __future__ import annotations

import csv
import json
import subprocess
from functools import partial
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from repairrl.grpo.rollout import RolloutConfig, inprocess_policy_backend, trace_to_completion
from repairrl.grpo.train import RepairGRPOConfig, build_trainer, main
from repairrl.models.backends import InProcessBackend, SamplingParams
from repairrl.records import read_jsonl
from repairrl.repos import fetch_base_commit
from repairrl.tasks import Task, write_tasks

from .conftest import git

BUGGY = "def add(a, b):\n    return a - b\n"
GOLD = """diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
"""


def hermes(name: str, **arguments: str) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


SCRIPT = [hermes("shell", cmd="cat calc.py"),
          hermes("apply_patch", path="calc.py", search="a - b", replace="a + b"),
          "Fixed."]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A random 2-layer Llama (hidden 64) with SmolLM2's tokenizer, saved with a model.json manifest."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir / "hf")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    model = LlamaForCausalLM(config)
    root = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    (root / "model.json").write_text(json.dumps({"name": "tiny", "kind": "local", "path": str(root / "hf")}))
    return root


@pytest.fixture(scope="module")
def calc_tasks(tmp_path_factory) -> tuple[list[Task], Path]:
    """Four tasks on one small repository, fetched into a repository cache as the cache rule does."""
    root = tmp_path_factory.mktemp("calc")
    origin = root / "origin"
    origin.mkdir()
    git("init", "-q", "-b", "main", cwd=origin)
    (origin / "calc.py").write_text(BUGGY)
    git("add", "-A", cwd=origin)
    git("commit", "-q", "-m", "calc", cwd=origin)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=origin)
    base = git("rev-parse", "HEAD", cwd=origin)
    tasks = [Task(instance_id=f"calc-{i}", dataset="test", repo="owner/calc", repo_url=f"file://{origin}",
                  base_commit=base, problem_statement=f"add(2, 3) returns -1 instead of 5 (report {i}).",
                  gold_patch=GOLD, test_patch="", fail_to_pass=[], pass_to_pass=[]) for i in range(4)]
    cache = root / "cache"
    fetch_base_commit(cache, tasks[0])
    return tasks, cache


class ScriptedPolicyBackend(InProcessBackend):
    """The real in-process backend (rendering, batching, token trace) with scripted turns instead of sampling.

    The logprobs are the policy's own for the scripted tokens, so the trainer's logprobs must match them.
    """

    def __init__(self, *args, script: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.script = script
        self.recorded: list[tuple[list[int], list[int], list[float]]] = []
        self._header = self._encode("<|im_start|>assistant")

    def _turn(self, prompt_ids: list[int]) -> int:
        n = len(self._header)
        return sum(prompt_ids[i: i + n] == self._header for i in range(len(prompt_ids) - n + 1)) - 1

    def _generate(self, batch) -> None:
        for request in batch:
            text = self.script[min(self._turn(request.prompt_ids), len(self.script) - 1)]
            ids = (self._encode(text) + [min(self.eos_ids)])[: request.max_new_tokens]
            full = torch.tensor([request.prompt_ids + ids])
            logits = self.model(full).logits[0, len(request.prompt_ids) - 1: -1].float()
            logprobs = torch.log_softmax(logits / self.sampling.temperature, -1).gather(
                -1, torch.tensor(ids)[:, None]).squeeze(-1).tolist()
            request.ids, request.logprobs = ids, logprobs
            request.finish_reason = "stop" if ids[-1] in self.eos_ids else "length"
            self.recorded.append((list(request.prompt_ids), ids, logprobs))


def scripted_factory(backends: list):
    def factory(trainer):
        sampling = SamplingParams(temperature=trainer.args.temperature, max_new_tokens=64)
        cls = partial(ScriptedPolicyBackend, script=SCRIPT)

        def record(*args, **kwargs):
            backend = cls(*args, **kwargs)
            backends.append(backend)
            return backend

        return inprocess_policy_backend(trainer, sampling, backend_class=record)

    return factory


def tiny_config(out: Path, **overrides) -> RepairGRPOConfig:
    values = {"output_dir": str(out / "checkpoints"), "algorithm": "gspo", "num_generations": 2,
              "tasks_per_step": 2, "max_steps": 1, "max_completion_length": 256, "learning_rate": 1e-3,
              "temperature": 1.0, "save_strategy": "no", "report_to": "none", "seed": 0, "logging_steps": 1}
    values.update(overrides)
    return RepairGRPOConfig(**values)


@pytest.fixture(scope="module")
def one_step(tiny_model_dir, calc_tasks, tmp_path_factory):
    """One GRPO step on a cached task and an uncached one (whose episodes cannot start), with the rollout captured."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tasks, cache = calc_tasks
    broken = Task(**{**tasks[1].to_record(), "instance_id": "missing-1", "base_commit": "0" * 40})
    out = tmp_path_factory.mktemp("grpo")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir / "hf")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir / "hf")
    rollout_config = RolloutConfig(cache_dir=cache, rewards={"similarity": 1.0, "nonempty_patch": 0.1},
                                   max_completion_length=256, max_new_tokens_per_turn=64, sandbox="unsafe-local",
                                   unsafe=True, episodes_path=out / "episodes.jsonl")
    backends: list = []
    trainer = build_trainer(model, tokenizer, [tasks[0], broken], tiny_config(out), rollout_config,
                            backend_factory=scripted_factory(backends), metrics_path=out / "metrics.csv")
    outputs = []
    inner = trainer.rollout_func

    def capture(prompts, trainer_):
        result = inner(prompts, trainer_)
        outputs.append((list(prompts), result))
        return result

    trainer.rollout_func = capture
    trainer.train()
    return {"trainer": trainer, "outputs": outputs, "backends": backends, "out": out, "tokenizer": tokenizer}


def test_completion_ids_are_exactly_the_generated_ids(one_step):
    (prompts, output), = one_step["outputs"]
    recorded = [r for backend in one_step["backends"] for r in backend.recorded]
    good = [i for i, p in enumerate(prompts) if p == "calc-0"]
    assert len(good) == 2 and len(recorded) == 2 * len(SCRIPT)
    for i in good:
        sequence = output["prompt_ids"][i] + output["completion_ids"][i]
        mask = [0] * len(output["prompt_ids"][i]) + output["env_mask"][i]
        logprobs = [0.0] * len(output["prompt_ids"][i]) + output["logprobs"][i]
        # Both episodes of the task are scripted alike, so each turn matches two records: keep one per turn.
        mine = list({len(r[0]): r for r in recorded if sequence[: len(r[0]) + len(r[1])] == r[0] + r[1]}.values())
        assert len(mine) == len(SCRIPT)  # every turn the backend generated is in this completion, token for token
        generated_positions = set()
        for prompt_ids, ids, lps in mine:
            span = range(len(prompt_ids), len(prompt_ids) + len(ids))
            assert [mask[j] for j in span] == [1] * len(ids)
            assert [logprobs[j] for j in span] == pytest.approx(lps)
            generated_positions.update(span)
        assert {j for j, m in enumerate(mask) if m} == generated_positions  # and nothing else is trained on
        # The prompt is the first rendered conversation: everything before the first generated token.
        assert output["prompt_ids"][i] == mine[0][0]


def test_tool_output_is_in_the_completion_but_masked(one_step):
    (prompts, output), = one_step["outputs"]
    tokenizer = one_step["tokenizer"]
    i = prompts.index("calc-0")
    masked = [t for t, m in zip(output["completion_ids"][i], output["env_mask"][i], strict=True) if not m]
    assert "return a - b" in tokenizer.decode(masked)  # the `cat calc.py` result
    assert output["completion_ids"][i][-1] == tokenizer.eos_token_id


def test_failing_episode_gets_reward_zero_is_recorded_and_training_goes_on(one_step):
    trainer, out = one_step["trainer"], one_step["out"]
    assert trainer.state.global_step == 1
    episodes = read_jsonl(out / "episodes.jsonl")
    failed = [e for e in episodes if e["instance_id"] == "missing-1"]
    ok = [e for e in episodes if e["instance_id"] == "calc-0"]
    assert len(failed) == 2 and all(e["status"] == "failed" and e["reward"] == 0.0 for e in failed)
    assert all("not in the cache" in e["error"] for e in failed)
    assert all(e["status"] == "ok" and e["reward_components"]["similarity"] == 1.0 for e in ok)
    (prompts, output), = one_step["outputs"]
    for i, prompt in enumerate(prompts):
        if prompt == "missing-1":
            assert sum(output["env_mask"][i]) == 0
    with open(out / "metrics.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["failure_rate"]) == 0.5 and float(row["logprob_gap_mean"]) < 1e-3
    assert float(row["rewards_similarity_mean"]) == 0.5 and float(row["calls_apply_patch_per_episode"]) == 0.5


def test_tool_output_tokens_get_no_gradient(one_step):
    trainer = one_step["trainer"]
    inputs = trainer._generate_and_score_completions([{"prompt": "calc-0"}, {"prompt": "calc-0"}])
    inputs["advantages"] = torch.tensor([1.0, -0.5])  # identical episodes have no advantage of their own
    captured = {}
    original = trainer._get_per_token_logps_and_entropies

    def keep_logps(*args, **kwargs):
        logps, entropies, aux = original(*args, **kwargs)
        logps.retain_grad()
        captured["logps"] = logps
        return logps, entropies, aux

    trainer._get_per_token_logps_and_entropies = keep_logps
    trainer.model.train()
    trainer.compute_loss(trainer.model, inputs).backward()
    grad = captured["logps"].grad
    mask = inputs["completion_mask"] * inputs["tool_mask"]
    assert (grad[mask == 0] == 0).all()
    assert (grad[mask == 1] != 0).all()
    assert ((inputs["completion_mask"] == 1) & (inputs["tool_mask"] == 0)).any()  # there were tool tokens


def test_logprob_gap_is_read_from_the_loss_forward_pass_not_an_extra_one(one_step):
    trainer = one_step["trainer"]
    scored = []
    original = trainer._get_per_token_logps_and_entropies

    def counted(*args, **kwargs):
        scored.append(args[1].shape)
        return original(*args, **kwargs)

    trainer._get_per_token_logps_and_entropies = counted
    trainer._metrics["train"].clear()
    try:
        trainer.model.train()
        inputs = trainer._generate_and_score_completions([{"prompt": "calc-0"}, {"prompt": "calc-0"}])
        assert scored == []  # generation and scoring ran no forward pass of the trainer's model
        trainer.compute_loss(trainer.model, inputs)
    finally:
        del trainer._get_per_token_logps_and_entropies
    assert len(scored) == 1
    (gap,) = trainer._metrics["train"]["agent/logprob_gap_mean"]
    assert 0 <= gap < 1e-3  # the sampling logprobs are the policy's own


def test_a_steps_episodes_start_their_first_turns_together(tiny_model_dir, calc_tasks):
    """A batching backend gets the step's first turns at once, even when one working copy is slow to make."""
    import itertools
    import threading
    import time
    from types import SimpleNamespace

    from repairrl.grpo.rollout import AgentRollout, as_context
    from repairrl.models.backends import ScriptedBackend
    from repairrl.repos import materialize_worktree
    from transformers import AutoTokenizer

    tasks, cache = calc_tasks
    first_turns: dict[int, float] = {}

    class RecordingBackend(ScriptedBackend):
        def start_session(self, tools=None, seed=None):
            session = super().start_session(tools, seed)
            generate = session.generate

            def first_turn_timed(messages, max_new_tokens=None):
                first_turns.setdefault(id(session), time.monotonic())
                return generate(messages, max_new_tokens)

            session.generate = first_turn_timed
            return session

    calls, lock = itertools.count(), threading.Lock()

    def first_copy_is_slow(task, dest):
        with lock:
            number = next(calls)
        if number == 0:
            time.sleep(0.5)
        return materialize_worktree(cache, task, dest)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir / "hf")
    trainer = SimpleNamespace(processing_class=tokenizer, eos_token_ids=[tokenizer.eos_token_id],
                              state=SimpleNamespace(global_step=0), args=SimpleNamespace(temperature=1.0, top_p=1.0))
    rollout = AgentRollout([tasks[0]], RolloutConfig(cache_dir=cache, sandbox="unsafe-local", unsafe=True),
                           backend_factory=lambda _: as_context(RecordingBackend(["Done."])),
                           prepare_worktree=first_copy_is_slow)
    rollout(["calc-0"] * 4, trainer)
    assert len(first_turns) == 4
    assert max(first_turns.values()) - min(first_turns.values()) < 0.25


def test_trace_is_cut_at_max_completion_length_and_closed_masked():
    ids, mask, logps = [5, 6, 7, 8, 9, 10, 11], [0, 0, 1, 1, 0, 0, 1], [0, 0, -1, -2, 0, 0, -3]
    cut = trace_to_completion(ids, mask, logps, [2], max_completion_length=4)
    assert cut.prompt_ids == [5, 6] and cut.completion_ids == [7, 8, 9, 2]
    assert cut.env_mask == [1, 1, 0, 0] and cut.logprobs == [-1, -2, 0, 0] and cut.truncated
    whole = trace_to_completion([5, 7, 2], [0, 1, 1], [0, -1, -2], [2], max_completion_length=8)
    assert whole.completion_ids == [7, 2] and whole.env_mask == [1, 1] and not whole.truncated
    dropped = trace_to_completion(ids, mask, logps, [2], max_completion_length=4, mask_truncated=True)
    assert not dropped.trainable


def _cli(model_dir: Path, tasks_path: Path, cache: Path, out: Path, steps: int, *extra: str) -> None:
    main(["--model", str(model_dir), "--tasks", str(tasks_path), "--cache-dir", str(cache), "--out", str(out),
          "--algorithm", "dr_grpo", "--num-generations", "2", "--tasks-per-step", "1", "--max-steps", str(steps),
          "--save-steps", "1", "--max-completion-length", "48", "--episode-max-new-tokens", "16",
          "--episode-max-tool-calls", "1", "--rewards", "similarity=1.0", "--sandbox", "unsafe-local", "--unsafe",
          "--report-to", "none", "--seed", "3", "--learning-rate", "1e-3", *extra])


def _order(out: Path) -> list[tuple[int, str]]:
    return sorted({(e["step"], e["instance_id"]) for e in read_jsonl(out / "episodes.jsonl")})


@pytest.mark.slow
def test_killed_run_resumes_at_its_last_checkpoint(tiny_model_dir, calc_tasks, tmp_path):
    """Real in-process generation through the CLI; the resumed run continues the step count and the data order."""
    tasks, cache = calc_tasks
    tasks_path = tmp_path / "tasks.jsonl"
    write_tasks(tasks_path, tasks)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _cli(tiny_model_dir, tasks_path, cache, straight, 3)
    _cli(tiny_model_dir, tasks_path, cache, killed, 2)
    subprocess.run(["rm", "-rf", str(killed / "merged"), str(killed / "model.json")], check=True)
    _cli(tiny_model_dir, tasks_path, cache, killed, 3, "--resume")
    summary = json.loads((killed / "train_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["resumed_from"].endswith("checkpoint-2")
    assert _order(killed) == _order(straight)
    assert [s for s, _ in _order(killed)] == [0, 1, 2]
    with open(killed / "metrics.csv") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2, 3]
    from repairrl.models.loading import resolve_model_path

    assert Path(resolve_model_path(killed)).joinpath("config.json").is_file()
    assert (killed / "final" / "adapter_config.json").is_file()


def test_resume_after_the_task_table_changed_trains_from_step_0(tiny_model_dir, calc_tasks, tmp_path, capfd):
    """The rule always passes --resume: checkpoints of another task table are removed, with their episodes."""
    tasks, cache = calc_tasks
    tasks_path = tmp_path / "tasks.jsonl"
    write_tasks(tasks_path, tasks)
    out = tmp_path / "grpo"
    _cli(tiny_model_dir, tasks_path, cache, out, 1, "--resume")
    write_tasks(tasks_path, tasks[1:])
    capfd.readouterr()
    _cli(tiny_model_dir, tasks_path, cache, out, 1, "--resume")
    assert "grpo: not resuming" in capfd.readouterr().err
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"] is None and summary["global_step"] == 1 and summary["tasks"] == len(tasks) - 1
    assert [s for s, _ in _order(out)] == [0]  # the first run's episodes went with its checkpoints


def test_each_step_counts_grading_errors_timeouts_and_test_infrastructure_edits(one_step, calc_tasks):
    from repairrl.grpo.rollout import grading_flags, summarize_episodes

    task = calc_tasks[0][0]
    ok = {"status": "ok", "diff": GOLD}
    tampering = {"status": "ok", "diff": GOLD + GOLD.replace("calc.py", "conftest.py")}
    flags = [grading_flags(ok, {"status": "resolved"}, "repo_repair", task),
             grading_flags(tampering, {"status": "unresolved", "timed_out_tests": ["t::x"]}, "repo_repair", task),
             grading_flags(ok, {"status": "error"}, "repo_repair", task),
             grading_flags(ok, None, "repo_repair", task)]
    assert [tuple(f.values()) for f in flags] == [(False, False, False), (False, True, True), (True, False, False),
                                                  (False, False, False)]
    rows = [{**f, "failed": False, "resolved": False, "truncated": False, "turns": 1, "completion_tokens": 1,
             "generated_tokens": 1, "tool_calls": 0, "tool_failures": 0, "invalid_calls": 0, "model_s": 1.0,
             "tool_s": 0.0} for f in flags]
    step = summarize_episodes(rows, 1.0, 1.0)
    assert (step["grading_errors"], step["test_timeouts"], step["test_infra_edits"]) == (1, 1, 1)
    with open(one_step["out"] / "metrics.csv") as handle:
        logged = next(csv.DictReader(handle))
    assert float(logged["grading_errors"]) == 0 and float(logged["test_infra_edits"]) == 0
