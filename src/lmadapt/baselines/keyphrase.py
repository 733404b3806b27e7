"""`method: keyphrase`: unsupervised keyword extraction, the floor the neural keyword runs have to beat.

Candidates are the phrases of up to `max_words` words between stop words and punctuation of the title and
abstract (a word keeps inner hyphens and slashes: 'SARS-CoV-2', 'COVID-19'; stop words are
scikit-learn's English list). Each candidate scores tf * idf: tf counts its occurrences in the document,
those in the first text field (the title) `first_field_weight` times; idf = ln((1 + N) / (1 + df)) + 1
with df the number of the N training documents holding it (the training keywords are never read). The
`top_k` best are predicted, skipping a phrase inside an already chosen one, and scored like the neural
runs: keyword-set F1 against all gold keywords (tasks/keywords.py). Ranking by idf favours rare phrases,
which is why whole multi-word terms ('generative adversarial network') beat their common words.

The model is saved as `model/keyphrase.json` (document count, df of phrases in >= min_df documents, stop
words); `KeyphraseModel.load` predicts exactly like the fitted model.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

from ..errors import RecipeError
from ..metrics import normalize_keyword
from ..runs import RunDir, timer
from ..utils.io import atomic_path

MODEL_FILE = "keyphrase.json"
TOKEN = re.compile(r"\w+(?:[-/'’]\w+)*|[^\w\s]")


class KeyphraseModel:
    """Document frequencies of candidate phrases over the training documents, and the ranking settings."""

    def __init__(self, cfg: dict, documents: int, df: dict[str, int], stop_words: frozenset[str]):
        self.cfg, self.documents, self.df, self.stop_words = cfg, documents, df, stop_words

    @classmethod
    def fit(cls, method_cfg, documents: list[list[str]]) -> KeyphraseModel:
        """Count, for each candidate phrase, the training documents (lists of field texts) holding it."""
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        cfg = method_cfg.model_dump()
        model = cls(cfg, len(documents), {}, frozenset(ENGLISH_STOP_WORDS))
        counts: Counter = Counter()
        for fields in documents:
            counts.update({key for key, _, _ in model.candidates(fields)})
        model.df = {key: n for key, n in counts.items() if n >= cfg["min_df"]}
        return model

    def candidates(self, fields: list[str]) -> list[tuple[str, str, int]]:
        """(normalised key, surface text, field index) of every candidate occurrence, in reading order."""
        found = []
        for index, text in enumerate(fields):
            for chunk in self._chunks(text):
                for n in range(1, min(self.cfg["max_words"], len(chunk)) + 1):
                    for i in range(len(chunk) - n + 1):
                        words = chunk[i : i + n]
                        surface = text[words[0].start() : words[-1].end()]
                        key = normalize_keyword(surface)
                        if key and not key.replace(" ", "").isdigit():
                            found.append((key, surface, index))
        return found

    def _chunks(self, text: str) -> list[list[re.Match]]:
        """Runs of words between punctuation marks and stop words."""
        chunks, current = [], []
        for match in TOKEN.finditer(text):
            word = match.group()
            is_word = word[0].isalnum() or word[0] == "_"
            if not is_word or word.lower() in self.stop_words:
                if current:
                    chunks.append(current)
                current = []
            else:
                current.append(match)
        return [*chunks, current] if current else chunks

    def idf(self, key: str) -> float:
        return math.log((1 + self.documents) / (1 + self.df.get(key, 0))) + 1

    def extract(self, fields: list[str]) -> list[str]:
        """The document's `top_k` phrases, best first (each as first written in the text)."""
        tf: Counter = Counter()
        surface: dict[str, str] = {}
        for key, text, index in self.candidates(fields):
            tf[key] += self.cfg["first_field_weight"] if index == 0 else 1.0
            surface.setdefault(key, text)
        # ties (common among rare phrases): the longer, more specific phrase first, then alphabetical
        ranked = sorted(tf, key=lambda k: (-tf[k] * self.idf(k), -k.count(" "), k))
        chosen: list[str] = []
        for key in ranked:
            if len(chosen) == self.cfg["top_k"]:
                break
            if not any(f" {key} " in f" {c} " for c in chosen):
                chosen.append(key)
        return [surface[k] for k in chosen]

    def save(self, run_dir: Path) -> Path:
        record = {
            "settings": self.cfg,
            "documents": self.documents,
            "stop_words": sorted(self.stop_words),
            "df": self.df,
        }
        with atomic_path(run_dir / "model") as tmp:
            tmp.mkdir()
            (tmp / MODEL_FILE).write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        return run_dir / "model"

    @classmethod
    def load(cls, run_dir: str | Path) -> KeyphraseModel:
        path = Path(run_dir) / "model" / MODEL_FILE
        if not path.is_file():
            raise RecipeError(f"{path} not found: not a finished keyphrase run")
        record = json.loads(path.read_text(encoding="utf-8"))
        return cls(record["settings"], record["documents"], record["df"], frozenset(record["stop_words"]))


def fields_of(task, record: dict) -> list[str]:
    """The record's text fields, in the task's order (a missing optional field is empty)."""
    return [record.get(name) or "" for name in task.cfg.text]


def run(recipe, resume: bool = False) -> Path:
    """Fit the document frequencies on train, extract from eval and test, write the run folder."""
    from ..data.splits import load_splits
    from ..evaluation import cost_record, evaluate_splits, write_results
    from ..tasks import get_task
    from ..tasks.keywords import recall_ceiling

    if recipe.task.type != "keywords":
        raise RecipeError(f"method keyphrase supports keywords tasks, not '{recipe.task.type}'")
    task = get_task(recipe.task)
    # the training keywords are never read: the documents alone give the document frequencies
    splits = load_splits(recipe, task.fields(True))
    if not splits["train"]:
        raise RecipeError("data.train: the keyphrase baseline needs training documents (for idf)")
    run_dir = RunDir.start(recipe, resume)  # only now: bad data leaves nothing behind
    run_dir.write_config(recipe)
    with timer() as train_time:
        model = KeyphraseModel.fit(recipe.method, [fields_of(task, r) for r in splits["train"]])
    run_dir.log(
        f"keyphrase: document frequencies of {len(model.df):,} phrases (in >= {model.cfg['min_df']} of "
        f"{model.documents:,} training documents), counted in {train_time():.1f}s; top {model.cfg['top_k']}"
    )
    for name in ("eval", "test"):
        if splits[name]:
            run_dir.log(
                f"{name}: recall ceiling {recall_ceiling(task, splits[name]):.4f} (gold keywords in the text)"
            )
    evaluation = evaluate_splits(
        task, splits, lambda name, records: ([model.extract(fields_of(task, r)) for r in records], None),
        recipe.eval.metrics, run_dir.log,
    )  # fmt: skip
    model.save(run_dir.path)
    cost = cost_record(train_time(), len(splits["train"]), 0, len(model.df), evaluation.examples_per_s)
    write_results(run_dir, evaluation, [], cost)
    return run_dir.commit()
