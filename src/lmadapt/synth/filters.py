"""Filters that decide which generated instructions and instances enter the task pool.

Every check works on any script: text is tokenized with CJK characters as single tokens and other text as
words, so Chinese instructions get meaningful ROUGE-L scores and word counts (no ASCII-only filter).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..metrics import CJK_CHARS, rouge_l_tokens, rouge_tokens

# Words a text-only model cannot act on (the Self-Instruct list), plus their Chinese counterparts.
DEFAULT_BLACKLIST = [
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
    "video",
    "audio",
    "music",
    "flowchart",
    "diagram",
    "图片",
    "图像",
    "画图",
    "绘制",
    "文件",
    "地图",
    "视频",
    "音频",
    "音乐",
    "流程图",
    "图表",
]

_HAS_CJK = re.compile(rf"[{CJK_CHARS}]")
tokenize = rouge_tokens  # the pool's similarity uses the same tokens as the ROUGE-L metric
rouge_l = rouge_l_tokens


def blacklisted(text: str, words: Sequence[str]) -> str | None:
    """The first blacklisted word or phrase in `text`, else None.

    Words in scripts with spaces match whole words only ("map" not in "mapping"); CJK words match anywhere.
    """
    lowered = text.lower()
    tokens = " " + " ".join(tokenize(text)) + " "
    for word in words:
        w = word.lower().strip()
        if not w:
            continue
        if _HAS_CJK.search(w):
            if w in lowered:
                return word
        elif " " + " ".join(tokenize(w)) + " " in tokens:
            return word
    return None


def word_count(text: str) -> int:
    return len(tokenize(text))


def normalize(text: str) -> str:
    """Whitespace-collapsed, lower-cased text used for exact-duplicate checks."""
    return " ".join(text.split()).lower()


@dataclass
class Similarity:
    """How close a candidate is to the pool: the best ROUGE-L, which instruction it was, and the top few."""

    max_rouge_l: float
    most_similar: str | None
    top: dict[str, float] = field(default_factory=dict)


class InstructionPool:
    """Every instruction accepted so far (seeds included), with their token lists cached for ROUGE-L."""

    def __init__(self, instructions: Sequence[str] = ()):
        self.texts: list[str] = []
        self._tokens: list[list[str]] = []
        self._seen: set[str] = set()
        for text in instructions:
            self.add(text)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str) -> None:
        self.texts.append(text)
        self._tokens.append(tokenize(text))
        self._seen.add(normalize(text))

    def discard(self, text: str) -> None:
        """Remove the last occurrence of `text` (a provisional entry that failed a later stage)."""
        for i in range(len(self.texts) - 1, -1, -1):
            if self.texts[i] == text:
                del self.texts[i], self._tokens[i]
                break
        if text not in self.texts:
            self._seen.discard(normalize(text))

    def contains(self, text: str) -> bool:
        return normalize(text) in self._seen

    def similarity(self, text: str, top_k: int = 3) -> Similarity:
        """ROUGE-L of `text` against every instruction in the pool."""
        tokens = tokenize(text)
        scores = [(rouge_l(tokens, ref), i) for i, ref in enumerate(self._tokens)]
        if not scores:
            return Similarity(0.0, None)
        scores.sort(reverse=True)
        best, idx = scores[0]
        top = {self.texts[i]: round(s, 4) for s, i in scores[:top_k]}
        return Similarity(round(best, 4), self.texts[idx], top)


@dataclass(frozen=True)
class InstructionRules:
    """Thresholds for instruction filters (flat arguments, built from the config at the edge)."""

    rouge_threshold: float = 0.7
    min_words: int = 3
    max_words: int = 150
    blacklist: tuple[str, ...] = tuple(DEFAULT_BLACKLIST)


def check_instruction(
    text: str, pool: InstructionPool, rules: InstructionRules
) -> tuple[str | None, Similarity]:
    """Run every instruction filter; return (reason it failed or None, similarity to the pool).

    Cheap checks run first; the similarity is computed for every candidate that reaches it so the scores
    can be kept with both accepted and rejected records.
    """
    empty = Similarity(0.0, None)
    text = text.strip()
    if not text:
        return "empty", empty
    n = word_count(text)
    if n < rules.min_words:
        return "too_short", empty
    if n > rules.max_words:
        return "too_long", empty
    if text[0] in string.punctuation:
        return "starts_with_punctuation", empty
    if blacklisted(text, rules.blacklist):
        return "blacklist", empty
    if pool.contains(text):
        return "duplicate", empty
    sim = pool.similarity(text)
    if sim.max_rouge_l >= rules.rouge_threshold:
        return "rouge_l", sim
    return None, sim


def filter_instances(instances: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """Drop empty outputs, exact duplicates, and every instance whose input appears with different outputs.

    Returns the kept instances (order kept) and the number dropped per reason.
    """
    dropped = {"empty_output": 0, "duplicate_instance": 0, "conflicting_outputs": 0}
    seen: set[tuple[str, str]] = set()
    unique: list[dict] = []
    for inst in instances:
        inp, out = inst.get("input", "").strip(), inst.get("output", "").strip()
        if not out:
            dropped["empty_output"] += 1
            continue
        key = (normalize(inp), normalize(out))
        if key in seen:
            dropped["duplicate_instance"] += 1
            continue
        seen.add(key)
        unique.append({"input": inp, "output": out})
    outputs_per_input: dict[str, set[str]] = {}
    for inst in unique:
        outputs_per_input.setdefault(normalize(inst["input"]), set()).add(normalize(inst["output"]))
    kept = []
    for inst in unique:
        if len(outputs_per_input[normalize(inst["input"])]) > 1:
            dropped["conflicting_outputs"] += 1
        else:
            kept.append(inst)
    return kept, dropped
