"""`lmadapt export RUN_DIR --output DIR`: a run's trained model as one standalone safetensors folder.

LoRA (and IA3) adapters are merged into the base weights; full fine-tuning runs are saved as they are.
The folder also holds the tokenizer (with its chat template), so `from_pretrained(DIR)` needs nothing else.
The GGUF and Ollama exports start from this same folder (`write_merged`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import LmadaptError

__all__ = ["Merged", "check_run", "export_run", "write_merged"]


@dataclass(frozen=True)
class Merged:
    """What a merged model folder needs beside its files: how lmadapt prompts and stops it."""

    folder: Path
    tokenizer: object  # the run's tokenizer (transformers), as saved in `folder`
    template: str  # "model", "alpaca" or "plain": the template lmadapt's engine uses for this run
    eos_ids: list[int]  # token ids that end an answer in lmadapt's engine
    context_length: int  # most tokens lmadapt's engine attends to


def check_run(run_dir: Path) -> None:
    """A clear error unless `run_dir` is a complete run that saved trained weights."""
    from ..runs import RunDir

    RunDir.open_complete(run_dir, "export")
    if not ((run_dir / "adapter").is_dir() or (run_dir / "model").is_dir()):
        raise LmadaptError(f"{run_dir}: the run saved no trained weights (adapter/ or model/) to export")


def write_merged(run_dir: Path, folder: Path, trust_remote_code: bool = False) -> Merged:
    """Load the run (base model + what it trained), merge its adapter, save model + tokenizer into `folder`."""
    from ..alignment.policy import eos_ids
    from ..infer.engine import load_run
    from ..methods import merge_and_export
    from ..templates import resolve_template

    model, tokenizer, template = load_run(run_dir, trust_remote_code)
    template = resolve_template(tokenizer, template)
    stops = eos_ids(tokenizer, model, template)
    found = (getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length)
    limits = [x for x in found if isinstance(x, int) and 0 < x < 10**7]  # tokenizers use 1e30 for "none"
    merge_and_export(model, folder)
    tokenizer.save_pretrained(str(folder))
    return Merged(folder, tokenizer, template, stops, min(limits) if limits else 2048)


def export_run(run_dir: str | Path, output: str | Path, trust_remote_code: bool = False) -> Path:
    """Merge the run's adapter into its base model and write `output` (model + tokenizer, safetensors)."""
    run_dir, output = Path(run_dir), Path(output)
    check_run(run_dir)
    if output.exists() and any(output.iterdir()):
        raise LmadaptError(f"{output}: exists and is not empty; choose a new folder")
    merged = write_merged(run_dir, output, trust_remote_code)
    if merged.template in ("alpaca", "plain"):  # a model tuned on a named template should be prompted with it
        (output / "lmadapt_template.txt").write_text(merged.template + "\n", encoding="utf-8")
    return output
