"""`lmadapt export RUN --format safetensors|gguf|ollama`: a finished run's model, standalone.

    export(run, "merged/")                                   # safetensors folder + tokenizer (the default)
    export(run, "model.gguf", fmt="gguf", quant="q8_0")      # one GGUF file: weights, tokenizer, chat template
    export(run, "ollama/", fmt="ollama")                     # model.gguf + a Modelfile for `ollama create`

GGUF files are written by llama.cpp's own converter (`converter.py`: pinned, hash-checked, run in a
subprocess), never by code of ours.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LmadaptError
from .folder import export_run
from .gguf_file import QUANTS, export_gguf
from .ollama import export_ollama

__all__ = ["FORMATS", "QUANTS", "export", "export_gguf", "export_ollama", "export_run"]

FORMATS = ("safetensors", "gguf", "ollama")


def export(
    run_dir: str | Path,
    output: str | Path,
    fmt: str = "safetensors",
    quant: str | None = None,
    trust_remote_code: bool = False,
    llama_quantize: str | Path | None = None,
) -> Path:
    """Write a run's model as `fmt` to `output`; `quant` (gguf, ollama only) defaults to f16."""
    if fmt not in FORMATS:
        raise LmadaptError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "safetensors":
        if quant is not None or llama_quantize is not None:
            raise LmadaptError("--quant and --llama-quantize are for --format gguf or ollama")
        return export_run(run_dir, output, trust_remote_code)
    writer = export_gguf if fmt == "gguf" else export_ollama
    return writer(run_dir, output, quant or "f16", trust_remote_code, llama_quantize)
