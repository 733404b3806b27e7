"""`span`: extractive question answering; the answer is a span of the context, predicted as start/end tokens.

Long contexts are cut into windows of `max_length` tokens overlapping by a quarter (the tokenizer's
`stride`); a window without the whole answer is trained to point at [CLS]. Prediction takes, over all
windows of a record, the best-scoring (start <= end, at most `max_answer` tokens) span inside the context.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from ..config.base import Section
from ..errors import DataError
from ..metrics import span_metrics
from .base import ATTENTION, Attention, Encoded, Task

TOP_K = 20


class SpanConfig(Section):
    type: Literal["span"] = "span"
    context: str = Field("context")
    question: str = Field("question")
    answer: str = Field(
        "answer", description="Field with {text, start} (start: character offset in context)."
    )
    id: str | None = None
    attention: Attention = ATTENTION
    max_answer: int = Field(
        30,
        ge=1,
        description="Longest answer predicted, in tokens (SQuAD's answers are short; sentences are not).",
    )


class SpanTask(Task):
    task_type = "span"
    head = "AutoModelForQuestionAnswering"
    default_metrics = ("exact_match", "token_f1")
    best_metric = "token_f1"
    label_names = ("start_positions", "end_positions")

    def fields(self, with_gold: bool = True) -> dict[str, str]:
        fields = {self.cfg.context: "str", self.cfg.question: "str"} | self.id_fields()
        if with_gold:
            fields[self.cfg.answer] = "span"
        return fields

    def gold(self, record: dict) -> str:
        return record[self.cfg.answer]["text"]

    def model_kwargs(self) -> dict:
        return {}

    def encode(self, records: list[dict], tokenizer, max_length: int, with_gold: bool = True) -> Encoded:
        features, example, extra = [], [], []
        for index, record in enumerate(records):
            context = record[self.cfg.context]
            enc = tokenizer(
                record[self.cfg.question],
                context,
                truncation="only_second",
                max_length=max_length,
                stride=max_length // 4,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
            if with_gold:
                answer = record[self.cfg.answer]
                a_start = answer["start"]
                a_end = a_start + len(answer["text"])
                if context[a_start:a_end] != answer["text"]:
                    raise DataError(
                        f"record {index}: field '{self.cfg.answer}': text {answer['text']!r} is not found at "
                        f"start={a_start} of the context"
                    )
            for w in range(len(enc["input_ids"])):
                seq_ids = enc.sequence_ids(w)
                offsets = [
                    o if s == 1 else None for o, s in zip(enc["offset_mapping"][w], seq_ids, strict=True)
                ]
                feat = {
                    k: enc[k][w] for k in enc if k not in ("offset_mapping", "overflow_to_sample_mapping")
                }
                if with_gold:
                    feat["start_positions"], feat["end_positions"] = _positions(offsets, a_start, a_end)
                features.append(feat)
                example.append(index)
                extra.append({"offsets": offsets, "context": context})
        return Encoded(features, example, extra)

    def decode(self, outputs: list[np.ndarray], encoded: Encoded, n_records: int) -> list[str]:
        best: list[tuple[float, str]] = [(-np.inf, "")] * n_records
        for logits, index, info in zip(outputs, encoded.example, encoded.extra, strict=True):
            offsets = info["offsets"]
            start_logits, end_logits = logits[:, 0], logits[:, 1]
            starts = np.argsort(start_logits)[::-1][:TOP_K]
            ends = np.argsort(end_logits)[::-1][:TOP_K]
            for s in starts:
                for e in ends:
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > self.cfg.max_answer:
                        continue
                    score = float(start_logits[s] + end_logits[e])
                    if score > best[index][0]:
                        best[index] = (score, info["context"][offsets[s][0] : offsets[e][1]])
        return [text for _, text in best]

    def score(self, golds: list, preds: list) -> dict[str, float]:
        return span_metrics(golds, preds)


def _positions(offsets: list, a_start: int, a_end: int) -> tuple[int, int]:
    """Token positions of the answer inside this window, or (0, 0) ([CLS]) if it is not wholly inside."""
    inside = [i for i, o in enumerate(offsets) if o is not None]
    if not inside or offsets[inside[0]][0] > a_start or offsets[inside[-1]][1] < a_end:
        return 0, 0
    start = next(i for i in inside if offsets[i][1] > a_start)
    end = next(i for i in reversed(inside) if offsets[i][0] < a_end)
    return start, end


CONFIG, TASK = SpanConfig, SpanTask
