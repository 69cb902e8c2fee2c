"""The GPU path, run on CPU: whole episodes, evaluation shards and rollouts through real OpenAI-compatible HTTP
servers on 127.0.0.1 (tests/openai_stub.py), the GRPO batch arithmetic of the 14B study's command line, the
SLURM profile's allocations, device and port placement, and model preparation."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from repairrl.agent.loop import AgentConfig, run_episode
from repairrl.agent.run import journal_path, run_tasks
from repairrl.evaluate import serve
from repairrl.models.backends import EndpointUnavailableError, OpenAIBackend, SamplingParams
from repairrl.records import read_journal, read_jsonl, validate_record
from repairrl.tasks import Task

from .conftest import REPO_ROOT, git
from .openai_stub import StubServer
from .test_agent import SubprocessSandbox, clone_worktree, hermes
from .test_grpo import calc_tasks, tiny_model_dir  # noqa: F401 - fixtures, used by name

FIX = hermes("apply_patch", path="calc.py", search="a - b", replace="a + b")


# --- 1. whole episodes through an OpenAI-compatible endpoint -------------------------------------------------


def test_episode_through_an_openai_endpoint_finishes_with_its_diff_and_token_trace(buggy_repo):
    repo, task = buggy_repo
    with StubServer("served-model", [{"content": FIX}, {"content": "Fixed."}]) as server:
        backend = OpenAIBackend(server.url + "/v1", sampling=SamplingParams(max_new_tokens=256), max_retries=0)
        assert backend.model_name == "served-model"  # from /v1/models
        record = run_episode(task, backend, SubprocessSandbox(repo), repo, AgentConfig(max_tool_calls=4))
    validate_record(record, "trajectory")
    assert record["status"] == "ok" and record["error"] is None, record["error"]
    assert record["stop_reason"] == "no_tool_call" and record["tokens"]["turns"] == 2
    assert "+    return a + b" in record["diff"]
    # The stub returned vLLM's token ids; the second prompt extends the first prompt + completion.
    assert record["token_source"] == "endpoint"
    assert sum(record["loss_mask"]) == len("Fixed.") + len(FIX)
    path, request = server.model.requests[0]
    assert path == "/v1/chat/completions" and request["tools"] and request["return_token_ids"] is True


def test_run_tasks_through_an_endpoint_records_every_pair(buggy_repo, tmp_path):
    _, task = buggy_repo
    out = tmp_path / "out" / "trajectories.jsonl"
    with StubServer("served-model", [{"content": FIX}, {"content": "Fixed."}, {"content": "Done."}]) as server:
        backend = OpenAIBackend(server.url + "/v1", max_retries=0)
        summary = run_tasks([task], backend, out, clone_worktree, lambda workdir, t: SubprocessSandbox(workdir),
                            samples=2, workers=1, progress=False, work_root=tmp_path)
    assert summary["failed"] == 0 and summary["episodes"] == 2
    assert all(r["status"] == "ok" and r["stop_reason"] == "no_tool_call" for r in read_jsonl(out))


def test_a_dead_server_is_not_journaled_and_the_rerun_runs_those_episodes(buggy_repo, tmp_path):
    _, task = buggy_repo
    out = tmp_path / "trajectories.jsonl"
    server = StubServer("served-model", [{"content": "Done."}])
    port = int(server.url.rsplit(":", 1)[1])
    server.stop()  # the model server died before the episodes ran: connection refused
    backend = OpenAIBackend(server.url + "/v1", model_name="served-model", max_retries=0)
    with pytest.raises(EndpointUnavailableError, match="2 of 2 episodes could not reach the model server"):
        run_tasks([task], backend, out, clone_worktree, lambda workdir, t: SubprocessSandbox(workdir), samples=2,
                  workers=2, progress=False, work_root=tmp_path)
    assert read_journal(journal_path(out)) == []  # nothing counted as finished (unresolved)
    with StubServer("served-model", [{"content": "Done."}], port=port):  # the job's retry, with a server
        summary = run_tasks([task], backend, out, clone_worktree, lambda workdir, t: SubprocessSandbox(workdir),
                            samples=2, workers=2, progress=False, work_root=tmp_path)
    assert summary == {"episodes": 2, "ran": 2, "skipped": 0, "failed": 0, "out": str(out)}


# --- 3. one server per shard, on its own port, checked to be ours --------------------------------------------


def stub_vllm(tmp_path: Path) -> str:
    """An executable standing in for `vllm`: `vllm serve MODEL --host H --port P ...` starts the stub."""
    path = tmp_path / "vllm"
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {REPO_ROOT / 'tests' / 'openai_stub.py'} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def test_two_shards_on_one_node_each_talk_to_their_own_server(tmp_path):
    vllm = stub_vllm(tmp_path)
    config_a = serve.VLLMServerConfig(model="model-a", startup_timeout_s=30)
    config_b = serve.VLLMServerConfig(model="model-b", startup_timeout_s=30)
    with serve.vllm_server(config_a, tmp_path / "a.vllm.log", vllm) as url_a, \
            serve.vllm_server(config_b, tmp_path / "b.vllm.log", vllm) as url_b:
        assert url_a != url_b and url_a.startswith("http://127.0.0.1:")
        assert serve.served_models(url_a) == ["model-a"] and serve.served_models(url_b) == ["model-b"]
        assert OpenAIBackend(url_a + "/v1", max_retries=0).model_name == "model-a"
    assert "serving model-a" in (tmp_path / "a.vllm.log").read_text()
    assert "model-b" not in (tmp_path / "a.vllm.log").read_text()


def test_another_jobs_server_on_the_port_is_never_taken_for_ours(tmp_path):
    with StubServer("someone-elses-model") as other:
        port = int(other.url.rsplit(":", 1)[1])
        config = serve.VLLMServerConfig(model="model-a", port=port, startup_timeout_s=30)
        with pytest.raises(serve.ServerStartError, match="exited|another job's server"), \
                serve.vllm_server(config, tmp_path / "vllm.log", stub_vllm(tmp_path)):
            pass


def test_a_healthy_answer_from_a_server_whose_process_exited_is_not_ours(tmp_path):
    with StubServer("model-a") as other:  # even serving the same model
        process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
        process.wait()
        with pytest.raises(serve.ServerStartError, match="exited with code 0"):
            serve.wait_until_healthy(other.url, process, timeout_s=5, expected_model="model-a", poll_s=0.1)


@pytest.fixture
def cached_task(buggy_repo, tmp_path) -> tuple[Task, Path]:
    from repairrl.repos import cache_tasks

    _, task = buggy_repo
    task = Task(**{**task.to_record(), "repo_url": f"file://{task.repo_url}"})
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=Path(task.repo_url.removeprefix("file://")))
    cache = tmp_path / "cache"
    from repairrl.tasks import write_tasks

    assert cache_tasks([task], cache)[0]["status"] == "ok"
    write_tasks(tmp_path / "tasks.jsonl", [task])
    return task, cache


def test_two_evaluation_shards_at_once_each_run_episodes_on_their_own_server(cached_task, tmp_path):
    """`python -m repairrl.evaluate shard --serve-model ...` twice at once on one machine, as two SLURM jobs on
    one node: each starts its own server (free port, own log) and its episodes finish through it."""
    from repairrl.evaluate.__main__ import main as evaluate

    _, cache = cached_task
    vllm = stub_vllm(tmp_path)
    results: dict[str, BaseException | int] = {}

    def shard(model: str) -> None:
        logs = tmp_path / "logs" / model
        argv = ["shard", "--tasks", str(tmp_path / "tasks.jsonl"), "--model-name", model,
                "--trajectories", str(tmp_path / model / "journal.jsonl"), "--out", str(tmp_path / model / "p.jsonl"),
                "--serve-model", model, "--vllm-executable", vllm, "--startup-timeout", "60",
                "--agent-log", str(logs / "0.agent.log"), "--",
                "--cache-dir", str(cache), "--sandbox", "unsafe-local", "--unsafe", "--no-progress",
                "--max-tool-calls", "3"]
        logs.mkdir(parents=True)
        try:
            results[model] = evaluate(argv)
        except BaseException as error:  # noqa: BLE001 - reported below
            results[model] = error

    threads = [threading.Thread(target=shard, args=(name,)) for name in ("model-a", "model-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {"model-a": 0, "model-b": 0}
    for model in ("model-a", "model-b"):
        (record,) = read_journal(tmp_path / model / "journal.jsonl")
        assert record["status"] == "ok" and record["stop_reason"] == "no_tool_call", record["error"]
        assert record["model"] == model  # the shard's own server answered
        assert (tmp_path / "logs" / model / "0.vllm.log").read_text().startswith(f"stub serving {model} on 127.0.0.1")


# --- 7. placement: one node per multi-GPU job, devices from the job's own list --------------------------------


def test_slurm_profile_keeps_multi_gpu_jobs_on_one_node():
    import yaml

    profile = yaml.safe_load((REPO_ROOT / "profiles/slurm/config.yaml").read_text())
    for rule, resources in profile["set-resources"].items():
        if resources.get("gpu", 0) > 1:
            assert resources.get("nodes") == 1, rule


def test_server_and_trainer_devices_index_the_jobs_own_devices():
    from repairrl.grpo.server import DevicePlacementError, job_devices

    assert job_devices("0", "5,6,7") == "5"
    assert job_devices("1,2", "5,6,7") == "6,7"
    assert job_devices("1,2", None) == "1,2"  # nothing inherited: the indices are the devices
    assert job_devices("0", "GPU-aaaa,GPU-bbbb") == "GPU-aaaa"
    with pytest.raises(DevicePlacementError, match="has 2"):
        job_devices("1,2", "5,6")


# --- 8. the weight-update server: 127.0.0.1, free ports ---------------------------------------------------------


def test_grpo_server_binds_127_0_0_1_on_free_ports_and_tells_the_trainer(tmp_path, monkeypatch):
    from repairrl.grpo import server

    seen: dict = {}

    class FakeServer:
        def __init__(self, command, base_url, log_path, startup_timeout_s, env=None, expected_model=None, **kw):
            seen.update(command=command, base_url=base_url, env=env, expected_model=expected_model)

        def __enter__(self):
            return seen["base_url"]

        def __exit__(self, *exc):
            return False

    def fake_run(command, env, check):
        seen.update(trainer=command, trainer_env=env)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(server, "managed_server", FakeServer)
    monkeypatch.setattr(server.subprocess, "run", fake_run)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert server.main(["--model", "some/model", "--log", str(tmp_path / "v.log"), "--",
                        "accelerate", "launch", "--num_processes", "2", "-m", "repairrl.grpo.train"]) == 0
    command = seen["command"]
    host, port = command[command.index("--host") + 1], int(command[command.index("--port") + 1])
    assert host == "127.0.0.1" and port != 8000 and seen["base_url"] == f"http://127.0.0.1:{port}"
    assert seen["expected_model"] == "some/model"
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == "4" and seen["trainer_env"]["CUDA_VISIBLE_DEVICES"] == "5,6"
    trainer = seen["trainer"]
    assert trainer[trainer.index("--vllm-server-url") + 1] == seen["base_url"]
    group_port = int(trainer[trainer.index("--vllm_group_port") + 1])
    main_port = int(trainer[trainer.index("--main_process_port") + 1])
    assert len({port, group_port, main_port, 51216, 29500}) == 5
    assert trainer.index("--main_process_port") < trainer.index("-m")  # accelerate's flag, before the module


# --- 2. GRPO batch arithmetic, from the 14B study's own command line -----------------------------------------


def study_grpo_command() -> list[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--configfile", "config/experiments/qwen3-14b-gspo.yaml",
         "-s", "workflow/Snakefile", "results/qwen3-14b-gspo/models/grpo/model.json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:] + completed.stdout[-2000:]
    line = next(line for line in completed.stdout.splitlines() if "repairrl.grpo.train" in line)
    return shlex.split(line.split(">", 1)[0])


def test_study_grpo_trains_in_micro_batches_that_fit(monkeypatch):
    from repairrl.grpo.train import parse_args

    command = study_grpo_command()
    launcher = command[command.index("launch"):command.index("repairrl.grpo.train")]
    world_size = int(launcher[launcher.index("--num_processes") + 1])
    assert world_size == 2
    from transformers import TrainingArguments

    # What `accelerate launch --num_processes 2` gives each process (without starting a process group here).
    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: world_size))
    monkeypatch.setattr("repairrl.grpo.train.launched_processes", lambda: world_size)
    argv = command[command.index("repairrl.grpo.train") + 1:]
    assert "--port" not in command[:command.index("--")]  # a free port per job, chosen at start-up
    _, config = parse_args([*argv, "--generation", "vllm", "--vllm-server-url", "http://127.0.0.1:1"])
    assert config.num_generations == 8 and config.tasks_per_step == 4
    assert config.per_device_train_batch_size == 1  # one 32k-token sequence per forward, not 32
    assert config.generation_batch_size == 32  # 4 tasks x 8 episodes: one group-complete step, on both ranks
    assert config.steps_per_generation == config.gradient_accumulation_steps == 16  # 32 / (1 x 2 processes)


def test_batch_arithmetic_rejects_a_step_that_does_not_split_over_the_processes(monkeypatch):
    from repairrl.grpo.train import GRPOSetupError, RepairGRPOConfig
    from transformers import TrainingArguments

    monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 3))
    monkeypatch.setattr("repairrl.grpo.train.launched_processes", lambda: 3)
    with pytest.raises(GRPOSetupError, match="divisible"):
        RepairGRPOConfig(output_dir="unused", num_generations=2, tasks_per_step=2)


# --- 4. token ids in and out on the vLLM path ------------------------------------------------------------------


def char_by_char(tokenizer, text: str) -> list[int]:
    """`text` as a model may sample it: one token per character, which re-tokenizing the text never gives."""
    return [i for c in text for i in tokenizer(c, add_special_tokens=False)["input_ids"]]


def test_token_endpoint_keeps_the_sampled_ids_when_their_text_retokenizes_differently(embedded_model_dir,
                                                                                          buggy_repo):
    from repairrl.grpo.rollout import trace_to_completion
    from repairrl.models.backends import TokenEndpointBackend
    from transformers import AutoTokenizer

    repo, task = buggy_repo
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir / "hf")
    eos = tokenizer.eos_token_id
    first = char_by_char(tokenizer, FIX) + [eos]
    assert tokenizer(FIX, add_special_tokens=False)["input_ids"] != first[:-1]  # the re-tokenisation mismatch
    second = tokenizer("Fixed.", add_special_tokens=False)["input_ids"] + [eos]
    script = [{"token_ids": first, "text": FIX}, {"token_ids": second, "text": "Fixed."}]
    with StubServer("policy", script) as server:
        backend = TokenEndpointBackend(server.url + "/v1", tokenizer, SamplingParams(max_new_tokens=512),
                                       eos_ids=[eos], max_retries=0)
        record = run_episode(task, backend, SubprocessSandbox(repo), repo, AgentConfig(max_tool_calls=4))
    validate_record(record, "trajectory")
    assert record["status"] == "ok" and record["stop_reason"] == "no_tool_call", record["error"]
    assert "+    return a + b" in record["diff"] and record["token_source"] == "endpoint"
    (_, request_1), (_, request_2) = server.model.requests
    assert request_1["return_token_ids"] is True and isinstance(request_1["prompt"][0], int)
    # The second prompt is the first, the sampled ids as they were, and only the tool turn's new tokens.
    assert request_2["prompt"][: len(request_1["prompt"]) + len(first)] == request_1["prompt"] + first
    ids, mask = record["token_ids"], record["loss_mask"]
    assert [i for i, m in zip(ids, mask, strict=True) if m] == first + second
    assert "<tools>" in tokenizer.decode(request_1["prompt"]) or "apply_patch" in tokenizer.decode(request_1["prompt"])
    completion = trace_to_completion(ids, mask, record["logprobs"], [eos], 4096)
    assert completion.trainable and completion.completion_ids[: len(first)] == first  # not dropped: trained on


def test_grpo_step_generates_through_a_token_endpoint(tiny_model_dir, calc_tasks, tmp_path):  # noqa: F811
    """One GRPO step whose episodes run through a real HTTP server, token ids in and out (as with vLLM)."""
    from repairrl.grpo.rollout import RolloutConfig, as_context
    from repairrl.grpo.train import build_trainer
    from repairrl.models.backends import TokenEndpointBackend
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .test_grpo import tiny_config

    tasks, cache = calc_tasks
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir / "hf")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir / "hf")
    eos = tokenizer.eos_token_id
    script = [{"token_ids": char_by_char(tokenizer, FIX) + [eos]}, {"token_ids": char_by_char(tokenizer, "ok") + [eos]}]
    rollout_config = RolloutConfig(cache_dir=cache, rewards={"similarity": 1.0}, max_completion_length=512,
                                   max_new_tokens_per_turn=256, sandbox="unsafe-local", unsafe=True,
                                   episodes_path=tmp_path / "episodes.jsonl")
    with StubServer("policy", script) as server:
        def factory(trainer):
            return as_context(TokenEndpointBackend(server.url + "/v1", trainer.processing_class,
                                                   SamplingParams(temperature=1.0, max_new_tokens=256),
                                                   eos_ids=list(trainer.eos_token_ids), max_retries=0))

        trainer = build_trainer(model, tokenizer, tasks[:2], tiny_config(tmp_path), rollout_config,
                                backend_factory=factory, metrics_path=tmp_path / "metrics.csv")
        trainer.train()
    episodes = read_jsonl(tmp_path / "episodes.jsonl")
    assert len(episodes) == 4 and all(e["status"] == "ok" and e["trainable"] for e in episodes)
    assert max(e["reward"] for e in episodes) > 0.9  # the episode that got the fix
    assert all(path == "/v1/completions" for path, _ in server.model.requests)


# --- 8. one metrics writer, the step's agent metrics over all ranks, a barrier before rollouts -------------------


def test_step_metrics_combine_every_ranks_episodes():
    from repairrl.grpo.train import combine_step_stats

    rank0 = {"episodes": 16, "resolve_rate": 0.25, "grading_errors": 1, "rollout_s": 100.0, "turns_per_episode": 10}
    rank1 = {"episodes": 16, "resolve_rate": 0.75, "grading_errors": 2, "rollout_s": 140.0, "turns_per_episode": 20}
    combined = combine_step_stats([rank0, rank1])
    assert combined == {"episodes": 32, "resolve_rate": 0.5, "grading_errors": 3, "rollout_s": 140.0,
                        "turns_per_episode": 15.0}


def test_only_rank_zero_writes_metrics_csv(tmp_path):
    from types import SimpleNamespace

    from repairrl.training import MetricsCSVCallback

    callback = MetricsCSVCallback(tmp_path / "metrics.csv")
    callback.on_log(None, SimpleNamespace(is_world_process_zero=False, global_step=1), None, logs={"loss": 0.1})
    assert not (tmp_path / "metrics.csv").exists()
    callback.on_log(None, SimpleNamespace(is_world_process_zero=True, global_step=1), None, logs={"loss": 0.1})
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "step,step_s,loss"


def test_rollouts_wait_for_every_rank_after_the_weight_push():
    from repairrl.grpo.train import AgentGRPOTrainer

    events = []
    trainer = object.__new__(AgentGRPOTrainer)  # only the two attributes the hook reads
    trainer.use_vllm = True
    trainer.accelerator = type("Accelerator", (), {"wait_for_everyone": lambda self: events.append("barrier")})()
    trainer.rollout = lambda prompts, t: events.append("rollout") or {}
    trainer._rollout_after_weight_sync(["calc-1"], trainer)
    assert events == ["barrier", "rollout"]


# --- 6. the pinned revision, downloaded once into the HF cache ---------------------------------------------------


def test_prepare_model_pins_the_revision_in_the_hf_cache_and_later_loads_need_no_hub(tmp_path, monkeypatch):
    from repairrl.models.loading import prepare_model, resolve_model_path

    commit = "a" * 40
    snapshot = tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "v1").write_text(commit)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    manifest = prepare_model("base", "org/tiny", tmp_path / "models" / "base", revision="v1")
    assert manifest["path"] == str(snapshot.resolve()) and manifest["revision"] == commit
    assert resolve_model_path(tmp_path / "models" / "base") == str(snapshot.resolve())


def test_prepare_model_downloads_the_asked_revision_once(tmp_path, monkeypatch):
    import huggingface_hub
    from repairrl.models.loading import ModelSourceError, prepare_model

    calls = []

    def fake_download(repo_id, revision=None, **kwargs):
        calls.append((repo_id, revision))
        if revision == "missing":
            raise OSError("offline")
        path = tmp_path / "snapshots" / ("b" * 40)
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    manifest = prepare_model("base", "Qwen/Qwen3-14B", tmp_path / "m", revision="v2")
    assert calls == [("Qwen/Qwen3-14B", "v2")] and manifest["revision"] == "b" * 40
    with pytest.raises(ModelSourceError, match="login node"):
        prepare_model("base", "Qwen/Qwen3-14B", tmp_path / "m2", revision="missing")


def test_prepare_model_refuses_a_revision_it_cannot_pin(tmp_path):
    from repairrl.models.loading import ModelSourceError, prepare_model

    local = tmp_path / "checkpoint"
    local.mkdir()
    with pytest.raises(ModelSourceError, match="is a local source"):
        prepare_model("base", str(local), tmp_path / "m", revision="v1")
    with pytest.raises(ModelSourceError, match="is a gguf source"):
        prepare_model("base", "gguf:model.gguf", tmp_path / "m", revision="v1")
    assert not (tmp_path / "m" / "model.json").exists()
    assert prepare_model("base", str(local), tmp_path / "m")["path"] == str(local.resolve())


# --- scripts/gpu_check.sh: the parts a CPU can run ---------------------------------------------------------------


def test_gpu_check_serves_and_evaluates_through_a_stub_vllm_and_prints_a_table(embedded_model_dir, tmp_path):
    from repairrl.doctor import FAIL, PASS, SKIP, Doctor, format_table

    doctor = Doctor(tmp_path / "check", vllm_executable=stub_vllm(tmp_path), sandbox="unsafe-local")
    doctor.model = embedded_model_dir  # prepare_model's output (the conftest converts it once)
    results = doctor.check_all(["environment", "serve_and_evaluate", "grpo_vllm"], print_progress=lambda _: None)
    by_name = {r.name: r for r in results}
    assert by_name["serve_and_evaluate"].status == PASS, by_name["serve_and_evaluate"].detail
    assert by_name["environment"].status == FAIL  # no vLLM, no GPU here: said so, not crashed
    assert by_name["grpo_vllm"].status in (SKIP, FAIL)
    table = format_table(results)
    assert table.splitlines()[0].split() == ["check", "result", "seconds", "detail"]
    assert "serve_and_evaluate  pass" in table


def test_gpu_check_script_runs_the_doctor():
    completed = subprocess.run([str(REPO_ROOT / "scripts" / "gpu_check.sh"), "--help"], capture_output=True,
                               text=True, timeout=60, check=False)
    assert completed.returncode == 0 and "serve_and_evaluate" in completed.stdout


# --- 5. one CUDA line ------------------------------------------------------------------------------------------


def test_one_cuda_line_in_readme_and_image():
    """vLLM's kernels link libcudart.so.13: the image and the install recipe use CUDA 13 and PyPI's torch wheel."""
    image = (REPO_ROOT / "envs" / "repairrl.def").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert "From: nvidia/cuda:13." in image
    assert "download.pytorch.org" not in image and "download.pytorch.org" not in readme
    assert "cu128" not in image + readme
