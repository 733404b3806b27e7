"""`lmadapt export RUN --format gguf --output FILE.gguf [--quant f16|bf16|q8_0|q4_k_m]`.

The run is merged into a safetensors folder (`folder.write_merged`) with the chat template lmadapt prompts it
with (`chat.chat_template_for`), then llama.cpp's converter turns that folder into one GGUF file holding the weights, the tokenizer and
the chat template. f16, bf16 and q8_0 come straight from the converter; q4_k_m is the converter's f32 output
put through llama.cpp's `llama-quantize`. Everything is written in a temporary folder beside the output and
renamed into place at the end: a failed export leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import LmadaptError
from ..utils.io import atomic_path
from .chat import chat_template_for
from .converter import convert_hf_to_gguf, find_llama_quantize, llama_converter, quantize
from .folder import Merged, check_run, write_merged

__all__ = ["QUANTS", "check_gguf", "export_gguf", "prepare_gguf", "write_gguf"]

# --quant -> (the converter's --outtype, the llama-quantize type that follows it or None)
QUANTS: dict[str, tuple[str, str | None]] = {
    "f16": ("f16", None),
    "bf16": ("bf16", None),
    "q8_0": ("q8_0", None),
    "q4_k_m": ("f32", "Q4_K_M"),
}


def prepare_gguf(run_dir: Path, quant: str, llama_quantize: str | Path | None) -> tuple[Path, Path | None]:
    """Check everything that needs no model loaded: the quant, its tools, the run. Returns (converter folder,
    llama-quantize or None), fetching the pinned converter on first use."""
    if quant not in QUANTS:
        raise LmadaptError(f"--quant {quant!r}: choose one of {', '.join(QUANTS)}")
    needs_quantize = QUANTS[quant][1] is not None
    if llama_quantize is not None and not needs_quantize:
        raise LmadaptError(f"--llama-quantize is only used with --quant q4_k_m, not {quant}")
    quantizer = find_llama_quantize(llama_quantize) if needs_quantize else None
    check_run(run_dir)
    return llama_converter(), quantizer


def write_gguf(
    merged: Merged, out: Path, quant: str, converter: Path, quantizer: Path | None, work: Path
) -> None:
    """Convert the merged folder to the GGUF file `out`, chat template included (scratch files in `work`)."""
    template = chat_template_for(merged.tokenizer, merged.template)
    if template != merged.tokenizer.chat_template:  # a named template: the GGUF carries its Jinja twin
        merged.tokenizer.chat_template = template
        merged.tokenizer.save_pretrained(str(merged.folder))
    outtype, kind = QUANTS[quant]
    if kind is None:
        convert_hf_to_gguf(converter, merged.folder, out, outtype)
    else:
        convert_hf_to_gguf(converter, merged.folder, work / f"model-{outtype}.gguf", outtype)
        quantize(quantizer, work / f"model-{outtype}.gguf", out, kind)
    check_gguf(out)


def check_gguf(path: Path) -> None:
    """Raise unless `path` reads as a GGUF file with tensors, a vocabulary and a chat template."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise LmadaptError(f"the converter wrote {path.name}, but it does not read as GGUF: {exc}") from exc
    missing = [k for k in ("tokenizer.ggml.tokens", "tokenizer.chat_template") if k not in reader.fields]
    if not reader.tensors or missing:
        raise LmadaptError(f"the converter wrote {path.name} without {', '.join(missing) or 'tensors'}")


def export_gguf(
    run_dir: str | Path,
    output: str | Path,
    quant: str = "f16",
    trust_remote_code: bool = False,
    llama_quantize: str | Path | None = None,
) -> Path:
    """Write the run's model (merged), tokenizer and chat template as one GGUF file `output`."""
    run_dir, output = Path(run_dir), Path(output)
    if output.suffix != ".gguf":
        raise LmadaptError(f"{output}: name the GGUF file with a .gguf suffix")
    if output.exists():
        raise LmadaptError(f"{output}: exists; choose a new file name")
    converter, quantizer = prepare_gguf(run_dir, quant, llama_quantize)
    with atomic_path(output) as tmp:
        merged = write_merged(run_dir, tmp.parent / "hf", trust_remote_code)
        write_gguf(merged, tmp, quant, converter, quantizer, tmp.parent)
    return output
