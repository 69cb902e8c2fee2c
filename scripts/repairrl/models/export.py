"""A trained model as the later stages load it: LoRA merged into the base, the tokenizer with the model's own chat
template, and a manifest (model.json) that `repairrl.models.loading.resolve_model_path` resolves.

Both training stages (SFT and GRPO) export through here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from repairrl.records import atomic_write

MERGED = "merged"


def export_merged_model(
    trainer, tokenizer, original_template, out_dir: Path, base_manifest: str | Path
) -> Path:
    """Merge LoRA into the base (or take the fully tuned model), save it with its tokenizer, write model.json."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True  # off for gradient checkpointing during training; inference wants it
    merged = out_dir / MERGED
    staging = out_dir / f".{MERGED}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    # The inference template goes out with the model: the training one renders the same text, but the agent and
    # vLLM should see the model's own.
    tokenizer.chat_template = original_template
    tokenizer.save_pretrained(staging)
    shutil.rmtree(merged, ignore_errors=True)
    staging.rename(merged)
    base = (
        json.loads((Path(base_manifest) / "model.json").read_text()) if Path(base_manifest).is_dir() else {}
    )
    manifest = {
        "name": out_dir.name,
        "spec": merged.name,
        "kind": "local",
        "path": merged.name,  # relative to the manifest: a moved results tree loads its own weights
        "base_model": base.get("name", str(base_manifest)),
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    with atomic_write(out_dir / "model.json") as handle:
        json.dump(manifest, handle, indent=2)
    return merged
