"""Evaluation metrics shared by every task, on plain Python values (labels as strings).

Classification: accuracy, precision/recall/F1 (binary, macro, micro), per-class report, confusion matrix,
all from scikit-learn (`zero_division=0`).
Tagging: seqeval entity-level F1 (entity schemes), or token accuracy and macro F1 (other tag sets).
Spans: exact match and token F1 (SQuAD-style normalisation).
Keywords: F1 between normalised keyword sets.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Sequence

__all__ = [
    "classification_metrics",
    "multilabel_metrics",
    "per_class_report",
    "confusion",
    "entity_metrics",
    "token_metrics",
    "flat_tags",
    "span_metrics",
    "exact_match",
    "token_f1",
    "normalize_keyword",
    "keyword_set_f1",
    "keyword_metrics",
]


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """(precision, recall, f1) from counts, 0.0 where undefined (token and keyword-set F1: no sklearn twin)."""
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def _sklearn_prf(gold, pred, labels, average: str | None):
    """sklearn's precision/recall/F1 over `labels` (others count only as errors); undefined scores are 0."""
    from sklearn.metrics import precision_recall_fscore_support

    return precision_recall_fscore_support(gold, pred, labels=labels, average=average, zero_division=0)


def _averaged(gold, pred, labels, average: str) -> dict[str, float]:
    """{precision,recall,f1}_<average> over `labels`; all 0.0 without examples or labels (sklearn refuses)."""
    p = r = f = 0.0
    if len(gold) and len(labels):
        p, r, f, _ = _sklearn_prf(gold, pred, labels, average)
    return {f"precision_{average}": float(p), f"recall_{average}": float(r), f"f1_{average}": float(f)}


def per_class_report(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, dict]:
    """{label: {precision, recall, f1, support}} for each label."""
    if not gold or not labels:  # sklearn refuses empty inputs
        return {label: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for label in labels}
    scores = zip(*_sklearn_prf(list(gold), list(pred), list(labels), None), strict=True)
    return {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
        for label, (p, r, f, n) in zip(labels, scores, strict=True)
    }


def confusion(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Confusion matrix: rows are gold labels, columns predicted labels, in `labels` order."""
    from sklearn.metrics import confusion_matrix

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    if not set(gold) & set(labels):  # sklearn refuses when no gold label is one of `labels`
        return [[0] * len(labels) for _ in labels]
    with warnings.catch_warnings():  # sklearn warns about a 1x1 matrix even when `labels` has one label
        warnings.filterwarnings("ignore", "A single label was found", UserWarning)
        return confusion_matrix(list(gold), list(pred), labels=list(labels)).tolist()


def classification_metrics(
    gold: Sequence[str], pred: Sequence[str], labels: Sequence[str], positive: str | None = None
) -> dict[str, float]:
    """accuracy, precision/recall/f1 macro and micro; plus binary ones for two labels.

    `positive` is the positive class for the binary scores (default: the second label, as sklearn does).
    """
    from sklearn.metrics import accuracy_score

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    gold, pred, labels = list(gold), list(pred), list(labels)
    report = per_class_report(gold, pred, labels)
    out = {"accuracy": float(accuracy_score(gold, pred)) if gold else 0.0}
    out |= _averaged(gold, pred, labels, "macro") | _averaged(gold, pred, labels, "micro")
    if len(labels) == 2:
        pos = positive if positive is not None else labels[1]
        out["precision"], out["recall"], out["f1"] = (report[pos][k] for k in ("precision", "recall", "f1"))
    return out


def multilabel_metrics(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], labels: Sequence[str]
) -> dict[str, float]:
    """Multi-label: exact-set accuracy, macro F1 over labels, micro F1 over (example, label) pairs."""
    from sklearn.metrics import accuracy_score
    from sklearn.preprocessing import MultiLabelBinarizer

    gold_sets, pred_sets, labels = [set(g) for g in gold], [set(p) for p in pred], list(labels)
    if not gold_sets:
        return {"accuracy": 0.0} | _averaged([], [], labels, "macro") | _averaged([], [], labels, "micro")
    # Labels outside `labels` get columns too: they make a set wrong (accuracy) but are in no F1. A last,
    # always-empty column keeps the matrix multi-label for sklearn (a single column would read as binary).
    others = sorted(set().union(*gold_sets, *pred_sets) - set(labels), key=str)
    binarizer = MultiLabelBinarizer(classes=[*labels, *others, object()])
    y_gold, y_pred = binarizer.fit_transform(gold_sets), binarizer.transform(pred_sets)
    columns = list(range(len(labels)))  # the columns of `labels`
    out = {"accuracy": float(accuracy_score(y_gold, y_pred))}
    return out | _averaged(y_gold, y_pred, columns, "macro") | _averaged(y_gold, y_pred, columns, "micro")


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """seqeval entity-level precision/recall/F1 (micro over entities) and token accuracy for BIO tags."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    gold, pred = [list(g) for g in gold], [list(p) for p in pred]
    return {
        "entity_f1": float(f1_score(gold, pred, zero_division=0)),
        "entity_precision": float(precision_score(gold, pred, zero_division=0)),
        "entity_recall": float(recall_score(gold, pred, zero_division=0)),
        "token_accuracy": float(accuracy_score(gold, pred)) if gold else 0.0,
    }


def token_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Tags scored token by token (tag sets that mark no entities, e.g. part of speech): token accuracy, and
    precision/recall/F1 macro-averaged over every tag in gold or prediction (a gold tag the model never
    predicts, such as one its training data lacked, counts with F1 0)."""
    flat_gold, flat_pred = flat_tags(gold, pred)
    correct = sum(g == p for g, p in zip(flat_gold, flat_pred, strict=True))
    out = {"token_accuracy": correct / len(flat_gold) if flat_gold else 0.0}
    return out | _averaged(flat_gold, flat_pred, sorted(set(flat_gold) | set(flat_pred)), "macro")


def flat_tags(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> tuple[list[str], list[str]]:
    """All sequences' tags in one list each; every sequence must have as many predicted tags as gold ones."""
    flat_gold, flat_pred = [], []
    for g, p in zip(gold, pred, strict=True):
        if len(g) != len(p):
            raise ValueError(f"{len(g)} gold tags but {len(p)} predicted in one sequence")
        flat_gold += g
        flat_pred += p
    return flat_gold, flat_pred


def _normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation and articles, squeeze spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(gold: str, pred: str) -> float:
    return float(_normalize_answer(gold) == _normalize_answer(pred))


def token_f1(gold: str, pred: str) -> float:
    g, p = _normalize_answer(gold).split(), _normalize_answer(pred).split()
    if not g or not p:
        return float(g == p)
    common = sum((Counter(g) & Counter(p)).values())
    return _prf(common, len(p) - common, len(g) - common)[2]


def span_metrics(gold: Sequence[str], pred: Sequence[str]) -> dict[str, float]:
    n = max(len(gold), 1)
    return {
        "exact_match": sum(exact_match(g, p) for g, p in zip(gold, pred, strict=True)) / n,
        "token_f1": sum(token_f1(g, p) for g, p in zip(gold, pred, strict=True)) / n,
    }


def normalize_keyword(text: str) -> str:
    """Lowercase, punctuation to spaces, extra spaces squeezed: 'Deep-Learning ' -> 'deep learning'."""
    text = "".join(" " if ch in string.punctuation else ch for ch in text.lower())
    return " ".join(text.split())


def keyword_set_f1(gold: Sequence[str], pred: Sequence[str]) -> tuple[float, float, float]:
    """(precision, recall, f1) between normalised keyword sets of one document."""
    g = {k for k in map(normalize_keyword, gold) if k}
    p = {k for k in map(normalize_keyword, pred) if k}
    if not g and not p:
        return 1.0, 1.0, 1.0
    tp = len(g & p)
    return _prf(tp, len(p) - tp, len(g) - tp)


def keyword_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Keyword-set F1 averaged over documents (macro) and pooled over all keywords (micro)."""
    per_doc = [keyword_set_f1(g, p) for g, p in zip(gold, pred, strict=True)]
    n = max(len(per_doc), 1)
    tp = fp = fn = 0
    for g, p in zip(gold, pred, strict=True):
        gs = {k for k in map(normalize_keyword, g) if k}
        ps = {k for k in map(normalize_keyword, p) if k}
        tp, fp, fn = tp + len(gs & ps), fp + len(ps - gs), fn + len(gs - ps)
    out = {
        "keyword_precision": sum(x[0] for x in per_doc) / n,
        "keyword_recall": sum(x[1] for x in per_doc) / n,
        "keyword_f1": sum(x[2] for x in per_doc) / n,
    }
    out["keyword_f1_micro"] = _prf(tp, fp, fn)[2]
    return out


# --- ROUGE-L (free text, and the Self-Instruct similarity filter) --------------------------------------
CJK_CHARS = (
    "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3130-\u318f\u31a0-\u31bf\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff"
)
_ROUGE_TOKEN = re.compile(rf"[{CJK_CHARS}]|[^\W{CJK_CHARS}]+")


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased tokens: each CJK character alone (Chinese has no spaces), other scripts as word runs."""
    return _ROUGE_TOKEN.findall(text.lower())


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a  # the row is the shorter sequence
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_tokens(candidate: Sequence[str], reference: Sequence[str]) -> float:
    """ROUGE-L F1 (beta = 1) of two token lists; 0.0 when either is empty."""
    lcs = _lcs(candidate, reference) if candidate and reference else 0
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 between two texts (two empty texts match: 1.0)."""
    ref, cand = rouge_tokens(reference), rouge_tokens(candidate)
    if not ref or not cand:
        return float(ref == cand)
    return rouge_l_tokens(cand, ref)
