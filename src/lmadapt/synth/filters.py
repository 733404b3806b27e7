"""Filters that decide which generated instructions and instances enter the task pool.

Every check works on any script: text is tokenized with CJK characters as single tokens and other text as
words, so Chinese instructions get ROUGE-L over characters, and their length limits count characters
(`min_chars`/`max_chars`) where English ones count words. The blacklist has the Self-Instruct words and their
Chinese counterparts; Self-Instruct's two other rules are mirrored too: an instruction that asks to "write a
program" (写一个程序) is dropped, and in a Chinese run one not written in Chinese (its first-character ASCII
check, turned round).
"""

from __future__ import annotations

import re
import string
import unicodedata
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
    "照片",
    "曲线图",
    "示意图",
    "画出",  # not "画" alone: 漫画, 画家, 刻画 are text topics
    "画一幅",
    "画一张",
    "绘图",
    "作图",
    "录音",
    "录像",
    "前往",
]
# Self-Instruct drops "Write a program ..." (asking for a program or the answer is unclear): the start of an
# instruction, in either language.
PROGRAM_STARTS = (
    "write a program",
    "写一个程序",
    "编写一个程序",
    "写一段程序",
    "编写一段程序",
    "编写程序",
    "写程序",
)

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
    """Words plus CJK characters (each CJK character is one token)."""
    return len(tokenize(text))


def cjk_share(text: str) -> float:
    """The share of the text's tokens that are CJK characters (0.0 for text without tokens)."""
    tokens = tokenize(text)
    return sum(bool(_HAS_CJK.fullmatch(t)) for t in tokens) / len(tokens) if tokens else 0.0


def length_check(text: str, rules: InstructionRules) -> str | None:
    """ "too_short" / "too_long" against the limits of the text's kind: characters for mostly-CJK text
    (min_chars/max_chars), words otherwise (min_words/max_words); None when it is within them."""
    n = word_count(text)
    low, high = (
        (rules.min_chars, rules.max_chars) if cjk_share(text) >= 0.5 else (rules.min_words, rules.max_words)
    )
    return "too_short" if n < low else "too_long" if n > high else None


def starts_with_punctuation(text: str) -> bool:
    """ASCII punctuation or any Unicode punctuation (，。：“ ...) first."""
    return text[0] in string.punctuation or unicodedata.category(text[0]).startswith("P")


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
    min_chars: int = 5
    max_chars: int = 300
    blacklist: tuple[str, ...] = tuple(DEFAULT_BLACKLIST)
    program_starts: tuple[str, ...] = PROGRAM_STARTS
    language: str = "en"  # "zh": an instruction mostly without Chinese characters is "not_chinese"


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
    too = length_check(text, rules)
    if too:
        return too, empty
    if starts_with_punctuation(text):
        return "starts_with_punctuation", empty
    if rules.language == "zh" and cjk_share(text) < 0.5:
        return "not_chinese", empty
    if blacklisted(text, rules.blacklist):
        return "blacklist", empty
    if text.lower().startswith(rules.program_starts):
        return "program", empty
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
