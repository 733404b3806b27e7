"""`method: tfidf`: TF-IDF features + logistic regression, the non-neural floor for classify, pair, tag and span
tasks.

What a practitioner tunes by hand, done by default (the recipe section is lmadapt/methods/tfidf.py):
- **Analyzer by script.** `analyzer: auto` counts the letters of the training text: when most are in a
  script written without spaces (Chinese, Japanese, Thai...), the features are character n-grams (1-3), else
  word n-grams (1-2) and character n-grams inside word boundaries (`char_wb` 2-5) compete in the same
  cross-validation; `word`, `char` and `char_wb` choose explicitly.
- **C by cross-validation.** Unless the recipe fixes `C`, each value of `C_grid` (times each analyzer and
  n-gram range on offer) is scored by stratified (seeded) k-fold macro-F1 on the training split and the best
  is refitted on all of it. The vectorizer is fitted once on all training text (idf uses no labels).
- **Class imbalance.** `class_weight: balanced` (the default) weighs classes by inverse frequency.
- **Per-class scores.** report.json holds precision/recall/F1 per class of eval and test; the log prints
  the test split's, and `model/tfidf.json` records the analyzer, C and the cross-validation scores.

Writes the same run folder as a neural finetune. The fitted model is saved without pickles:
`model/tfidf.json` (analyzer, vocabulary, idf, label set) and `model/logreg.safetensors` (weights, bias),
and predictions always go through `TfidfModel.scores`, so a reloaded model predicts exactly like the fitted
one. Pairs are featurised as [tfidf(a), tfidf(b), tfidf(a) * tfidf(b)] (the product marks shared terms).

Tag tasks (`analyzer: window`) classify each token on its own: its features are the n-grams of the tokens
within `window` of it, each named by where it starts ("-1:国 中" is the bigram that starts one token to the
left), plus the first and last character of a token longer than one (word-level tags such as part of speech);
for Chinese characters that is a per-character classifier on character n-gram windows. No transition
model: a predicted entity may start with I- (seqeval counts it as a start), and C is chosen by
cross-validation over folds of whole sentences, scored by macro-F1 over the tokens' tags.

Span tasks (extractive QA, `analyzer: sentence`) select a sentence: the context is cut into sentences
(`sentence_spans`), each is classified as holding the answer or not, and the best-scoring sentence of a record
is its predicted span. A sentence's features are its word n-grams and its position (from the start and from
the end), each also crossed with every word of the question, plus how many of the question's words it
shares; the training label marks the sentence that overlaps the gold answer most. It can only ever answer
with a whole sentence: a floor for answers that are sentences, a weak one for short answers. C is chosen by
cross-validation over folds of whole records (macro-F1 over the sentences' labels).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import RecipeError
from ..methods.tfidf import NGRAM_MAX
from ..runs import RunDir, timer
from ..utils.io import atomic_path
from ..utils.seed import seed_everything

VOCAB_FILE = "tfidf.json"
WEIGHTS_FILE = "logreg.safetensors"
TASK_TYPES = ("classify", "pair", "tag", "span")
SPAN_LABELS = ["other", "answer"]  # span tasks: is this sentence of the context the answer?
POSITION_CAP = 9  # sentence positions beyond this (from the start or the end) share one feature
WINDOW_PAD = ("<s>", "</s>")  # the tokens before the first and after the last one, in tag features
# Scripts written without spaces between words: Han, kana, Thai, Lao, Myanmar, Khmer (not Hangul: Korean
# separates words by spaces).
UNSPACED = re.compile(
    "[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff]"
)
LETTER = re.compile(r"[^\W\d_]")
UNSPACED_SHARE = 0.3  # above this share of letters, text is treated as unsegmented (mixed zh/en is too)
# `auto` on space-delimited text also offers character n-grams inside word boundaries: they catch
# inflections and misspellings that word n-grams split apart. Which is better depends on the data and its
# size (CV picks them on IMDB reviews, on PubMed abstracts at 600 examples but not at 2,000:
# docs/results-baselines.md), so cross-validation on train decides. Single characters carry
# almost nothing in an alphabetic script, hence 2-5 rather than the recipe's ngram_min.
AUTO_CHAR_WB = ("char_wb", (2, 5))


def window_features(tokens: list[str], window: int, ngram_range: tuple[int, int]) -> list[list[str]]:
    """Each token's features: the n-grams (n in ngram_range) of the tokens within `window` of it, named by
    the offset they start at, with `WINDOW_PAD` beyond the sentence; and `^x` / `x$`, the first and last
    character of a token longer than one."""
    low, high = ngram_range
    padded = [WINDOW_PAD[0]] * window + list(tokens) + [WINDOW_PAD[1]] * window
    out = []
    for i, token in enumerate(tokens):
        feats = [
            f"{start}:{' '.join(padded[i + window + start : i + window + start + n])}"
            for n in range(low, high + 1)
            for start in range(-window, window - n + 2)
        ]
        if len(token) > 1:
            feats += [f"^{token[0]}", f"{token[-1]}$"]
        out.append(feats)
    return out


# A sentence ends at . ! ? (and any closing quotes or brackets) before a space and a character that is not a
# lowercase Latin letter ("e.g. the" does not end one), or at a CJK full stop, ! or ?.
_SENTENCE_END = re.compile(r"([.!?][\"')\]]*)\s+(?=[^a-z\s])|([\u3002\uff01\uff1f])")
_WORD = re.compile(r"\w+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets of each sentence of `text`, without surrounding whitespace."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end(1) if m.group(1) else m.end(2)
        spans.append((start, end))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            out.append((a + lead, a + len(piece.rstrip())))
    return out


def sentence_features(question: str, context: str, ngram_range: tuple[int, int]) -> list[list[str]]:
    """Each sentence's features (`sentence_spans` order): its word n-grams (`w:`), its position from the start
    and the end (`pos:`, `end:`), the same crossed with each question word (`q&f`), and `overlap:k`, the
    number of distinct question words it contains (capped at 5). Lowercased words (`\\w+`)."""
    low, high = ngram_range
    q_words = sorted(set(_WORD.findall(question.lower())))
    spans = sentence_spans(context)
    out = []
    for i, (a, b) in enumerate(spans):
        words = _WORD.findall(context[a:b].lower())
        grams = [
            f"w:{' '.join(words[j : j + n])}" for n in range(low, high + 1) for j in range(len(words) - n + 1)
        ]
        where = [f"pos:{min(i, POSITION_CAP)}", f"end:{min(len(spans) - 1 - i, POSITION_CAP)}"]
        unigrams = [f"w:{w}" for w in dict.fromkeys(words)]
        crossed = [f"{q}&{f}" for q in q_words for f in unigrams + where]
        overlap = len(set(words) & set(q_words))
        out.append(grams + where + crossed + [f"overlap:{min(overlap, 5)}"])
    return out


def answer_sentence(context: str, answer: dict) -> int:
    """Index of the sentence (`sentence_spans`) that overlaps the answer {text, start} most (first on ties)."""
    a_start, a_end = answer["start"], answer["start"] + len(answer["text"])
    overlaps = [min(b, a_end) - max(a, a_start) for a, b in sentence_spans(context)]
    return int(np.argmax(overlaps)) if overlaps else 0


def _as_given(features: list[str]) -> list[str]:
    """The vectorizer's analyzer for tag features: each token's document is its list of features already."""
    return features


class TfidfModel:
    """A fitted vectorizer plus linear weights [n_out, n_features] and bias [n_out].

    mode: "single", "multi_label", "pair", "tag" (one row per token; `window` and `ngram_range` make
    its features) or "span" (one row per sentence of the context; labels SPAN_LABELS)."""

    def __init__(
        self,
        vectorizer,
        weights: np.ndarray,
        bias: np.ndarray,
        labels: list[str],
        mode: str,
        ngram_range: tuple[int, int] = (1, 1),
        window: int = 0,
    ):
        self.vectorizer, self.weights, self.bias = vectorizer, weights, bias
        self.labels, self.mode = labels, mode
        self.ngram_range, self.window = tuple(ngram_range), window
        self.fit_info: dict = {}  # analyzer choice, C, cross-validation scores (saved with the model)

    def documents(self, texts) -> list:
        """What the vectorizer reads: texts (both sides of pairs), each token's window features (tag), or each
        sentence's features (span: `texts` are (question, context) pairs)."""
        if self.mode == "pair":
            return [t for pair in texts for t in pair]
        if self.mode == "tag":
            return [f for tokens in texts for f in window_features(tokens, self.window, self.ngram_range)]
        if self.mode == "span":
            return [f for q, c in texts for f in sentence_features(q, c, self.ngram_range)]
        return texts

    def features(self, texts: list[str] | list[tuple[str, str]] | list[list[str]]):
        """One row per text (classify), pair, token of every sentence in order (tag), or sentence of every
        context in order (span)."""
        from scipy.sparse import hstack

        if self.mode != "pair":
            return self.vectorizer.transform(self.documents(texts))
        a = self.vectorizer.transform([t[0] for t in texts])
        b = self.vectorizer.transform([t[1] for t in texts])
        return hstack([a, b, a.multiply(b)]).tocsr()

    def scores(self, texts) -> np.ndarray:
        return np.asarray(self.features(texts) @ self.weights.T) + self.bias

    def predict(self, texts) -> list:
        """A label (set) per text or pair; for tag, a list of tags per sentence; for span, the best-scoring
        sentence of each (question, context)."""
        if self.mode == "tag" and not any(texts):
            return [[] for _ in texts]  # no token at all: nothing to score
        if self.mode == "span":
            return self._best_sentences(texts)
        scores = self.scores(texts)
        if self.mode == "multi_label":
            return [[label for label, s in zip(self.labels, row, strict=True) if s > 0] for row in scores]
        if scores.shape[1] == 1:  # binary logistic regression: one score, positive class = labels[1]
            flat = [self.labels[int(s > 0)] for s in scores[:, 0]]
        else:
            flat = [self.labels[int(i)] for i in scores.argmax(1)]
        if self.mode != "tag":
            return flat
        ends = np.cumsum([len(tokens) for tokens in texts])
        return [flat[end - len(tokens) : end] for tokens, end in zip(texts, ends, strict=True)]

    def _best_sentences(self, texts: list[tuple[str, str]]) -> list[str]:
        spans = [sentence_spans(c) for _, c in texts]
        if not any(spans):
            return ["" for _ in texts]
        scores = self.scores(texts)
        answer = scores[:, -1] if scores.shape[1] == 1 else scores[:, 1] - scores[:, 0]  # "answer" vs "other"
        out, row = [], 0
        for (_, context), found in zip(texts, spans, strict=True):
            if not found:
                out.append("")
                continue
            a, b = found[int(np.argmax(answer[row : row + len(found)]))]
            out.append(context[a:b])
            row += len(found)
        return out

    def save(self, run_dir: Path) -> Path:
        from safetensors.numpy import save_file

        vec = self.vectorizer
        own = {"tag": "window", "span": "sentence"}.get(self.mode)  # analyzers that read feature lists
        record = {
            "labels": self.labels,
            "mode": self.mode,
            "analyzer": own or vec.analyzer,
            "ngram_range": list(self.ngram_range if own else vec.ngram_range),
            **({"window": self.window} if self.mode == "tag" else {}),
            "fit": self.fit_info,
            "vocabulary": {term: int(i) for term, i in vec.vocabulary_.items()},
            "idf": vec.idf_.tolist(),
        }
        with atomic_path(run_dir / "model") as tmp:
            tmp.mkdir()
            (tmp / VOCAB_FILE).write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
            save_file(
                {"weights": np.ascontiguousarray(self.weights), "bias": np.ascontiguousarray(self.bias)},
                str(tmp / WEIGHTS_FILE),
            )
        return run_dir / "model"

    @classmethod
    def load(cls, run_dir: str | Path) -> TfidfModel:
        from safetensors.numpy import load_file

        folder = Path(run_dir) / "model"
        if not (folder / VOCAB_FILE).is_file():
            raise RecipeError(f"{folder / VOCAB_FILE} not found: not a finished tfidf run")
        record = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
        # runs written before the analyzer was recorded used word n-grams
        ngram_range = tuple(record["ngram_range"])
        vec = vectorizer(record.get("analyzer", "word"), ngram_range, None)
        vec.vocabulary = record["vocabulary"]
        vec.idf_ = np.asarray(record["idf"])
        tensors = load_file(str(folder / WEIGHTS_FILE))
        model = cls(
            vec, tensors["weights"], tensors["bias"], record["labels"], record["mode"], ngram_range,
            record.get("window", 0),
        )  # fmt: skip
        model.fit_info = record.get("fit", {})
        return model


def vectorizer(analyzer: str, ngram_range: tuple[int, int], max_features: int | None):
    """A TfidfVectorizer; for "window" (tag tasks) and "sentence" (span tasks) one that reads lists of
    features (`window_features`, `sentence_features`)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if analyzer in ("window", "sentence"):
        return TfidfVectorizer(analyzer=_as_given, max_features=max_features, sublinear_tf=True)
    return TfidfVectorizer(
        analyzer=analyzer, ngram_range=ngram_range, max_features=max_features, sublinear_tf=True
    )


def unspaced_share(texts: list[str]) -> float:
    """Share of the letters of `texts` (the first 2,000) that are in a script written without spaces."""
    letters = unspaced = 0
    for text in texts[:2000]:
        letters += len(LETTER.findall(text))
        unspaced += len(UNSPACED.findall(text))
    return unspaced / letters if letters else 0.0


def feature_options(
    method_cfg, texts: list[str], tag: bool = False, span: bool = False
) -> tuple[list[tuple[str, tuple[int, int]]], str]:
    """The (analyzer, ngram range) options cross-validation chooses from, and why those.

    `auto` on space-delimited text adds AUTO_CHAR_WB to the word n-grams, unless the recipe sets the
    n-gram range (`ngram_max`), which then means word n-grams as before. A tag task (`tag`) always uses
    "window" n-grams of tokens, a span task (`span`) "sentence" features."""
    analyzer, why = method_cfg.analyzer, "set in the recipe"
    extra = []
    if tag:
        analyzer, why = "window", f"tag task: n-grams of the tokens within {method_cfg.window} of each token"
    elif span:
        analyzer, why = (
            "sentence",
            "span task: each sentence of the context, its n-grams and position x question words",
        )
    elif analyzer == "auto":
        share = unspaced_share(texts)
        analyzer = "char" if share > UNSPACED_SHARE else "word"
        why = f"auto: {share:.0%} of the letters are in scripts written without spaces"
        if analyzer == "word" and method_cfg.ngram_max is None:
            extra = [AUTO_CHAR_WB]
            why += "; word and char_wb n-grams compete"
    low = method_cfg.ngram_min
    highs = [method_cfg.ngram_max] if method_cfg.ngram_max else NGRAM_MAX[analyzer]
    return [(analyzer, (low, max(high, low))) for high in dict.fromkeys(highs)] + extra, why


def inputs(task, records: list[dict]) -> list:
    """The text (classify), (text_a, text_b) pair (pair), list of tokens (tag) or (question, context) (span)
    of each record."""
    if task.cfg.type == "tag":
        return [task.words(r) for r in records]
    if task.cfg.type == "span":
        return [(r[task.cfg.question], r[task.cfg.context]) for r in records]
    return [task.texts(r) for r in records] if task.cfg.type == "pair" else [task.text(r) for r in records]


def _logreg(C: float, class_weight: str, seed: int, binary: bool):
    """Binary problems use liblinear (2-3x faster than lbfgs on sparse TF-IDF at large C); more classes use
    lbfgs (one multinomial model)."""
    from sklearn.linear_model import LogisticRegression

    weight = None if class_weight == "none" else class_weight
    solver = "liblinear" if binary else "lbfgs"
    return LogisticRegression(C=C, solver=solver, max_iter=2000, class_weight=weight, random_state=seed)


def fit_linear(x, y: np.ndarray, C: float, class_weight: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights [n_out, n_features] and bias of logistic regression on rows `x`, labels `y`.

    `y` is [n] class indices (one row per class seen, one row for two classes) or [n, L] 0/1 (multi-label:
    one binary classifier per label; a label that is always or never present gets a constant score)."""
    if y.ndim == 1:
        clf = _logreg(C, class_weight, seed, len(np.unique(y)) == 2).fit(x, y)
        return clf.coef_, clf.intercept_
    weights, bias = [], []
    for column in y.T:
        if column.min() == column.max():
            weights.append(np.zeros(x.shape[1]))
            bias.append(10.0 if column[0] else -10.0)
            continue
        clf = _logreg(C, class_weight, seed, True).fit(x, column)
        weights.append(clf.coef_[0])
        bias.append(clf.intercept_[0])
    return np.array(weights), np.array(bias)


def _predict_linear(x, weights: np.ndarray, bias: np.ndarray, classes: np.ndarray, multi: bool):
    scores = np.asarray(x @ weights.T) + bias
    if multi:
        return (scores > 0).astype(int)
    if scores.shape[1] == 1:
        return classes[(scores[:, 0] > 0).astype(int)]
    return classes[scores.argmax(1)]


def group_folds(groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) of `folds` folds that keep each group (a sentence's tokens) together;
    groups go to folds in a seeded random order."""
    fold_of = np.random.RandomState(seed).permutation(int(groups.max()) + 1) % folds
    return [
        (np.flatnonzero(fold_of[groups] != k), np.flatnonzero(fold_of[groups] == k)) for k in range(folds)
    ]


def cross_validate_c(
    x, y: np.ndarray, grid, folds: int, class_weight: str, seed: int, groups: np.ndarray | None = None
) -> dict[float, float]:
    """Mean macro-F1 of each C over `folds` stratified (multi-label: plain; with `groups`: by group),
    shuffled, seeded folds."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import KFold, StratifiedKFold

    multi = y.ndim == 2
    if groups is not None:
        splits = group_folds(groups, folds, seed)
    elif multi:
        splits = list(KFold(folds, shuffle=True, random_state=seed).split(x))
    else:
        with warnings.catch_warnings():  # a class rarer than `folds` is still spread as far as it goes
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    scores = {}
    for C in grid:
        per_fold = []
        for train_idx, held_idx in splits:
            y_train = y[train_idx]
            classes = np.unique(y_train) if not multi else None
            if not multi and len(classes) < 2:
                continue  # a fold with one class has nothing to learn; the others still count
            weights, bias = fit_linear(x[train_idx], y_train, C, class_weight, seed)
            pred = _predict_linear(x[held_idx], weights, bias, classes, multi)
            per_fold.append(f1_score(y[held_idx], pred, average="macro", zero_division=0))
        scores[C] = float(np.mean(per_fold)) if per_fold else 0.0
    return scores


def select(method_cfg, options, featurize, y: np.ndarray, seed: int, groups: np.ndarray | None = None):
    """(features option, C, its cross-validation scores): the best of options x C values by mean macro-F1.

    One option and one C (the recipe's, or a one-value grid) need no cross-validation. Ties go to the
    earlier option and the smaller C. `groups` (tag tasks: each token's sentence) keeps a group in one fold.
    """
    grid = [method_cfg.C] if method_cfg.C is not None else method_cfg.C_grid
    if len(options) * len(grid) == 1:
        return options[0], grid[0], {}
    examples = len(y) if groups is None else len(np.unique(groups))
    folds = min(method_cfg.cv_folds, examples // 2)
    if folds < 2:
        raise RecipeError(
            f"method tfidf: {examples} training examples are too few to cross-validate; set method.C "
            "and method.ngram_max"
        )
    scores, best = {}, None
    for option in options:
        x = featurize(option)[1]
        found = cross_validate_c(x, y, grid, folds, method_cfg.class_weight, seed, groups)
        scores[option_name(option)] = {str(c): round(v, 4) for c, v in found.items()}
        for c, v in found.items():
            if best is None or v > best[0]:
                best = (v, option, c)
    return best[1], best[2], scores


def option_name(option: tuple[str, tuple[int, int]]) -> str:
    analyzer, (low, high) = option
    return f"{analyzer} {low}-{high}"


def _mode(task) -> str:
    if task.cfg.type in ("pair", "tag", "span"):
        return task.cfg.type
    return "multi_label" if task.multi_label else "single"


def fit(task, records: list[dict], method_cfg, seed: int) -> TfidfModel:
    mode = _mode(task)
    texts = inputs(task, records)
    window = method_cfg.window if mode == "tag" else 0
    labels = SPAN_LABELS if mode == "span" else task.labels

    def featurize(option) -> tuple[TfidfModel, object]:
        vec = vectorizer(option[0], option[1], method_cfg.max_features)
        model = TfidfModel(vec, np.zeros((0, 0)), np.zeros(0), labels, mode, option[1], window)
        vec.fit(model.documents(texts))
        return model, model.features(texts)

    golds = [task.gold(r) for r in records]
    groups = None
    if mode == "multi_label":
        y = np.array([[label in g for label in task.labels] for g in golds], dtype=int)
    else:
        if mode == "tag":  # one row per token; `groups` says whose sentence it is
            index = {label: i for i, label in enumerate(task.labels)}
            y = np.array([index[tag] for tags in golds for tag in tags])
            groups = np.repeat(np.arange(len(golds)), [len(tags) for tags in golds])
        elif mode == "span":  # one row per sentence of the context, 1 where it holds the answer
            y, groups = _span_rows(task, records)
        else:
            y = np.array([task.labels.index(g) for g in golds])
        if len(set(y)) < 2:
            raise RecipeError("method tfidf: the training data has a single label; nothing to learn")
    flat = [t for pair in texts for t in pair] if mode == "pair" else texts
    options, why = feature_options(method_cfg, flat, tag=mode == "tag", span=mode == "span")
    option, C, cv_scores = select(method_cfg, options, featurize, y, seed, groups)
    model, x = featurize(option)
    coef, intercept = fit_linear(x, y, C, method_cfg.class_weight, seed)
    if mode != "multi_label":
        coef, intercept = _all_labels(coef, intercept, np.unique(y), len(labels))
    model.weights = np.asarray(coef, dtype=np.float64)
    model.bias = np.asarray(intercept, dtype=np.float64)
    model.fit_info = {
        "analyzer": option[0],
        "ngram_range": list(option[1]),
        "analyzer_why": why,
        **({"window": window} if mode == "tag" else {}),
        "C": C,
        "cv_macro_f1": cv_scores,
        "class_weight": method_cfg.class_weight,
    }
    return model


def _span_rows(task, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(label per sentence: 1 for the one holding the gold answer, else 0; the record each sentence is of)."""
    y, groups = [], []
    for i, r in enumerate(records):
        context = r[task.cfg.context]
        n = len(sentence_spans(context))
        if not n:
            continue
        target = answer_sentence(context, r[task.cfg.answer])
        y += [int(j == target) for j in range(n)]
        groups += [i] * n
    return np.array(y), np.array(groups)


def _all_labels(coef, intercept, classes, n_labels: int):
    """Rows for every label of the task; labels absent from train get a score they never win."""
    if len(classes) == n_labels:
        return coef, intercept
    full, full_b = np.zeros((n_labels, coef.shape[1])), np.full(n_labels, -1e9)
    if coef.shape[0] == 1:  # binary over two of the labels: expand to two rows
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    full[classes], full_b[classes] = coef, intercept
    return full, full_b


def describe(model: TfidfModel) -> str:
    info = model.fit_info
    low, high = info["ngram_range"]
    chosen = f"{info['analyzer']} {low}-{high}-grams ({info['analyzer_why']}), C {info['C']:g}"
    if info["cv_macro_f1"]:
        folds = "; ".join(
            f"{name}: " + ", ".join(f"C {c} {v:.3f}" for c, v in by_c.items())
            for name, by_c in info["cv_macro_f1"].items()
        )
        chosen += f" by cross-validation on train (macro-F1 {folds})"
    return f"tfidf: {chosen}; {model.weights.shape[1]:,} features; class_weight {info['class_weight']}"


def add_per_label(task, splits: dict, predicted: dict, reports: dict) -> None:
    """Multi-label tasks report nothing per class; add precision/recall/F1 per label to report.json."""
    from ..metrics import per_class_report

    if not getattr(task, "multi_label", False):
        return
    for name, report in reports.items():
        golds, preds = [task.gold(r) for r in splits[name]], predicted[name]
        report["per_class"] = {
            label: per_class_report(
                [str(label in g) for g in golds], [str(label in p) for p in preds], ["False", "True"]
            )["True"]
            for label in task.labels
        }


def log_per_class(report: dict, log) -> None:
    """One line per class (label) of the shown split's precision/recall/F1."""
    for label, s in (report.get("per_class") or {}).items():
        log(
            f"  {label}: precision {s['precision']:.4f} recall {s['recall']:.4f} f1 {s['f1']:.4f} "
            f"(support {s['support']})"
        )


def run(recipe, resume: bool = False) -> Path:
    """Fit on train, score eval and test, write the run folder (run by `stages.run_stage` like a stage)."""
    from ..data.splits import load_splits
    from ..evaluation import cost_record, evaluate_splits, write_results
    from ..plots import save_plots
    from ..tasks import get_task

    if recipe.task.type not in TASK_TYPES:
        raise RecipeError(
            f"method tfidf supports classify, pair, tag and span tasks, not '{recipe.task.type}'"
        )
    analyzer = recipe.method.analyzer
    own = {"tag": "window", "span": "sentence"}  # task type -> the only analyzer (besides auto) that fits it
    fits = ("auto", own[recipe.task.type]) if recipe.task.type in own else ("auto", "word", "char", "char_wb")
    if analyzer not in fits:
        raise RecipeError(
            f"method.analyzer: '{analyzer}' does not fit a {recipe.task.type} task; use {', '.join(fits[:-1])} "
            f"or {fits[-1]} "
            "(window: n-grams of the tokens around each token, for tag tasks; sentence: sentence selection, "
            "for span tasks)"
        )
    task = get_task(recipe.task)
    seed_everything(recipe.train.seed)
    splits = load_splits(recipe, task.fields(True))
    if not splits["train"]:
        raise RecipeError("data.train: the tfidf baseline needs training examples")
    run_dir = RunDir.start(recipe, resume)  # only now: bad data leaves nothing behind
    if "labels" in type(recipe.task).model_fields:  # span tasks have none
        recipe.task.labels = task.fit_labels(splits["train"])
    run_dir.write_config(recipe)
    findings, notes = task.findings(splits)  # tag tasks: the tag scheme, tags train never shows
    for note in notes:
        run_dir.log(note)
    with timer() as train_time:
        model = fit(task, splits["train"], recipe.method, recipe.train.seed)
    run_dir.log(describe(model) + f"; fitted in {train_time():.1f}s")
    predicted: dict[str, list] = {}  # split -> predictions, for the per-label report of multi-label tasks

    def predict(name: str, records: list[dict]) -> tuple[list, None]:
        predicted[name] = model.predict(inputs(task, records))
        return predicted[name], None

    evaluation = evaluate_splits(task, splits, predict, recipe.eval.metrics, run_dir.log)
    add_per_label(task, splits, predicted, evaluation.report)
    log_per_class(evaluation.shown_report, run_dir.log)
    model.save(run_dir.path)
    save_plots(run_dir / "plots", [], evaluation.shown_report, task.best_metric)
    size = int(model.weights.size + model.bias.size)
    cost = cost_record(train_time(), len(splits["train"]), size, size, evaluation.examples_per_s)
    write_results(run_dir, evaluation, [], cost, task=findings)
    return run_dir.commit()
