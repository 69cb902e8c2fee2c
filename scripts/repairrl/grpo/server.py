"""Run the GRPO trainer beside its own vLLM generation server, each on its own GPUs of one allocation.

    python -m repairrl.grpo.server --model <manifest dir> --server-gpus 0 --trainer-gpus 1,2 --log vllm.log \\
        -- accelerate launch --config_file config/accelerate/zero2.yaml -m repairrl.grpo.train ...

The server is TRL's: the `vllm serve` command line TRL builds for its trainers (NCCL weight transfer, processed
logprobs for the importance-sampling correction), in vLLM's dev mode where the weight-transfer endpoints live.
It listens on 127.0.0.1 only (those endpoints take weights from anyone who can reach them) on a port free at
start-up, and the trainer gets free ports too for the NCCL weight-update group and accelerate's rendezvous: two
GRPO jobs on one node never meet. The trainer starts once the server is up and serves the model, gets
`--vllm-server-url`, and the server is always stopped when the trainer ends.

`--server-gpus` and `--trainer-gpus` index the devices the job was given (SLURM's CUDA_VISIBLE_DEVICES), not the
node's: with devices 4,5,6, the defaults put the server on 4 and the trainer on 5 and 6.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from repairrl.evaluate.serve import free_port, managed_server
from repairrl.models.loading import resolve_model_path

HOST = "127.0.0.1"


class DevicePlacementError(RuntimeError):
    """The server and trainer device indices do not fit the devices the job was given."""


def job_devices(indices: str, visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES value for `indices` ("1,2") into the job's own device list `visible`."""
    wanted = [int(index) for index in indices.split(",") if index.strip()]
    if visible is None or not visible.strip():
        return ",".join(str(index) for index in wanted)
    devices = [device.strip() for device in visible.split(",") if device.strip()]
    outside = [index for index in wanted if not 0 <= index < len(devices)]
    if outside:
        raise DevicePlacementError(
            f"device indices {outside} are outside the job's CUDA_VISIBLE_DEVICES={visible} (the job has "
            f"{len(devices)}); ask SLURM for more GPUs or change grpo.server.gpus / trainer_gpus")
    return ",".join(devices[index] for index in wanted)


def server_command(model: str, port: int, extra: list[str]) -> list[str]:
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    return build_command(ScriptArguments(model=model, host=HOST, port=port), extra)


def trainer_command(trainer: list[str], base_url: str) -> list[str]:
    """The trainer's command with the server's URL and its own free ports."""
    command = list(trainer)
    if command[:2] == ["accelerate", "launch"] and not any(a.startswith("--main_process_port") for a in command):
        command[2:2] = ["--main_process_port", str(free_port())]
    return [*command, "--generation", "vllm", "--vllm-server-url", base_url, "--vllm_group_port", str(free_port())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="manifest dir of the policy's starting model, or a hub id")
    parser.add_argument("--server-gpus", default="0", help="indices, among the job's devices, of the vLLM server's")
    parser.add_argument("--trainer-gpus", default="1,2", help="indices, among the job's devices, of the trainer's")
    parser.add_argument("--port", type=int, help="the server's port (default: one free at start-up)")
    parser.add_argument("--log", type=Path, required=True, help="the server's log")
    parser.add_argument("--startup-timeout", type=float, default=1800.0)
    parser.add_argument("--vllm-arg", action="append", default=[], help="extra `vllm serve` argument (repeatable)")
    parser.add_argument("trainer", nargs=argparse.REMAINDER, help="-- the trainer's command line")
    args = parser.parse_args(argv)
    trainer = args.trainer[1:] if args.trainer[:1] == ["--"] else args.trainer
    if not trainer:
        parser.error("give the trainer's command after --")

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    server_devices = job_devices(args.server_gpus, visible)
    trainer_devices = job_devices(args.trainer_gpus, visible)
    model = resolve_model_path(args.model) if Path(args.model, "model.json").is_file() else args.model
    port = args.port or free_port(HOST)
    base_url = f"http://{HOST}:{port}"
    server_env = {**os.environ, "CUDA_VISIBLE_DEVICES": server_devices, "VLLM_SERVER_DEV_MODE": "1"}
    command = server_command(model, port, args.vllm_arg)
    print(f"vLLM server: CUDA_VISIBLE_DEVICES={server_devices} {' '.join(command)}", flush=True)
    with managed_server(command, base_url, args.log, args.startup_timeout, env=server_env, expected_model=model):
        trainer_env = {**os.environ, "CUDA_VISIBLE_DEVICES": trainer_devices}
        full_trainer = trainer_command(trainer, base_url)
        print(f"trainer: CUDA_VISIBLE_DEVICES={trainer_devices} {' '.join(full_trainer)}", flush=True)
        return subprocess.run(full_trainer, env=trainer_env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
