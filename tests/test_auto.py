"""`lmadapt auto` on a tiny random BERT and tfidf (no downloads, no catalog models: LMADAPT_HOME is empty).

Data understanding (odd field names, Chinese text, pairs), a tokenizer that cannot read the text ruled out,
bad input (exit 2, nothing written), and real `lmadapt auto` processes: one killed and re-run (the study
continues: no finished trial repeated or retrained, the same winner), two sharing one SQLite study.
Budgets are checked through what each trial recorded (its predicted seconds against the seconds left when
it started), never by timing the test.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast
from typer.testing import CliRunner

from lmadapt.auto.plan import model_candidates
from lmadapt.auto.understand import finish, read_file, stratified_split, understand
from lmadapt.cli import app
from lmadapt.config.auto import parse_budget
from lmadapt.errors import DataError, RecipeError
from lmadapt.runs import RunDir

POS = ["good", "great", "superb", "lovely"]
NEG = ["bad", "awful", "poor", "boring"]
FILLER = ["the", "movie", "was", "and", "plot", "actor", "film", "story", "very", "quite", "a", "it"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + sorted(set(POS + NEG + FILLER))
ZH_POS, ZH_NEG = ["很好", "喜欢", "满意"], ["很差", "失望", "退货"]
ZH_FILLER = ["这本书", "物流", "包装", "价格", "质量", "东西", "客服", "我们"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    """A tiny random BERT with an English WordPiece vocabulary, saved as a local model folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)})
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(autouse=True)
def empty_home(tmp_path, monkeypatch):
    """No pulled catalog model is a candidate: only tfidf and the tiny BERT a test names."""
    monkeypatch.setenv("LMADAPT_HOME", str(tmp_path / "home"))


def reviews(n: int, seed: int, text: str = "Kommentar", label: str = "Stimmung") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = rng.random() < 0.5
        words = rng.choices(FILLER, k=rng.randint(3, 7))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POS if good else NEG))
        rows.append({"nr": f"r{i}", text: " ".join(words), label: "positiv" if good else "negativ"})
    return rows


def zh_reviews(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = rng.random() < 0.6
        words = rng.choices(ZH_FILLER, k=rng.randint(2, 5)) + [rng.choice(ZH_POS if good else ZH_NEG)]
        rng.shuffle(words)
        rows.append(
            {"编号": str(1000 + i), "评论": "，".join(words) + "。", "情感": "正面" if good else "负面"}
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------ understanding
def test_csv_with_chinese_field_names_and_text(tmp_path):
    path = write_csv(tmp_path / "评论.csv", zh_reviews(120, 0))
    records = read_file(path, "TRAIN")
    u = understand(records, str(path))
    assert (u.task, u.text, u.label) == ("classify", ["评论"], "情感")  # 编号 is an id: every value differs
    finish(u, records, [], [], str(path))
    assert u.script == "cjk" and u.labels == ["正面", "负面"]
    assert sum(u.counts.values()) == 120 and u.counts["正面"] > u.counts["负面"]
    assert u.balance().startswith("imbalanced") or u.balance().startswith("balanced")


def test_jsonl_pairs_by_alike_names_and_title_abstract_joined(tmp_path):
    rng = random.Random(0)
    pairs = [{"frage_1": " ".join(rng.choices(FILLER, k=6)), "frage_2": " ".join(rng.choices(FILLER, k=6)),
              "gleich": rng.choice(["ja", "nein"])} for _ in range(60)]  # fmt: skip
    u = understand(read_file(write_jsonl(tmp_path / "p.jsonl", pairs), "TRAIN"), "p.jsonl")
    assert (u.task, u.text, u.label) == ("pair", ["frage_1", "frage_2"], "gleich")
    assert u.task_section() == {"type": "pair", "text_a": "frage_1", "text_b": "frage_2", "label": "gleich"}

    papers = [{"Titel": " ".join(rng.choices(FILLER, k=5)), "Zusammenfassung": " ".join(rng.choices(FILLER, k=30)),
               "Klasse": rng.choice(["a", "b", "c"])} for _ in range(60)]  # fmt: skip
    records = read_file(write_jsonl(tmp_path / "t.jsonl", papers), "TRAIN")
    u = understand(records, "t.jsonl")
    assert (u.task, u.text, u.label) == ("classify", ["Titel", "Zusammenfassung"], "Klasse")
    assert any("joined" in r for r in u.reasons)
    forced = understand(records, "t.jsonl", task="pair")  # the override wins, and says so
    assert forced.task == "pair" and forced.text == ["Titel", "Zusammenfassung"]
    assert understand(records, "t.jsonl", text=["Zusammenfassung"], label="Klasse").text == [
        "Zusammenfassung"
    ]


def test_stratified_split_keeps_each_label_share(tmp_path):
    rows = [{"t": f"x{i}", "y": "a" if i % 4 else "b"} for i in range(400)]  # 75% a, 25% b
    train, held = stratified_split(rows, "y", 0.2, 2000, seed=0)
    assert len(held) == 80 and len(train) == 320
    assert sum(r["y"] == "b" for r in held) == 20
    assert stratified_split(rows, "y", 0.2, 2000, seed=0) == (train, held)  # seeded


def test_budget_durations():
    assert parse_budget("20m") == 1200 and parse_budget("1h30m") == 5400 and parse_budget("90s") == 90
    assert parse_budget("45") == 45
    for bad in ("", "soon", "0m", "-5m"):
        with pytest.raises(RecipeError, match="--budget"):
            parse_budget(bad)


def test_a_tokenizer_that_cannot_read_chinese_is_no_candidate(tiny_bert):
    said = []
    texts = [r["评论"] for r in zh_reviews(50, 0)]
    assert model_candidates([tiny_bert], texts, said.append) == []
    assert any("unknown tokens: not a candidate" in s and "100%" in s for s in said)
    english = model_candidates([tiny_bert], [r["Kommentar"] for r in reviews(50, 0)], said.append)
    assert [c.method for c in english] == ["freeze", "lora", "full"]


# ------------------------------------------------------------------------------------------ bad input
def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    one = write_jsonl(tmp_path / "one.jsonl", [r | {"Stimmung": "positiv"} for r in reviews(50, 0)])
    many = write_jsonl(tmp_path / "many.jsonl", [{"text": f"{r['Kommentar']} {i}", "code": f"K{i % 3000:04d}"}
                                                  for i, r in enumerate(reviews(6000, 0))])  # fmt: skip
    good = write_jsonl(tmp_path / "good.jsonl", reviews(200, 0))
    return {
        "empty": ([str(empty)], "no records"),
        "one class": ([str(one)], "single class"),
        "thousands of labels": ([str(many)], "too many to be classes"),
        "thousands of labels, named": ([str(many), "--label", "code"], "3,000 distinct values"),
        "no such field": ([str(good), "--label", "Sentiment"], "no field 'Sentiment'"),
        "budget shorter than the cheapest": ([str(good), "--budget", "1s"], "give a longer --budget"),
        "bad budget": ([str(good), "--budget", "soon"], "expected a duration"),
        "bad storage": ([str(good), "--storage", "nosuchdb://x"], "--storage nosuchdb://x"),
        "storage with a password": (  # said without the password
            [str(good), "--storage", "postgresql://u:secret@127.0.0.1:9/db"],
            "--storage postgresql://u:***@127.0.0.1:9/db",
        ),
    }


def test_bad_input_is_a_clear_error_with_exit_2_and_nothing_written(tmp_path):
    runner = CliRunner()
    for case, (args, message) in _bad_inputs(tmp_path).items():
        output = tmp_path / f"out-{case.replace(' ', '-')}"
        budget = [] if "--budget" in args else ["--budget", "5m"]
        result = runner.invoke(app, ["auto", *args, *budget, "--output", str(output)])
        assert result.exit_code == 2, (case, result.output)
        assert "error:" in result.output and message in " ".join(result.output.split()), (case, result.output)
        assert "Traceback" not in result.output and "secret" not in result.output
        assert not output.exists(), case


def test_a_file_that_is_no_classification_says_what_it_looks_like(tmp_path):
    rows = [{"frage": " ".join(random.Random(i).choices(FILLER, k=8)), "antwort": " ".join(random.Random(-i).choices(FILLER, k=9))} for i in range(80)]  # fmt: skip
    with pytest.raises(DataError, match="looks like a generate task"):
        from lmadapt.auto import run_auto

        run_auto(write_jsonl(tmp_path / "qa.jsonl", rows), 300, tmp_path / "out", say=lambda _: None)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ real processes
def auto_cmd(train: Path, output: Path, model: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmadapt", "auto", str(train), "--budget", "15m", "--output", str(output),
            "--model", model, "--heartbeat", "1", *extra]  # fmt: skip


def study_of(output: Path) -> optuna.Study:
    return optuna.load_study(study_name="auto", storage=f"sqlite:///{output / 'study.db'}")


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials() if t.state in done and "skipped" not in t.user_attrs]


def check_budget_kept(study: optuna.Study) -> None:
    """Every trial that ran was predicted (from measured costs) to finish in the seconds left at its start."""
    ran = [t for t in study.get_trials() if "predicted_s" in t.user_attrs]
    assert ran and all(t.user_attrs["predicted_s"] <= t.user_attrs["left_s"] for t in ran)


def test_killed_auto_rerun_continues_the_study_without_repeating_a_trial(tmp_path, tiny_bert):
    train = write_jsonl(tmp_path / "train.jsonl", reviews(240, 0))
    test = write_jsonl(tmp_path / "test.jsonl", reviews(60, 2))
    output = tmp_path / "auto"
    env = os.environ | {"LMADAPT_HOME": str(tmp_path / "home")}
    cmd = auto_cmd(train, output, tiny_bert, "--test", str(test), "--trials", "5")

    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while (
            proc.poll() is None
        ):  # kill the whole process group (auto and its trial) after 2 finished trials
            if (output / "study.db").exists():
                try:
                    if len(finished(study_of(output))) >= 2:
                        break
                except (KeyError, Exception):  # the study is being created
                    pass
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "auto ended before it could be killed"
    before = {t.number: t for t in finished(study_of(output))}
    started = {n: json.loads((output / "trials" / t.user_attrs["name"] / "status.json").read_text())["started"]
               for n, t in before.items() if t.state == optuna.trial.TrialState.COMPLETE}  # fmt: skip
    assert not (output / "winner").exists()

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "continuing the study" in rerun.stdout
    study = study_of(output)
    after = {t.number: t for t in finished(study)}
    assert len(after) >= 5
    for number, trial in before.items():  # kept as they were: not repeated, not retrained
        assert after[number].params == trial.params and after[number].value == trial.value
    for number, stamp in started.items():
        status = json.loads(
            (output / "trials" / after[number].user_attrs["name"] / "status.json").read_text()
        )
        assert status["started"] == stamp
    keys = [(tuple(sorted(t.params.items())), t.user_attrs["params"]["train"]) for t in after.values()]
    assert len(set(keys)) == len(keys), "a trial was repeated"
    assert not [
        t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING
    ]  # the killed one failed
    check_budget_kept(study)

    best = max(
        (t for t in after.values() if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: (t.value, -t.number),
    )
    marker = json.loads((output / "winner.json").read_text())
    assert marker["trial"] == best.number and marker["refit_done"]
    winner = output / "winner"
    assert RunDir(winner).is_finished()
    # the winner learnt from every labelled record: the carved eval went back into its training data
    metrics = json.loads((winner / "metrics.json").read_text())
    assert metrics["cost"]["train_examples"] == 240
    assert yaml.safe_load((winner / "config.yaml").read_text())["data"]["eval"] is None
    assert set(metrics["final"]) == {"test"} and metrics["final"]["test"]["f1_macro"] > 0.9
    board = json.loads((output / "leaderboard.json").read_text())
    assert {r["name"][:4] for r in board["rows"]} == {f"t{n:03d}" for n in after} | {
        f"t{t.number:03d}"
        for t in study.get_trials()
        if t.state == optuna.trial.TrialState.FAIL and "recipe" in t.user_attrs
    }
    assert (output / "leaderboard.png").stat().st_size > 0
    recipe = (output / "winner.yaml").read_text(encoding="utf-8")
    assert "Kommentar" in recipe and "Stimmung" in recipe

    # the winner is an ordinary run folder: predict reads it
    preds = tmp_path / "preds.jsonl"
    predicted = subprocess.run([sys.executable, "-m", "lmadapt", "predict", str(winner), "--input", str(test),
                                "--output", str(preds)], env=env, capture_output=True, text=True)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert len(preds.read_text().splitlines()) == 60

    # a third run of a finished study trains nothing and names the same winner
    again = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(finished(study_of(output))) == len(after)
    assert json.loads((output / "winner.json").read_text())["trial"] == best.number
    assert f"winner: trial {best.number} " in again.stdout


def test_two_workers_share_one_sqlite_study(tmp_path, tiny_bert):
    train = write_jsonl(tmp_path / "train.jsonl", reviews(240, 0))
    output = tmp_path / "auto"
    env = os.environ | {"LMADAPT_HOME": str(tmp_path / "home")}
    # the study in a database of its own (as workers on several machines would share one), not in OUTPUT
    shared = tmp_path / "db" / "studies.db"
    shared.parent.mkdir()
    cmd = auto_cmd(
        train, output, tiny_bert, "--trials", "6", "--no-refit", "--storage", f"sqlite:///{shared}"
    )
    workers = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [w.communicate()[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outs)
    assert not (output / "study.db").exists()
    study = optuna.load_study(study_name=f"auto:{output}", storage=f"sqlite:///{shared}")
    done = finished(study)
    assert len(done) >= 6
    assert len({t.user_attrs["worker"] for t in done}) == 2, "both workers ran trials of the one study"
    folders = [t.user_attrs["name"] for t in done]
    assert len(set(folders)) == len(folders) and all(
        RunDir(output / "trials" / f).is_finished() for f in folders
    )
    keys = [(tuple(sorted(t.params.items())), t.user_attrs["params"]["train"]) for t in done]
    assert len(set(keys)) == len(keys)
    winners = {line for o in outs for line in o.splitlines() if line.startswith("winner: trial")}
    assert len(winners) == 1, winners
    check_budget_kept(study)
    # --no-refit: the winner is its trial's model, as the search scored it on eval
    assert not json.loads((output / "winner.json").read_text())["refit_done"]
    assert set(json.loads((output / "winner" / "metrics.json").read_text())["final"]) == {"eval"}


def test_a_stage_auto_recipe_runs_the_search_and_its_mistakes_name_the_line(tmp_path):
    """`lmadapt train auto.yaml` is `lmadapt auto` with the recipe's keys; a bad key or budget is exit 2 with
    the file and line, and nothing is written."""
    train = write_csv(tmp_path / "train.csv", reviews(120, 0))
    test = write_jsonl(tmp_path / "test.jsonl", reviews(40, 2))
    output = tmp_path / "auto"
    recipe = tmp_path / "auto.yaml"
    recipe.write_text(
        f"stage: auto\ndata: {{train: {train}, test: {test}}}\ntask: {{text: Kommentar, label: Stimmung}}\n"
        f"auto: {{budget: 5m, trials: 1}}\noutput: {output}\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("budget: 5m", "budget: soon, epochs: 3"), encoding="utf-8")
    result = runner.invoke(app, ["train", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    said = " ".join(result.output.split())
    assert f"{bad}:4" in said and "auto.budget" in said and "unknown key 'auto.epochs'" in said
    assert not output.exists()

    result = runner.invoke(app, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "text Kommentar -> label Stimmung" in result.output
    assert RunDir.open_complete(output / "winner", "test").path.is_dir()
    winner = (output / "winner.yaml").read_text(encoding="utf-8")
    assert "type: tfidf" in winner and "stage: finetune" in winner  # the winning training recipe
    assert json.loads((output / "winner" / "metrics.json").read_text())["final"]["test"]["f1_macro"] > 0.5


def test_a_decoder_is_also_a_few_shot_prompting_candidate_and_can_win(tmp_path):
    """A decoder brings two families: LoRA training and few-shot prompting (no training), each opening on its
    own. A prompting winner is the same prompting answering the test split; predict refuses a prompt run."""
    from lmadapt.auto import run_auto
    from lmadapt.auto.results import write_winner
    from tiny_lm import save_tiny

    decoder = str(save_tiny(tmp_path / "tiny-decoder"))
    train = write_jsonl(tmp_path / "train.jsonl", reviews(90, 0))  # few labels: prompting is tried
    test = write_jsonl(tmp_path / "test.jsonl", reviews(30, 2))
    output = tmp_path / "auto"
    said: list[str] = []
    run_auto(train, 600, output, test_file=test, models=[decoder], max_trials=3, say=said.append, heartbeat=1)
    plan = json.loads((output / "plan.json").read_text())
    assert {"tfidf", "tiny-decoder:lora", "tiny-decoder:fewshot"} <= set(plan["candidates"])
    assert set(plan["first_round"]) == {"tfidf", "tiny-decoder:lora", "tiny-decoder:fewshot"}  # each family
    fewshot = next(t for t in finished(study_of(output)) if t.params["candidate"] == "tiny-decoder:fewshot")
    assert fewshot.value is not None and fewshot.user_attrs["params"]["k"] == 4

    winner = tmp_path / "prompt-winner"
    write_winner(Path(fewshot.user_attrs["recipe"]), winner, str(test), said.append)
    final = json.loads((winner / "metrics.json").read_text())["final"]
    assert final["eval"]["f1_macro"] == pytest.approx(fewshot.value) and "f1_macro" in final["test"]
    result = CliRunner().invoke(app, ["predict", str(winner), "--input", str(test), "--output", str(tmp_path / "p.jsonl")])  # fmt: skip
    assert result.exit_code == 2 and "a prompt run; predict reads finetune runs" in " ".join(
        result.output.split()
    )


def _study_with(results: dict[str, float]) -> optuna.Study:
    """An in-memory study holding one complete trial per candidate name: value, and the model it ran."""
    study = optuna.create_study(direction="maximize")
    for name, value in results.items():
        model = None if name == "tfidf" else name.split(":")[0]
        study.add_trial(optuna.trial.create_trial(
            params={"candidate": name}, distributions={"candidate": optuna.distributions.CategoricalDistribution([name])},
            value=value, user_attrs={"model": model or "-", "params": {"train": 400}, "state": "complete"},
        ))  # fmt: skip
    return study


def test_costlier_methods_open_near_the_leader_and_subset_candidates_wait_for_complete_ones():
    from lmadapt.auto.plan import Candidate
    from lmadapt.auto.search import cheapest_methods, runnable

    def cand(name, model, method, train_s, max_train):
        return Candidate(name, model, method, "encoder", train_s=train_s, infer_s=0.01, max_train=max_train)

    candidates = {c.name: c for c in (
        cand("tfidf", None, "tfidf", 0.001, 400), cand("enc:freeze", "enc", "freeze", 0.1, 400),
        cand("enc:full", "enc", "full", 0.2, 400), cand("dec:lora", "dec", "lora", 0.8, 90),
    )}  # fmt: skip
    cheapest = cheapest_methods(candidates, 100)
    assert cheapest == {"None": "tfidf", "enc": "enc:freeze", "dec": "dec:lora"}

    def check(study, name):
        return runnable(candidates[name], study, cheapest, 10_000, 400, 100, candidates)

    near = _study_with({"tfidf": 0.900, "enc:freeze": 0.885})  # enc 1.5 points behind: its full opens
    assert check(near, "enc:full")[0] is not None
    c, why = check(near, "dec:lora")  # a subset candidate waits for the open complete one
    assert c is None and "trains on a subset (90 examples): after enc:full" in why
    assert (
        check(_study_with({"tfidf": 0.9, "enc:freeze": 0.885, "enc:full": 0.91}), "dec:lora")[0] is not None
    )

    far = _study_with({"tfidf": 0.900, "enc:freeze": 0.850})  # 5 points behind: full stays closed
    c, why = check(far, "enc:full")
    assert c is None and "within 0.02 of the leader" in why
    assert check(far, "dec:lora")[0] is not None  # nothing open is waiting


def test_a_trial_is_pruned_only_against_trials_of_its_own_candidate():
    from lmadapt.auto.search import pruner

    study = optuna.create_study(direction="maximize", pruner=pruner())
    names = ["enc:freeze", "enc:full"]

    def run(name: str, curve: list[float]) -> bool:
        """A trial of `name` reporting `curve` epoch by epoch; whether it was pruned."""
        study.enqueue_trial({"candidate": name})
        trial = study.ask({"candidate": optuna.distributions.CategoricalDistribution(names)})
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return True
        study.tell(trial, curve[-1])
        return False

    assert not run("enc:freeze", [0.93, 0.94, 0.95])
    assert not run("enc:freeze", [0.94, 0.95, 0.95])
    # full fine-tuning is far behind freeze after one epoch; its first trial runs its course all the same
    assert not run("enc:full", [0.78, 0.93, 0.96])
    assert run("enc:full", [0.60, 0.90, 0.97])  # behind its own candidate's first trial after epoch 1
    assert run("enc:freeze", [0.80, 0.90, 0.90])  # behind freeze's own two


def test_each_open_method_runs_once_at_its_default_before_tpe_samples():
    from lmadapt.auto.plan import Candidate
    from lmadapt.auto.search import cheapest_methods, untried

    candidates = {c.name: c for c in (
        Candidate("tfidf", None, "tfidf", train_s=0.001, infer_s=0.01, max_train=400),
        Candidate("enc:freeze", "enc", "freeze", "encoder", train_s=0.1, infer_s=0.01, max_train=400),
        Candidate("enc:lora", "enc", "lora", "encoder", train_s=0.15, infer_s=0.01, max_train=400),
        Candidate("enc:full", "enc", "full", "encoder", train_s=0.2, infer_s=0.01, max_train=400),
    )}  # fmt: skip
    cheapest = cheapest_methods(candidates, 100)
    study = _study_with({"tfidf": 0.900, "enc:freeze": 0.895})
    assert untried(study, candidates, cheapest, 10_000, 400, 100).name == "enc:lora"  # the cheaper first
    study.enqueue_trial({"candidate": "enc:lora"})  # queued (not yet run) counts as given
    assert untried(study, candidates, cheapest, 10_000, 400, 100).name == "enc:full"
    assert untried(study, candidates, cheapest, 30, 400, 100) is None  # nothing untried fits 30 s
    far = _study_with({"tfidf": 0.900, "enc:freeze": 0.850})  # enc's costlier methods are not open
    assert untried(far, candidates, cheapest, 10_000, 400, 100) is None


def test_the_leaders_refit_on_train_and_eval_is_kept_back_from_the_trials():
    from lmadapt.auto.plan import Candidate
    from lmadapt.auto.search import refit_reserve, refit_seconds, refit_size

    full = Candidate("enc:full", "enc", "full", "encoder", startup_s=4, fixed_s=2, train_s=0.2, infer_s=0.01)
    dec = Candidate("dec:lora", "dec", "lora", "decoder", startup_s=4, fixed_s=3, train_s=1.0, infer_s=0.1)
    shot = Candidate("dec:fewshot", "dec", "fewshot", "decoder", startup_s=4, fixed_s=3, infer_s=0.5)
    candidates = {c.name: c for c in (full, dec, shot)}
    plan = {"n_train": 400, "n_eval_all": 100, "n_test": 150}

    def study_led_by(name: str, params: dict, seconds: float) -> optuna.Study:
        study = optuna.create_study(direction="maximize")
        study.add_trial(optuna.trial.create_trial(
            params={"candidate": name}, distributions={"candidate": optuna.distributions.CategoricalDistribution(list(candidates))},
            value=0.9, user_attrs={"params": params, "seconds": seconds},
        ))  # fmt: skip
        return study

    assert refit_reserve(optuna.create_study(direction="maximize"), candidates, plan) == 0.0  # no leader yet
    # the leader's own measured seconds, scaled to train + eval, and the test predictions
    led = study_led_by("enc:full", {"train": 400, "epochs": 3}, seconds=180.0)
    assert refit_size(led.best_trial, plan) == 500  # all of train, so all of train + eval
    assert refit_reserve(led, candidates, plan) == pytest.approx(180 * 500 / 400 + 0.01 * 150)
    # the refit itself runs for the epochs its trial kept: 2 of 3
    assert refit_seconds(led.best_trial, full, plan, 2) == pytest.approx(180 * 500 / 400 * 2 / 3 + 0.01 * 150)
    # a leader that trained on a subset refits on the same share of train + eval
    subset = study_led_by("dec:lora", {"train": 80, "epochs": 2}, seconds=200.0)
    assert refit_size(subset.best_trial, plan) == 100
    assert refit_reserve(subset, candidates, plan) == pytest.approx(200 * 100 / 80 + 0.1 * 150)
    assert refit_reserve(study_led_by("dec:fewshot", {"train": 400, "k": 4}, 60.0), candidates, plan) == 0.0
