"""The non-neural baselines (tfidf, keyphrase): what they choose, that it matters, and their run folders."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmadapt.baselines import tfidf
from lmadapt.baselines.keyphrase import KeyphraseModel
from lmadapt.cli import app
from lmadapt.config import parse_recipe
from lmadapt.errors import RecipeError
from lmadapt.methods.keyphrase import KeyphraseMethod
from lmadapt.methods.tfidf import TfidfMethod
from lmadapt.metrics import keyword_metrics
from lmadapt.predict import predict_file
from lmadapt.runs import RunDir
from lmadapt.stages import run_stage
from lmadapt.utils.io import write_jsonl

# Chinese: label words hidden inside unspaced character runs (no word boundary to split on)
ZH_POS, ZH_NEG = ["很好", "满意", "喜欢", "推荐"], ["很差", "失望", "退货", "糟糕"]
ZH_FILLER = list("这个东西我们买了一次用起来觉得真的还是快递包装价格服务")


def chinese(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = rng.choice(["pos", "neg"])
        chars = rng.choices(ZH_FILLER, k=rng.randint(8, 16))
        chars.insert(rng.randrange(len(chars) + 1), rng.choice(ZH_POS if label == "pos" else ZH_NEG))
        out.append({"id": f"z{i}", "text": "".join(chars), "label": label})
    return out


def english(n: int, seed: int, positive_share=0.5, signal=1.0, noise=0.3) -> list[dict]:
    """Sentiment-like records: a positive carries a cue word with probability `signal`, a negative `noise`."""
    rng = random.Random(seed)
    filler = ["the", "movie", "was", "and", "plot", "actor", "film", "story", "very", "quite", "a", "it"]
    out = []
    for i in range(n):
        label = "pos" if rng.random() < positive_share else "neg"
        words = rng.choices(filler, k=rng.randint(5, 10))
        if rng.random() < (signal if label == "pos" else noise):
            words.insert(rng.randrange(len(words) + 1), rng.choice(["great", "superb", "lovely"]))
        out.append({"id": f"e{i}", "text": " ".join(words), "label": label})
    return out


def splits(tmp_path, make, sizes=(300, 80, 120)) -> dict:
    data = {}
    for (name, n), seed in zip(zip(("train", "eval", "test"), sizes, strict=True), (0, 1, 2), strict=True):
        write_jsonl(tmp_path / f"{name}.jsonl", make(n, seed))
        data[name] = str(tmp_path / f"{name}.jsonl")
    return data


def recipe(tmp_path, data: dict, method: dict, task: dict | None = None, name: str = "run"):
    raw = {
        "model": "unused",
        "task": task or {"type": "classify", "id": "id"},
        "method": method,
        "data": data,
        "train": {"seed": 0},
        "output": str(tmp_path / name),
    }
    return parse_recipe(raw)


def test_auto_analyzer_follows_the_script():
    cfg = TfidfMethod()
    zh = [r["text"] for r in chinese(50, 0)]
    en = [r["text"] for r in english(50, 0)]
    assert tfidf.feature_options(cfg, zh)[0] == [("char", (1, 2)), ("char", (1, 3))]
    # spaced text: word n-grams and char_wb n-grams compete in one cross-validation
    assert tfidf.feature_options(cfg, en)[0] == [("word", (1, 1)), ("word", (1, 2)), tfidf.AUTO_CHAR_WB]
    assert tfidf.feature_options(TfidfMethod(ngram_max=2), en)[0] == [("word", (1, 2))]  # range fixed
    mixed = [f"{z} with some English words" for z in zh]  # Chinese with a little English is still Chinese
    assert tfidf.unspaced_share(mixed) > tfidf.UNSPACED_SHARE
    assert tfidf.feature_options(TfidfMethod(analyzer="char_wb", ngram_max=3), en)[0] == [("char_wb", (1, 3))]


def test_chinese_needs_character_ngrams(tmp_path):
    """Word n-grams see each unspaced run as one token and learn nothing; character n-grams do."""
    data = splits(tmp_path, chinese)
    auto = RunDir(run_stage(recipe(tmp_path, data, {"type": "tfidf"}, name="auto")))
    word = RunDir(run_stage(recipe(tmp_path, data, {"type": "tfidf", "analyzer": "word"}, name="word")))
    auto_f1 = auto.read_metrics()["final"]["test"]["f1_macro"]
    word_f1 = word.read_metrics()["final"]["test"]["f1_macro"]
    assert auto_f1 > 0.95 and word_f1 < 0.75, (auto_f1, word_f1)
    fit = json.loads((auto.path / "model" / "tfidf.json").read_text(encoding="utf-8"))["fit"]
    assert fit["analyzer"] == "char" and fit["analyzer_why"].startswith("auto: 100%")
    # the reloaded model (vocabulary of Chinese character n-grams, no pickles) predicts exactly alike
    saved = [
        json.loads(line)["prediction"] for line in (auto.path / "predictions.jsonl").read_text().splitlines()
    ]
    out = tmp_path / "pred.jsonl"
    predict_file(auto.path, data["test"], out)
    assert [json.loads(line)["prediction"] for line in out.read_text().splitlines()] == saved
    assert not list(auto.path.rglob("*.pkl")) and not list(auto.path.rglob("*.joblib"))


# Chinese NER, one character per token: places follow 在, people come before 说; filler elsewhere.
ZH_PLACES, ZH_PEOPLE = ["北京", "上海", "广州", "深圳", "南京"], ["李明", "王芳", "张伟", "刘洋"]


def chinese_ner(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(1, 3)):
            filler = rng.choices(ZH_FILLER, k=rng.randint(2, 6))
            tokens += filler
            tags += ["O"] * len(filler)
            kind = rng.choice(["LOC", "PER"])
            name = rng.choice(ZH_PLACES if kind == "LOC" else ZH_PEOPLE)
            cue = ["在"] if kind == "LOC" else []
            after = ["说"] if kind == "PER" else []
            tokens += cue + list(name) + after
            tags += ["O"] * len(cue) + [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1) + ["O"] * len(after)
        out.append({"id": f"n{i}", "tokens": tokens, "tags": tags})
    return out


def test_window_features_are_offset_ngrams_of_the_tokens_around_each_token():
    feats = tfidf.window_features(["在", "北", "京"], 1, (1, 2))
    assert feats[0] == ["-1:<s>", "0:在", "1:北", "-1:<s> 在", "0:在 北"]
    assert feats[2] == ["-1:北", "0:京", "1:</s>", "-1:北 京", "0:京 </s>"]
    # word tokens add their first and last character (part-of-speech style tags)
    assert tfidf.window_features(["北京", "在"], 0, (1, 1)) == [["0:北京", "^北", "京$"], ["0:在"]]
    # cross-validation folds keep each sentence's tokens together
    groups = np.repeat(np.arange(9), [3, 1, 4, 2, 2, 5, 1, 1, 3])
    for train_rows, held_rows in tfidf.group_folds(groups, 3, seed=0):
        assert not set(groups[train_rows]) & set(groups[held_rows])
        assert len(train_rows) + len(held_rows) == len(groups)


def test_tag_task_classifies_each_character_from_its_window(tmp_path):
    """Per-character logistic regression on character n-gram windows: entity F1 on held-out sentences, C
    chosen over folds of whole sentences, a pickle-free model that reloads to the same predictions."""
    data = splits(tmp_path, chinese_ner, (120, 30, 60))
    task = {"type": "tag", "id": "id"}
    run = RunDir(
        run_stage(recipe(tmp_path, data, {"type": "tfidf", "C_grid": [0.1, 1.0], "cv_folds": 3}, task))
    )
    final = run.read_metrics()["final"]["test"]
    assert final["entity_f1"] > 0.95 and final["token_accuracy"] > 0.97, final
    saved = json.loads((run.path / "model" / "tfidf.json").read_text(encoding="utf-8"))
    assert saved["mode"] == "tag" and saved["analyzer"] == "window" and saved["window"] == 2
    assert saved["fit"]["analyzer_why"].startswith("tag task") and set(saved["fit"]["cv_macro_f1"]) == {
        "window 1-2",
        "window 1-3",
    }
    log = (run.path / "log.txt").read_text(encoding="utf-8")
    assert "tag scheme: IOB2" in log and "window 1-" in log
    lines = (run.path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    predictions = [json.loads(line)["prediction"] for line in lines]
    gold = chinese_ner(60, 2)
    assert [len(p) for p in predictions] == [len(r["tokens"]) for r in gold]
    out = tmp_path / "pred.jsonl"
    predict_file(run.path, data["test"], out)
    assert [json.loads(line)["prediction"] for line in out.read_text().splitlines()] == predictions
    assert not list(run.path.rglob("*.pkl")) and not list(run.path.rglob("*.joblib"))


@pytest.mark.parametrize(
    ("method", "task", "pattern"),
    [
        (
            {"type": "tfidf", "analyzer": "char"},
            {"type": "tag"},
            "'char' does not fit a tag task; use auto or window",
        ),
        (
            {"type": "tfidf", "analyzer": "window"},
            {"type": "classify"},
            "'window' does not fit a classify task",
        ),
    ],
)
def test_analyzer_that_does_not_fit_the_task_is_a_recipe_error(tmp_path, method, task, pattern):
    data = splits(tmp_path, chinese_ner if task["type"] == "tag" else chinese, (20, 5, 5))
    with pytest.raises(RecipeError, match=pattern):
        run_stage(recipe(tmp_path, data, method, task))
    assert not (tmp_path / "run").exists()  # nothing written


def wrapped(n: int, seed: int) -> list[dict]:
    """English-like records whose cue ('lovely' / 'awful') sits inside a word never seen twice
    ('qzlovelyk'): no word n-gram recurs, the character n-grams inside the word do."""
    rng = random.Random(seed)
    filler = ["the", "movie", "was", "and", "plot", "actor", "film", "story", "very", "quite", "a", "it"]

    def junk() -> str:
        return "".join(rng.choices("bcdfghjkmpqvxz", k=rng.randint(2, 3)))

    out = []
    for i in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.choices(filler, k=rng.randint(5, 10))
        cue = junk() + ("lovely" if label == "pos" else "awful") + junk()
        words.insert(rng.randrange(len(words) + 1), cue)
        out.append({"id": f"w{i}", "text": " ".join(words), "label": label})
    return out


def test_auto_cross_validates_char_wb_on_spaced_text(tmp_path):
    """On space-delimited text `auto` scores word and char_wb n-grams on train folds and keeps the better,
    and the run says which it chose and what every candidate scored."""
    data = splits(tmp_path, wrapped)
    auto = RunDir(run_stage(recipe(tmp_path, data, {"type": "tfidf", "C_grid": [1.0, 10.0]}, name="auto")))
    word = RunDir(run_stage(recipe(tmp_path, data, {"type": "tfidf", "analyzer": "word"}, name="word")))
    auto_f1 = auto.read_metrics()["final"]["test"]["f1_macro"]
    word_f1 = word.read_metrics()["final"]["test"]["f1_macro"]
    assert auto_f1 > 0.95 and word_f1 < 0.75, (auto_f1, word_f1)
    fit = json.loads((auto.path / "model" / "tfidf.json").read_text(encoding="utf-8"))["fit"]
    assert set(fit["cv_macro_f1"]) == {"word 1-1", "word 1-2", "char_wb 2-5"}
    assert fit["analyzer"] == "char_wb" and fit["ngram_range"] == [2, 5]
    assert fit["cv_macro_f1"]["char_wb 2-5"][str(fit["C"])] > max(fit["cv_macro_f1"]["word 1-2"].values())
    log = (auto.path / "log.txt").read_text(encoding="utf-8")
    assert "tfidf: char_wb 2-5-grams (auto: 0% of the letters" in log and "word 1-1: C 1.0" in log
    # the reloaded char_wb model predicts exactly like the fitted one
    saved = [
        json.loads(line)["prediction"] for line in (auto.path / "predictions.jsonl").read_text().splitlines()
    ]
    out = tmp_path / "pred.jsonl"
    predict_file(auto.path, data["test"], out)
    assert [json.loads(line)["prediction"] for line in out.read_text().splitlines()] == saved


def test_cross_validation_picks_the_best_c_and_ngrams():
    """The choice equals sklearn's own stratified, seeded 5-fold macro-F1 over the same options."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    records = english(200, 3, signal=0.6)
    texts, y = [r["text"] for r in records], np.array([int(r["label"] == "pos") for r in records])
    cfg = TfidfMethod(C_grid=[0.01, 1.0, 100.0])
    options, _ = tfidf.feature_options(cfg, texts)

    def featurize(option):
        vec = tfidf.vectorizer(option[0], option[1], cfg.max_features).fit(texts)
        return None, vec.transform(texts)

    option, C, scores = tfidf.select(cfg, options, featurize, y, seed=0)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    expected = {}
    for opt in options:
        x = featurize(opt)[1]
        for c in cfg.C_grid:
            clf = LogisticRegression(C=c, solver="liblinear", class_weight="balanced", random_state=0)
            expected[(opt, c)] = cross_val_score(clf, x, y, cv=folds, scoring="f1_macro").mean()
            assert scores[tfidf.option_name(opt)][str(c)] == pytest.approx(expected[(opt, c)], abs=1e-4)
    assert expected[(option, C)] == max(expected.values())
    assert len(set(np.round(list(expected.values()), 4))) > 1  # the choice is not among equals
    # a C set in the recipe, with one n-gram length, is used as is: no cross-validation
    fixed = TfidfMethod(C=3.0, ngram_max=1)
    assert tfidf.select(fixed, tfidf.feature_options(fixed, texts)[0], featurize, y, 0) == (
        ("word", (1, 1)),
        3.0,
        {},
    )


def test_balanced_class_weights_rescue_the_minority_class(tmp_path):
    """13% positives with a weak cue: unweighted, the model mostly predicts the majority."""
    data = splits(
        tmp_path, lambda n, s: english(n, s, positive_share=0.13, signal=0.7, noise=0.05), (400, 100, 300)
    )
    results = {}
    for weight in ("balanced", "none"):
        method = {"type": "tfidf", "C": 0.3, "ngram_max": 1, "class_weight": weight}
        run = RunDir(run_stage(recipe(tmp_path, data, method, name=weight)))
        report = json.loads((run.path / "report.json").read_text())["test"]["per_class"]
        results[weight] = (run.read_metrics()["final"]["test"]["f1_macro"], report["pos"]["recall"])
        log = (run.path / "log.txt").read_text()
        assert "pos: precision" in log and "recall" in log  # per-class scores in the log too
    assert results["balanced"][1] > results["none"][1] + 0.3, results
    assert results["balanced"][0] > results["none"][0] + 0.1, results


def test_multi_label_reports_per_label_scores(tmp_path):
    def make(n, seed):
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            labels = sorted(rng.sample(["city", "person", "food"], rng.randint(0, 2)))
            cue = {"city": "paris", "person": "mary", "food": "bread"}
            words = rng.choices(["the", "a", "it", "was", "and", "so"], k=6) + [cue[x] for x in labels]
            rng.shuffle(words)
            out.append({"text": " ".join(words), "label": labels})
        return out

    data = splits(tmp_path, make, (200, 50, 60))
    task = {"type": "classify", "multi_label": True}
    run = RunDir(run_stage(recipe(tmp_path, data, {"type": "tfidf", "C_grid": [1.0, 10.0]}, task)))
    assert run.read_metrics()["final"]["test"]["f1_macro"] > 0.9
    per_label = json.loads((run.path / "report.json").read_text())["test"]["per_class"]
    assert set(per_label) == {"city", "food", "person"} and all(s["recall"] > 0.8 for s in per_label.values())


def test_old_run_folders_without_an_analyzer_load_as_word_ngrams(tmp_path):
    data = splits(tmp_path, english, (120, 30, 40))
    run = RunDir(run_stage(recipe(tmp_path, data, {"type": "tfidf", "C": 1.0, "ngram_max": 2})))
    path = run.path / "model" / "tfidf.json"
    record = json.loads(path.read_text())
    before = tfidf.TfidfModel.load(run.path).predict([r["text"] for r in english(40, 2)])
    for key in ("analyzer", "fit"):
        del record[key]
    path.write_text(json.dumps(record))
    model = tfidf.TfidfModel.load(run.path)
    assert model.vectorizer.analyzer == "word"
    assert model.predict([r["text"] for r in english(40, 2)]) == before


@pytest.mark.parametrize(
    ("method", "task", "pattern"),
    [
        (
            {"type": "tfidf"},
            {"type": "keywords"},
            r"method\.type: method tfidf serves classify, pair, tag and span tasks, not task type 'keywords'",
        ),
        ({"type": "keyphrase"}, {"type": "classify"}, r"method keyphrase serves keywords tasks"),
        ({"type": "tfidf", "C_grid": [0, 1]}, {"type": "classify"}, r"method\.C_grid: every C must be > 0"),
        (
            {"type": "tfidf", "ngram_min": 3, "ngram_max": 2},
            {"type": "classify"},
            r"ngram_max \(2\) is below",
        ),
        ({"type": "tfidf", "analyzer": "chars"}, {"type": "classify"}, r"method\.analyzer"),
        ({"type": "tfidf", "class_weight": "auto"}, {"type": "classify"}, r"method\.class_weight"),
    ],
)
def test_bad_baseline_recipes_are_clear_errors(tmp_path, method, task, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"model": "x", "task": task, "method": method, "data": {"train": "t.jsonl"}}))
    result = CliRunner().invoke(app, ["recipes", "check", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.search(pattern, " ".join(result.output.split())), result.output


def test_baseline_under_another_stage_is_a_recipe_error():
    with pytest.raises(RecipeError, match="method tfidf is a baseline that runs as stage finetune, not sft"):
        parse_recipe({"model": "x", "task": {"type": "sft"}, "method": {"type": "tfidf"}, "stage": "sft"})


def test_too_few_examples_to_cross_validate_names_the_fix(tmp_path):
    data = splits(tmp_path, english, (3, 5, 5))
    with pytest.raises(RecipeError, match="too few to cross-validate; set method.C"):
        run_stage(recipe(tmp_path, data, {"type": "tfidf"}))
    assert not (tmp_path / "run").exists()


# --- keyphrase ------------------------------------------------------------------------------------------
DOCS = [
    ["Graph neural networks for protein folding", "We study graph neural networks. The results show gains."],
    ["A study of sleep in mice", "Sleep quality was measured. The results show sleep matters in mice."],
    ["Results of a survey", "We study the results of a survey of nurses. The study shows results."],
    ["Deep learning for sleep staging", "Deep learning models score sleep stages. We study the results."],
]


def test_keyphrase_candidates_and_ranking():
    model = KeyphraseModel.fit(KeyphraseMethod(top_k=3, min_df=1), DOCS)
    keys = {k for k, _, _ in model.candidates(["SARS-CoV-2 infection, in the COVID-19 era"])}
    # hyphenated words stay whole; no phrase crosses a comma or a stop word; digits alone are not phrases
    assert keys == {"sars cov 2", "sars cov 2 infection", "infection", "covid 19", "covid 19 era", "era"}
    assert model.df["results"] == 4 and model.df["graph neural networks"] == 1
    top = model.extract(DOCS[0])
    # the rare title phrase wins; 'results' (in every document) is not chosen; sub-phrases are skipped
    assert top[0] == "Graph neural networks" and "results" not in [t.lower() for t in top]
    assert "neural networks" not in [t.lower() for t in top] and len(top) == 3
    # the title counts `first_field_weight` times: at 0 the title alone cannot win
    untitled = KeyphraseModel(
        model.cfg | {"first_field_weight": 0.0}, model.documents, model.df, model.stop_words
    )
    assert untitled.extract([DOCS[0][0], "Zebrafish data."])[0] == "Zebrafish data"
    assert model.extract([DOCS[0][0], "Zebrafish data."])[0] == "Graph neural networks"


def test_keyphrase_run_scores_like_the_neural_runs_and_reloads(tmp_path):
    terms = ["graph neural network", "protein folding", "sleep staging", "gene expression", "drug safety"]

    def make(n, seed):
        rng = random.Random(seed)
        out = []
        for i in range(n):
            keys = rng.sample(terms, 2)
            body = f"We study {keys[0]} and {keys[1]}. The results of {keys[0]} are shown in the study."
            out.append({"id": f"d{i}", "title": f"On {keys[0]}", "abstract": body, "keywords": keys})
        return out

    data = splits(tmp_path, make, (60, 20, 30))
    task = {"type": "keywords", "id": "id"}
    run = RunDir(run_stage(recipe(tmp_path, data, {"type": "keyphrase", "top_k": 2, "min_df": 1}, task)))
    final = run.read_metrics()["final"]["test"]
    rows = [json.loads(line) for line in (run.path / "predictions.jsonl").read_text().splitlines()]
    assert final == pytest.approx(keyword_metrics([r["gold"] for r in rows], [r["prediction"] for r in rows]))
    assert final["keyword_f1"] > 0.4  # the rare terms beat 'results' and 'study'
    reloaded = KeyphraseModel.load(run.path)
    test = [json.loads(line) for line in Path(data["test"]).read_text(encoding="utf-8").splitlines()]
    assert [reloaded.extract([r["title"], r["abstract"]]) for r in test] == [r["prediction"] for r in rows]
