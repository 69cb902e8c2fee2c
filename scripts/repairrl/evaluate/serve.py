"""A vLLM OpenAI-compatible server for the length of an evaluation shard.

    with vllm_server(VLLMServerConfig(model="Qwen/Qwen3-14B", lora_modules={"grpo": "results/.../adapter"}),
                     log_path=Path("logs/.../vllm.log")) as base_url:
        ...  # the agent talks to f"{base_url}/v1"

The server is started with hermes tool-call parsing (the format the agent writes and parses) on 127.0.0.1 and, unless
a port is given, a port free at start-up: several jobs on one node (evaluation shards, rollout shards, GRPO) each
get their own server. Start-up is bounded; each poll first checks that our own process is still alive (else a
server another job left on the port would be taken for ours), then `/health`, then that `/v1/models` serves the
expected model. On failure the error carries the tail of the server's log. The server is stopped with SIGINT
(vLLM's clean shutdown) and, if it lingers, SIGKILL of its whole process group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HEALTH_PATH = "/health"
MODELS_PATH = "/v1/models"


class ServerStartError(RuntimeError):
    """The model server exited or did not become healthy in time; the message holds its log tail."""


@dataclass(frozen=True)
class VLLMServerConfig:
    model: str
    port: int | None = None  # None: a port free at start-up
    host: str = "127.0.0.1"  # the node's jobs only: the server takes requests (and, for GRPO, weights) unauthenticated
    served_model_name: str | None = None
    lora_modules: dict[str, str] = field(default_factory=dict)  # name -> adapter path
    max_lora_rank: int | None = None
    tool_call_parser: str = "hermes"
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    tensor_parallel_size: int | None = None
    extra_args: tuple[str, ...] = ()
    startup_timeout_s: float = 900.0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def expected_model(self) -> str:
        return self.served_model_name or self.model


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now. Another process may still take it before the server binds it; the
    server then exits (address in use) and the start-up check reports it, never another job's server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def vllm_serve_command(config: VLLMServerConfig, executable: str = "vllm") -> list[str]:
    command = [executable, "serve", config.model, "--host", config.host, "--port", str(config.port)]
    if config.served_model_name:
        command += ["--served-model-name", config.served_model_name]
    if config.lora_modules:
        command += ["--enable-lora", "--lora-modules"]
        command += [f"{name}={path}" for name, path in sorted(config.lora_modules.items())]
        if config.max_lora_rank:
            command += ["--max-lora-rank", str(config.max_lora_rank)]
    command += ["--enable-auto-tool-choice", "--tool-call-parser", config.tool_call_parser]
    if config.gpu_memory_utilization is not None:
        command += ["--gpu-memory-utilization", str(config.gpu_memory_utilization)]
    if config.max_model_len is not None:
        command += ["--max-model-len", str(config.max_model_len)]
    if config.tensor_parallel_size is not None:
        command += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    return command + list(config.extra_args)


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not Path(path).exists():
        return "(no log)"
    text = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(empty log)"


def is_healthy(base_url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}{HEALTH_PATH}", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def served_models(base_url: str, timeout_s: float = 5.0) -> list[str]:
    """The model ids `/v1/models` lists ([] when it does not answer)."""
    try:
        with urllib.request.urlopen(f"{base_url}{MODELS_PATH}", timeout=timeout_s) as response:
            return [entry["id"] for entry in json.load(response).get("data", [])]
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError, KeyError, TypeError):
        return []


def wait_until_healthy(
    base_url: str,
    process: subprocess.Popen | None,
    timeout_s: float,
    log_path: Path | None = None,
    poll_s: float = 1.0,
    expected_model: str | None = None,
) -> float:
    """Poll until our server is up; seconds waited. Raises ServerStartError on exit, a stranger's server, timeout.

    Our process must be alive before `/health` counts: a healthy answer from a process that has exited is another
    server on the port. Once healthy, `/v1/models` must list `expected_model` (when given).
    """
    started = time.monotonic()
    while True:
        if process is not None and process.poll() is not None:
            raise ServerStartError(
                f"the model server exited with code {process.returncode} before it was healthy (a port another "
                f"job took is one cause); log tail ({log_path}):\n{log_tail(log_path)}"
            )
        if is_healthy(base_url):
            if expected_model is None:
                return time.monotonic() - started
            models = served_models(base_url)
            if expected_model in models:
                return time.monotonic() - started
            if process is not None and process.poll() is not None:
                continue  # reported above, with the log
            raise ServerStartError(
                f"the server at {base_url} serves {models or 'no model list'}, not {expected_model!r}: another "
                "job's server holds the port. Let the port be chosen (no --port) so each job gets its own."
            )
        if time.monotonic() - started > timeout_s:
            raise ServerStartError(
                f"the model server at {base_url} was not healthy after {timeout_s:.0f} s; raise "
                f"startup_timeout_s if the model is large. Log tail ({log_path}):\n{log_tail(log_path)}"
            )
        time.sleep(poll_s)


def stop_process(process: subprocess.Popen, grace_s: float = 30.0) -> int:
    """SIGINT (vLLM shuts down cleanly and frees the GPU), then SIGKILL of the group after `grace_s`."""
    if process.poll() is not None:
        return process.returncode
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


@contextlib.contextmanager
def managed_server(
    command: list[str], base_url: str, log_path: Path, startup_timeout_s: float, stop_grace_s: float = 30.0,
    env: dict[str, str] | None = None, expected_model: str | None = None,
) -> Iterator[str]:
    """Start `command` in its own process group, wait until it is up (see wait_until_healthy), yield the base
    URL, always stop it."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # Own session: SIGINT/SIGKILL reach the server's workers too, and never our own process.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        wait_until_healthy(base_url, process, startup_timeout_s, log_path, expected_model=expected_model)
        yield base_url
    finally:
        stop_process(process, grace_s=stop_grace_s)


@contextlib.contextmanager
def vllm_server(config: VLLMServerConfig, log_path: Path, executable: str = "vllm") -> Iterator[str]:
    """`vllm serve` for the length of the block, on `config.port` or a free port; yields its base URL."""
    if config.port is None:
        config = dataclasses.replace(config, port=free_port(config.host))
    with managed_server(
        vllm_serve_command(config, executable), config.base_url, log_path, config.startup_timeout_s,
        expected_model=config.expected_model,
    ) as base_url:
        yield base_url
