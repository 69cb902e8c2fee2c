#!/usr/bin/env bash
# What to run first on a new cluster, on one GPU node (an interactive job, e.g. `srun --gpus=2 --pty bash`),
# in the environment the jobs will use: the embedded model served by vLLM with our tool parser, two evaluation
# episodes through it, two GRPO steps with weight sync, a ZeRO-2 launch with two processes. Nothing comes from a hub.
# Prints a pass/fail table; exit code 0 only when nothing failed. See `python -m repairrl.doctor --help`.
#   scripts/gpu_check.sh [--work-dir results/gpu_check] [--only environment,serve_and_evaluate]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH="${PWD}/scripts${PYTHONPATH:+:$PYTHONPATH}"
exec python -m repairrl.doctor "$@"
