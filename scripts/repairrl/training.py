"""What the training stages (SFT, GRPO) share: their checkpoints, the record of each step (`metrics.csv` beside
the model, one row per logged step) and the stage's wandb run (offline by default: `wandb sync
<dir>/wandb/offline-run-*` uploads a finished study).

The CSV is the record on disk (the report plots the training curves from it); wandb is a view of the same logs,
through TRL's own `report_to` integration.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from repairrl import fingerprint
from repairrl.models.export import export_merged_model
from repairrl.records import atomic_write

METRICS = "metrics.csv"
TRAIN_SUMMARY = "train_summary.json"
TRACKING_MODES = ("offline", "online", "disabled")


class TrackingSetupError(RuntimeError):
    """wandb tracking was asked for and cannot run; the message says what to install or change."""


@dataclass(kw_only=True)  # keyword-only: a stage's arguments dataclass inherits these after its required fields
class TrackingArguments:
    """Where a training stage's wandb run goes; `--report-to` given explicitly overrides all of it."""

    tracking: str = field(default="offline", metadata={"help": "wandb: offline (a run directory under "
                          "--tracking-dir/wandb), online or disabled; metrics.csv is written either way",
                          "choices": TRACKING_MODES})
    tracking_dir: str | None = field(default=None, metadata={"help": "folder that gets wandb/ (default: --out)"})
    tracking_group: str | None = field(default=None, metadata={"help": "wandb group: one per study, so its "
                                       "stages' runs are seen together"})
    tracking_project: str = field(default="repairrl", metadata={"help": "wandb project"})


TRACKING_FIELDS = ("tracking", "tracking_dir", "tracking_group", "tracking_project")


def explicit_report_to(argv: Sequence[str]) -> bool:
    return any(a.split("=")[0] in ("--report-to", "--report_to") for a in argv)


def start_tracking(tracking: TrackingArguments, config, out_dir: Path, stage: str, argv: Sequence[str]) -> None:
    """Point the trainer's `report_to` at wandb as `tracking` says (unless `--report-to` was given), and tell
    wandb, through the environment its `init` reads when TRL's callback starts the run, where and in which group
    to write it."""
    if not explicit_report_to(argv):
        if tracking.tracking not in TRACKING_MODES:
            raise TrackingSetupError(f"--tracking {tracking.tracking!r}: choose one of {', '.join(TRACKING_MODES)}")
        config.report_to = [] if tracking.tracking == "disabled" else ["wandb"]
    if "wandb" not in (config.report_to or []):
        return
    if importlib.util.find_spec("wandb") is None:
        raise TrackingSetupError("wandb is not installed: `pip install wandb`, or `--tracking disabled`")
    directory = Path(tracking.tracking_dir or out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_MODE"] = "online" if tracking.tracking == "online" else "offline"
    os.environ["WANDB_DIR"] = str(directory)
    os.environ["WANDB_PROJECT"] = tracking.tracking_project
    if tracking.tracking_group:
        os.environ["WANDB_RUN_GROUP"] = tracking.tracking_group
    if "wandb" in sys.modules:
        # wandb reads the environment once per process, at its first setup: a process that used it before
        # (another stage, a test) would keep that mode and folder, and an earlier online mode asks for a login.
        sys.modules["wandb"].teardown()
    if not config.run_name or config.run_name == config.output_dir:
        config.run_name = stage


class MetricsCSVCallback(TrainerCallback):
    """One CSV row per logged step: the trainer's metrics (TRL's, and GRPO's agent metrics), and the step's
    wall time (GRPO: split into rollout and training)."""

    def __init__(self, path: Path, checkpoint: str | Path | None = None):
        """`checkpoint`: the one the run resumes from (`<dir>/checkpoint-<step>`), if any."""
        self.path = Path(path)
        self.rows: list[dict] = []
        resume_step = checkpoint_step(checkpoint) if checkpoint else 0
        if resume_step and self.path.is_file():
            with open(self.path, newline="") as handle:  # drop steps after the checkpoint: they are redone
                self.rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
        elif checkpoint:
            # Snakemake deletes a failed job's outputs, this CSV among them: the checkpoint's own log has the
            # steps before it (without their wall times).
            self.rows = steps_logged_in(Path(checkpoint))
        self._step_started = None
        self._step_seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self._step_started is not None:
            self._step_seconds.append(time.monotonic() - self._step_started)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:  # one writer; GRPO's agent metrics are already reduced over ranks
            return
        if not logs or "loss" not in logs:  # the final summary line has train_loss etc., not a step
            return
        step_s = sum(self._step_seconds) / max(len(self._step_seconds), 1)
        self._step_seconds = []
        row = {"step": state.global_step, "step_s": round(step_s, 4)}
        for key, value in logs.items():
            name = key.removeprefix("agent/").replace("/", "_")
            row[name] = value
        if "rollout_s" in row:
            row["training_s"] = round(max(step_s - float(row["rollout_s"]), 0.0), 4)
        self.rows.append(row)
        self._write()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and not self.path.exists():  # a resumed run with no step left to do
            self._write()

    def _write(self) -> None:
        columns = list(dict.fromkeys(k for r in [{"step": 0}, *self.rows] for k in r))
        with atomic_write(self.path) as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)


def steps_logged_in(checkpoint: Path) -> list[dict]:
    """The rows of the steps a checkpoint's trainer state logged (the same values `on_log` received)."""
    import json

    state_file = checkpoint / "trainer_state.json"
    if not state_file.is_file():
        return []
    history = json.loads(state_file.read_text()).get("log_history", [])
    return [{"step": entry["step"], **{k.removeprefix("agent/").replace("/", "_"): v for k, v in entry.items()
                                        if k != "step"}}
            for entry in history if "loss" in entry and "step" in entry]


def finish_tracking(config) -> None:
    """Close the stage's wandb run: TRL's callback leaves it open for later logging, and a run is only complete on
    disk (for `wandb sync`) once finished."""
    if "wandb" in (config.report_to or []):
        import wandb

        if wandb.run is not None:
            wandb.finish()


def resume_point(
    out_dir: Path, checkpoint_dir: str | Path, stage_fingerprint: Mapping, *, stage: str, resume: bool
) -> str | None:
    """The checkpoint a stage continues from: the last under `checkpoint_dir` when `resume`, if the state there
    was trained from the same inputs (repairrl.fingerprint.claim_state_once clears it otherwise), else None.

    Starting from step 0 also drops OUT/metrics.csv, whose rows belong to the state that is gone.
    """
    fingerprint.claim_state_once(checkpoint_dir, stage_fingerprint, what=stage, resume=resume)
    checkpoint = last_checkpoint(checkpoint_dir) if resume else None
    if resume and checkpoint is None:
        print(f"--resume: no checkpoint under {checkpoint_dir} yet, starting from step 0", file=sys.stderr)
    if checkpoint is None:
        (out_dir / METRICS).unlink(missing_ok=True)
    return checkpoint


def finish_training(
    trainer, tokenizer, chat_template: str | None, out_dir: Path, base_model: str | Path, summary: dict, config
) -> None:
    """A stage's outputs once it has trained: the merged model (repairrl.models.export) and train_summary.json,
    written by the main process; then the stage's wandb run closed."""
    if trainer.accelerator.is_main_process:
        export_merged_model(trainer, tokenizer, chat_template, out_dir, base_model)
        with atomic_write(out_dir / TRAIN_SUMMARY) as handle:
            json.dump(summary, handle, indent=2)
    finish_tracking(config)


def last_checkpoint(checkpoint_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(checkpoint_dir)) if Path(checkpoint_dir).is_dir() else None


def checkpoint_step(checkpoint: str | Path) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[1])
