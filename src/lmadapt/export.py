"""`lmadapt export RUN_DIR --output DIR`: a run's trained model as one standalone safetensors folder.

LoRA (and IA3) adapters are merged into the base weights; full fine-tuning runs are saved as they are.
The folder also holds the tokenizer (with its chat template), so `from_pretrained(DIR)` needs nothing else.
"""

from __future__ import annotations

from pathlib import Path

from .errors import LmadaptError

__all__ = ["export_run"]


def export_run(run_dir: str | Path, output: str | Path, trust_remote_code: bool = False) -> Path:
    """Merge the run's adapter into its base model and write `output` (model + tokenizer, safetensors)."""
    from .infer.engine import load_run
    from .methods import merge_and_export
    from .runs import RunDir

    run_dir, output = Path(run_dir), Path(output)
    RunDir.open_complete(run_dir, "export")
    if not ((run_dir / "adapter").is_dir() or (run_dir / "model").is_dir()):
        raise LmadaptError(f"{run_dir}: the run saved no trained weights (adapter/ or model/) to export")
    if output.exists() and any(output.iterdir()):
        raise LmadaptError(f"{output}: exists and is not empty; choose a new folder")
    model, tokenizer, template = load_run(run_dir, trust_remote_code)
    merge_and_export(model, output)
    tokenizer.save_pretrained(str(output))
    if template in ("alpaca", "plain"):  # a model tuned on a named template should be prompted with it
        (output / "lmadapt_template.txt").write_text(template + "\n", encoding="utf-8")
    return output
