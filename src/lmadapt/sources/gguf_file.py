"""A local `.gguf` file as `model:` -> an fp32 safetensors folder in the cache, converted once per file content.

llama.cpp and Ollama users hold their models as single .gguf files. `resolve_model("path/to/model.gguf")`
(every recipe's `model:` and every command that takes a model name goes through it) dequantizes the file
once, with the same converter and the same greedy-equality check as the catalog's GGUF models
(`convert_model.gguf_to_safetensors`), into

    $LMADAPT_HOME/models/gguf-<sha256 of the file>/    config.json, model.safetensors, tokenizer, manifest.json

The key is the file's content, not its name or place: the same file copied elsewhere is not converted
again, and a file edited in place is. The folder is built in a hidden temporary folder and renamed into
place at the end (`cache.building`), so a killed conversion leaves nothing that is reused.

A file that is not GGUF, or a GGUF whose architecture transformers' GGUF loader cannot read, is a
SourceError naming the file (and the architecture) before anything is written.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from .. import __version__
from ..errors import SourceError
from ..utils.io import sha256_file, write_json
from . import convert_model
from .cache import building, entry_dir

MAGIC = b"GGUF"  # every GGUF file starts with these four bytes
SUFFIX = ".gguf"
NAMED_BY = "`model:` takes a catalog name, a model folder, a .gguf file or a Hub id"

_console = Console(stderr=True)
# (path, size, mtime, inode) -> sha256: one process resolves the same model several times; hash it once.
_digests: dict[tuple, str] = {}
RACY_NS = 3_000_000_000


def is_gguf_name(name: str) -> bool:
    """Whether a model name is meant as a .gguf file (so a missing one is reported as a missing file)."""
    return name.lower().endswith(SUFFIX)


def file_sha256(path: Path) -> str:
    """The file's sha256, remembered for as long as its size, mtime and inode stay the same.

    A file modified within the last seconds is hashed every time (as git does with "racily clean" files):
    an edit within the file system's timestamp granularity could otherwise keep size and mtime unchanged.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key in _digests:
        return _digests[key]
    digest = sha256_file(path)
    if time.time_ns() - stat.st_mtime_ns > RACY_NS:
        _digests[key] = digest
    return digest


def gguf_architecture(path: Path) -> str:
    """`general.architecture` from the file's header; SourceError when the file is not a GGUF file."""
    with open(path, "rb") as handle:
        head = handle.read(len(MAGIC))
    if head != MAGIC:
        raise SourceError(
            f"{path}: not a GGUF file (it does not start with the bytes {MAGIC.decode()}); {NAMED_BY}"
        )
    from transformers.integrations.gguf import read_gguf_metadata

    try:
        metadata, _ = read_gguf_metadata(str(path))
    except (ValueError, OSError, UnicodeDecodeError, IndexError, struct.error) as exc:  # truncated or damaged
        raise SourceError(f"{path}: the GGUF header cannot be read: {_first_line(exc)}") from exc
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str):
        raise SourceError(f"{path}: the GGUF header names no architecture (general.architecture)")
    return architecture


def loader_architectures() -> list[str]:
    """The GGUF architectures this transformers' GGUF loader reads (both of its readers)."""
    from transformers.integrations.gguf import GGUF_CONFIG_ARCHS
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(
        {*GGUF_CONFIG_ARCHS, *GGUF_SUPPORTED_ARCHITECTURES} - {"general", "tokenizer"}  # (not architectures)
    )


def _spelled(architecture: str) -> str:
    # llama.cpp writes qwen2moe / gpt-oss where transformers' table says qwen2_moe / gpt_oss
    return architecture.replace("_", "").replace("-", "")


@contextlib.contextmanager
def loader_errors(shown: Path, architecture: str) -> Iterator[None]:
    """Turn what transformers' GGUF loader raises for a file it cannot read into a SourceError naming the
    file and its architecture (and, when the architecture is the reason, the ones it does read)."""
    import transformers

    try:
        yield
    except (ValueError, KeyError, NotImplementedError, OSError, struct.error) as exc:
        known = loader_architectures()
        loader = f"transformers {transformers.__version__}'s GGUF loader"
        if _spelled(architecture) not in {_spelled(a) for a in known}:
            raise SourceError(
                f"{shown}: GGUF architecture {architecture!r} is not one {loader} can read "
                f"(it reads {', '.join(known)}); convert the original model to a Hugging Face folder "
                f"instead ({_first_line(exc)})"
            ) from exc
        raise SourceError(
            f"{shown}: {loader} cannot read this {architecture} file: {_first_line(exc)} "
            "(is the file complete? a truncated download fails like this)"
        ) from exc


def check_loadable(path: Path, architecture: str, shown: Path | None = None) -> None:
    """Ask transformers' own GGUF config reader (metadata only, no weights) whether it can read this file;
    a SourceError naming the file (`shown`, default `path`) and the architecture when it cannot."""
    from transformers import AutoConfig

    with convert_model._offline(), loader_errors(shown or path, architecture):
        AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)


def gguf_model(path: Path) -> Path:
    """The cached safetensors folder of a local GGUF file, converted on first use (see the module doc).

    Raises SourceError when the file is missing, is not GGUF, has an architecture transformers cannot
    read, changes while it is converted, or fails the greedy-equality check.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise SourceError(f"model file {str(path)!r} does not exist")
    if not path.is_file():
        raise SourceError(f"{path}: not a file; {NAMED_BY}")
    architecture = gguf_architecture(path)  # cheap, and a non-GGUF file fails before it is hashed
    digest = file_sha256(path)
    name = f"gguf-{digest}"
    start = time.perf_counter()
    with building("models", name) as slot:
        if slot is None:
            return entry_dir("models", name)
        out, work = slot
        # Load from a folder holding only the file: files lying beside it (a config.json, a tokenizer)
        # must not be taken for part of this model.
        alone = work / path.name
        os.symlink(path.resolve(), alone)
        check_loadable(alone, architecture, shown=path)
        _console.print(
            f"  converting {path} ({architecture}) into {entry_dir('models', name)} ...", highlight=False
        )
        convert = convert_model.gguf_to_safetensors  # (looked up now, so a test can count conversions)
        with loader_errors(path, architecture):
            facts = convert(alone, out)
        if sha256_file(path) != digest:
            raise SourceError(f"{path}: the file changed while it was being converted; run again")
        files = {p.relative_to(out).as_posix(): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}
        manifest = {
            "name": name,
            "kind": "model",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "lmadapt_version": __version__,
            "convert_seconds": round(time.perf_counter() - start, 1),
            "converter": f"{convert.__module__}.{convert.__name__}",
            "source": {"file": str(path.resolve()), "sha256": digest, "bytes": path.stat().st_size},
            "gguf_architecture": architecture,
            **facts,
            "files": files,
        }
        write_json(out / "manifest.json", manifest)
    return entry_dir("models", name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
