"""Data-parallel training (`lmadapt train --nproc 2`: torchrun's launcher, gloo on CPU, tiny models).

Two processes with batch b per process must train exactly what one process trains with batch 2b over the same
data order (fp32: within 1e-5), write the run folder once (rank 0), and resume a killed run to the same end.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from lmadapt.runs import staging_path
from lmadapt.training.checkpoints import checkpoint_steps
from test_pretrain import tiny_bert  # noqa: F401  (an encoder whose vocabulary covers the corpus)
from test_resume import (
    VOCAB,
    folders,  # noqa: F401  (the shared tiny models and data)
    kill_after_checkpoint,
    sentiment,
    sft_recipe,
    train,
    weights,
    write_jsonl,
    write_recipe,
)

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def quiet_bert(tmp_path_factory) -> dict[str, str]:
    """A tiny BERT without dropout (dropout draws differ by rank; the comparison is of the arithmetic)."""
    root = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(root / "bert")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}).save_pretrained(root / "bert")
    return {
        "bert": str(root / "bert"),
        "train": write_jsonl(root / "train.jsonl", sentiment(64, 0)),
        "eval": write_jsonl(root / "eval.jsonl", sentiment(16, 1)),
    }


def classify(data: dict, output: Path, **train) -> dict:
    # group_by_length off: its length groups are sized by the batch, so b and 2b would see other orders
    return {
        "model": data["bert"],
        "task": {"type": "classify", "text": "text", "label": "label"},
        "data": {"train": data["train"], "eval": data["eval"], "test": data["eval"]},
        "method": {"type": "full"},
        "train": {"epochs": 2, "lr": 5e-3, "batch_size": 8, "max_length": 32, "num_threads": 1,
                  "group_by_length": False, "logging_steps": 1} | train,
        "eval": {"every": 4},
        "output": str(output),
    }  # fmt: skip


def sft(data: dict, output: Path, **train) -> dict:
    """test_resume's LoRA SFT recipe without dropout, checkpoints or length grouping."""
    settings = {
        "epochs": 2,
        "batch_size": 8,
        "save_every": None,
        "logging_steps": 1,
        "group_by_length": False,
    }
    raw = sft_recipe(data, output, **settings | train)
    raw["method"] = raw["method"] | {"dropout": 0.0}
    return raw


def losses(run: Path) -> list[tuple[int, float]]:
    history = json.loads((run / "metrics.json").read_text())["history"]
    return [(h["step"], h["loss"]) for h in history if h["split"] == "train"]


def assert_close_runs(a: Path, b: Path, start: str) -> None:
    """Same loss curve and weights within TOLERANCE, and both moved away from the `start` model's."""
    from safetensors.torch import load_file

    la, lb = losses(a), losses(b)
    assert [s for s, _ in la] == [s for s, _ in lb] and len(la) > 4
    assert max(abs(x - y) for (_, x), (_, y) in zip(la, lb, strict=True)) < TOLERANCE, (la, lb)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    worst = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert worst < TOLERANCE, worst
    initial = {k: v for f in Path(start).glob("*.safetensors") for k, v in load_file(f).items()}
    moved = [
        k
        for k, v in wa.items()
        if k.split(":", 1)[1] in initial and not torch.equal(v, initial[k.split(":", 1)[1]])
    ]
    assert moved or (a / "adapter").is_dir()  # full fine-tuning moved the weights; an adapter is all new


def files_of(run: Path) -> list[str]:
    return sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())


def test_two_processes_train_what_one_process_trains_with_twice_the_batch(tmp_path, quiet_bert):
    one = tmp_path / "one"
    train(write_recipe(tmp_path / "one.yaml", classify(quiet_bert, one)))
    two = tmp_path / "two"
    proc = train(write_recipe(tmp_path / "two.yaml", classify(quiet_bert, two, batch_size=4)), "--nproc", "2")
    assert_close_runs(one, two, quiet_bert["bert"])
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (one, two)]
    assert metrics[0]["final"] == metrics[1]["final"]  # eval during training is gathered; test once, rank 0
    evals = [[h for h in m["history"] if h["split"] == "eval"] for m in metrics]
    assert len(evals[0]) == len(evals[1]) > 1
    for a, b in zip(*evals, strict=True):
        assert abs(a.pop("loss") - b.pop("loss")) < TOLERANCE and a == b
    # only rank 0 wrote: the same files as one process, every log line once, one announcement
    assert files_of(one) == files_of(two)
    log = (two / "log.txt").read_text().splitlines()
    assert sum(line.startswith("trained in") for line in log) == 1 and len(log) == len(set(log))
    assert proc.stdout.count("run folder:") == 1
    assert json.loads((two / "status.json").read_text())["world_size"] == 2


def test_gradient_accumulation_equals_the_larger_batch(tmp_path, quiet_bert):
    """batch 4 x 2 accumulated steps == batch 8 (the heads' mean losses are averaged, not summed)."""
    from lmadapt.config import parse_recipe
    from lmadapt.stages import run_stage

    one = run_stage(parse_recipe(classify(quiet_bert, tmp_path / "one")))
    accumulated = run_stage(parse_recipe(classify(quiet_bert, tmp_path / "ga", batch_size=4, grad_accum=2)))
    assert_close_runs(one, accumulated, quiet_bert["bert"])


def test_two_process_lora_sft_equals_one_process(tmp_path, folders):  # noqa: F811
    one = tmp_path / "one"
    train(write_recipe(tmp_path / "one.yaml", sft(folders, one)))
    two = tmp_path / "two"
    train(write_recipe(tmp_path / "two.yaml", sft(folders, two, batch_size=4)), "--nproc", "2")
    assert_close_runs(one, two, folders["llama"])
    assert files_of(one) == files_of(two)


def test_two_process_run_killed_then_resumed_equals_uninterrupted(tmp_path, quiet_bert):
    settings = {"batch_size": 4, "save_every": 2, "keep_checkpoints": 2, "epochs": 3}
    whole = tmp_path / "whole"
    raw = classify(quiet_bert, whole, **settings) | {"eval": {"every": 2}}
    train(write_recipe(tmp_path / "whole.yaml", raw), "--nproc", "2")
    output = tmp_path / "killed"
    recipe = write_recipe(tmp_path / "killed.yaml", raw | {"output": str(output)})
    kill_after_checkpoint(recipe, output, random.choice(range(4, 20, 2)), "--nproc", "2")  # 24 steps in all
    assert not output.exists()
    checkpoint = next(p for _, p in checkpoint_steps(staging_path(output) / "checkpoints"))
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in checkpoint.iterdir()}
    one_process = subprocess.run(
        [sys.executable, "-m", "lmadapt", "train", str(recipe), "--resume"], capture_output=True, text=True
    )
    assert one_process.returncode == 2 and "--nproc 2" in one_process.stderr  # the same N, or it says so
    resumed = train(recipe, "--resume", "--nproc", "2")
    assert "resuming from checkpoint-" in resumed.stdout
    wa, wb = weights(whole), weights(output)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) == 0.0  # bit-exact, like one process
    assert (
        json.loads((whole / "metrics.json").read_text())["final"]
        == json.loads((output / "metrics.json").read_text())["final"]
    )


SHIPPED = Path(__file__).parents[1] / "src" / "lmadapt" / "recipes"


@pytest.mark.parametrize(
    "change, said",
    [
        ({"method": {"type": "tfidf"}}, "trains no network"),
        ({"train": {"distributed": {"strategy": "fsdp"}}}, "needs CUDA"),
        ({"train": {"distributed": {"strategy": "deepspeed"}}}, "needs config"),
        ("pubmed-mesh-zeroshot.yaml", "runs in one process"),
    ],
)
def test_what_cannot_run_on_several_processes_is_refused_before_any_starts(
    tmp_path, quiet_bert, change, said
):
    if isinstance(change, str):  # a shipped recipe of a stage that does not train
        recipe, extra = SHIPPED / change, [f"output={tmp_path / 'run'}"]
    else:
        raw = classify(quiet_bert, tmp_path / "run")
        raw = raw | {k: (raw[k] | v if k == "train" else v) for k, v in change.items()}
        recipe, extra = write_recipe(tmp_path / "r.yaml", raw), []
    proc = subprocess.run(
        [sys.executable, "-m", "lmadapt", "train", str(recipe), *extra, "--nproc", "2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert said in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists() and not staging_path(tmp_path / "run").exists()


def test_a_worker_with_bad_data_gives_exit_2_and_its_message(tmp_path, quiet_bert):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "good movie", "label": "pos"}\n{"text": 3\n', encoding="utf-8")
    recipe = write_recipe(tmp_path / "r.yaml", classify(quiet_bert, tmp_path / "run") | {
        "data": {"train": str(bad), "eval": None, "test": None}})  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "lmadapt", "train", str(recipe), "--nproc", "2"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    said = "".join(proc.stderr.split())  # rich wraps long paths
    assert said.count("bad.jsonl:2:notvalidJSON") == 1 and "Traceback" not in proc.stderr  # said once
    assert not staging_path(tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------- the other stages
def stage_recipe(kind: str, tmp: Path, folders: dict, batch: int):  # noqa: F811
    """The tiny recipes of the stages' own tests, at `batch` per process, batches in file-order groups."""
    import test_dpo
    import test_pretrain
    import test_rm

    data_parallel = {"batch_size": batch, "logging_steps": 1}
    if kind == "rm":
        data = test_rm.preference_files(tmp)
        return test_rm.rm_recipe(  # evaluating every 2 steps: once, on rank 0
            tmp, Path(folders["llama"]), data, train=data_parallel | {"epochs": 2}, eval={"every": 2}
        )
    if kind == "dpo":
        return test_dpo.dpo_recipe(tmp, Path(folders["llama"]), train=data_parallel | {"epochs": 2})
    corpus = test_pretrain.write_corpus(tmp, n_train=64, n_eval=16)
    task = {"objective": "clm"} if kind == "pretrain-clm" else {"objective": "mlm"}
    model = folders["llama"] if kind == "pretrain-clm" else folders["mlm"]
    return test_pretrain.recipe(tmp, model, task, {"train": corpus["train"], "eval": corpus["eval"]},
                                **data_parallel | {"max_steps": 8, "group_by_length": False})  # fmt: skip


@pytest.mark.parametrize("kind", ["rm", "dpo", "pretrain-clm", "pretrain-mlm"])
def test_every_trainer_stage_on_two_processes_rank_0_alone_writes(tmp_path, folders, tiny_bert, kind):  # noqa: F811
    from lmadapt.config import recipe_to_yaml

    folders = folders | {"mlm": tiny_bert}
    runs = {}
    for n, batch in ((1, 4), (2, 2)):
        tmp = tmp_path / f"n{n}"
        tmp.mkdir()
        recipe = stage_recipe(kind, tmp, folders, batch)
        path = tmp / "recipe.yaml"
        path.write_text(recipe_to_yaml(recipe), encoding="utf-8")
        train(path, "--nproc", str(n))
        runs[n] = Path(recipe.output)
    assert files_of(runs[1]) == files_of(runs[2])
    log = (runs[2] / "log.txt").read_text().splitlines()
    assert len(log) == len(set(log)) and json.loads((runs[2] / "status.json").read_text())["world_size"] == 2
    evals = [[h for h in json.loads((r / "metrics.json").read_text())["history"] if h["split"] == "eval"]
             for r in (runs[1], runs[2])]  # fmt: skip
    assert len(evals[0]) == len(evals[1]) and (kind != "rm" or evals[0])
    if kind in ("rm", "pretrain-clm"):  # no random masks or dropout: the same arithmetic, to fp32 rounding
        la, lb = losses(runs[1]), losses(runs[2])
        assert len(la) == len(lb) > 1
        assert max(abs(x - y) for (_, x), (_, y) in zip(la, lb, strict=True)) < TOLERANCE, (la, lb)
    assert all(loss > 0 for r in runs.values() for _, loss in losses(r))  # it trained on something
