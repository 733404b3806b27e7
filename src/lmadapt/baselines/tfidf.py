"""`method: tfidf`: TF-IDF features + logistic regression, the non-neural floor for classify and pair tasks.

Writes the same run folder as a neural finetune. The fitted model is saved without pickles:
`model/tfidf.json` (vocabulary, idf, label set) and `model/logreg.safetensors` (weights, bias), and
predictions always go through `TfidfModel.scores`, so a reloaded model predicts exactly like the fitted one.
Pairs are featurised as [tfidf(a), tfidf(b), tfidf(a) * tfidf(b)] (the product marks shared terms).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import RecipeError
from ..runs import RunDir, timer
from ..utils.io import atomic_path
from ..utils.seed import seed_everything

VOCAB_FILE = "tfidf.json"
WEIGHTS_FILE = "logreg.safetensors"


class TfidfModel:
    """A fitted vectorizer plus linear weights [n_out, n_features] and bias [n_out]."""

    def __init__(self, vectorizer, weights: np.ndarray, bias: np.ndarray, labels: list[str], mode: str):
        self.vectorizer, self.weights, self.bias, self.labels, self.mode = (
            vectorizer,
            weights,
            bias,
            labels,
            mode,
        )

    def features(self, texts: list[str] | list[tuple[str, str]]):
        from scipy.sparse import hstack

        if self.mode != "pair":
            return self.vectorizer.transform(texts)
        a = self.vectorizer.transform([t[0] for t in texts])
        b = self.vectorizer.transform([t[1] for t in texts])
        return hstack([a, b, a.multiply(b)]).tocsr()

    def scores(self, texts) -> np.ndarray:
        return np.asarray(self.features(texts) @ self.weights.T) + self.bias

    def predict(self, texts) -> list:
        scores = self.scores(texts)
        if self.mode == "multi_label":
            return [[label for label, s in zip(self.labels, row, strict=True) if s > 0] for row in scores]
        if scores.shape[1] == 1:  # binary logistic regression: one score, positive class = labels[1]
            return [self.labels[int(s > 0)] for s in scores[:, 0]]
        return [self.labels[int(i)] for i in scores.argmax(1)]

    def save(self, run_dir: Path) -> Path:
        from safetensors.numpy import save_file

        vec = self.vectorizer
        record = {
            "labels": self.labels,
            "mode": self.mode,
            "ngram_range": list(vec.ngram_range),
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
        from sklearn.feature_extraction.text import TfidfVectorizer

        folder = Path(run_dir) / "model"
        if not (folder / VOCAB_FILE).is_file():
            raise RecipeError(f"{folder / VOCAB_FILE} not found: not a finished tfidf run")
        record = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
        vec = TfidfVectorizer(
            vocabulary=record["vocabulary"], ngram_range=tuple(record["ngram_range"]), sublinear_tf=True
        )
        vec.idf_ = np.asarray(record["idf"])
        tensors = load_file(str(folder / WEIGHTS_FILE))
        return cls(vec, tensors["weights"], tensors["bias"], record["labels"], record["mode"])


def inputs(task, records: list[dict]) -> list:
    """The text (classify) or (text_a, text_b) pairs (pair) of each record."""
    return [task.texts(r) for r in records] if task.cfg.type == "pair" else [task.text(r) for r in records]


def fit(task, records: list[dict], method_cfg, seed: int) -> TfidfModel:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    mode = "pair" if task.cfg.type == "pair" else "multi_label" if task.multi_label else "single"
    vec = TfidfVectorizer(
        max_features=method_cfg.max_features, ngram_range=(1, method_cfg.ngram_max), sublinear_tf=True
    )
    texts = inputs(task, records)
    vec.fit([t for pair in texts for t in pair] if mode == "pair" else texts)
    model = TfidfModel(vec, np.zeros((0, 0)), np.zeros(0), task.labels, mode)
    x = model.features(texts)
    golds = [task.gold(r) for r in records]
    if mode == "multi_label":  # one binary classifier per label
        weights, bias = [], []
        for label in task.labels:
            y = np.array([label in g for g in golds], dtype=int)
            if y.min() == y.max():  # a label always (never) present: a constant score
                weights.append(np.zeros(x.shape[1]))
                bias.append(10.0 if y[0] else -10.0)
                continue
            clf = LogisticRegression(C=method_cfg.C, max_iter=1000, random_state=seed).fit(x, y)
            weights.append(clf.coef_[0])
            bias.append(clf.intercept_[0])
        model.weights, model.bias = np.array(weights), np.array(bias)
    else:
        y = np.array([task.labels.index(g) for g in golds])
        if len(set(y)) < 2:
            raise RecipeError("method tfidf: the training data has a single label; nothing to learn")
        clf = LogisticRegression(C=method_cfg.C, max_iter=1000, random_state=seed).fit(x, y)
        coef, intercept = clf.coef_, clf.intercept_
        if len(clf.classes_) != len(task.labels):  # labels absent from train: never predicted
            full = np.full((len(task.labels), x.shape[1]), 0.0)
            full_b = np.full(len(task.labels), -1e9)
            if coef.shape[0] == 1:  # binary over two of the labels: expand to two rows
                coef, intercept = (
                    np.vstack([-coef / 2, coef / 2]),
                    np.array([-intercept[0] / 2, intercept[0] / 2]),
                )
            full[clf.classes_], full_b[clf.classes_] = coef, intercept
            coef, intercept = full, full_b
        model.weights, model.bias = (
            np.asarray(coef, dtype=np.float64),
            np.asarray(intercept, dtype=np.float64),
        )
    return model


def run(recipe, resume: bool = False) -> Path:
    """Fit on train, score eval and test, write the run folder (run by `stages.run_stage` like a stage)."""
    from ..data.splits import load_splits
    from ..evaluation import cost_record, evaluate_splits, write_results
    from ..plots import save_plots
    from ..tasks import get_task

    task = get_task(recipe.task)
    if recipe.task.type not in ("classify", "pair"):
        raise RecipeError(f"method tfidf supports classify and pair tasks, not '{recipe.task.type}'")
    seed_everything(recipe.train.seed)
    splits = load_splits(recipe, task.fields(True))
    if not splits["train"]:
        raise RecipeError("data.train: the tfidf baseline needs training examples")
    run_dir = RunDir.start(recipe, resume)  # only now: bad data leaves nothing behind
    recipe.task.labels = task.fit_labels(splits["train"])
    run_dir.write_config(recipe)
    with timer() as train_time:
        model = fit(task, splits["train"], recipe.method, recipe.train.seed)
    run_dir.log(f"tfidf: {model.weights.shape[1]:,} features, fitted in {train_time():.1f}s")
    evaluation = evaluate_splits(
        task, splits, lambda name, records: (model.predict(inputs(task, records)), None),
        recipe.eval.metrics, run_dir.log,
    )  # fmt: skip
    model.save(run_dir.path)
    save_plots(run_dir / "plots", [], evaluation.shown_report, task.best_metric)
    size = int(model.weights.size + model.bias.size)
    cost = cost_record(train_time(), len(splits["train"]), size, size, evaluation.examples_per_s)
    write_results(run_dir, evaluation, [], cost)
    return run_dir.commit()
