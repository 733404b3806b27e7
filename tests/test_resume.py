"""Run folders that never lie, and training that resumes exactly (tiny models, real `lmadapt train` processes).

A training process is killed with SIGKILL at a random checkpoint, then `lmadapt train --resume` continues it;
its final weights must equal (bitwise, fp32 on CPU) those of a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from lmadapt.compare import finished_run, run_compare
from lmadapt.config import load_recipe, parse_recipe
from lmadapt.errors import DataError, LmadaptError
from lmadapt.runs import RunDir, staging_path
from lmadapt.stages import run_stage
from lmadapt.training.checkpoints import MANIFEST, checkpoint_steps, latest_checkpoint, verify
from tiny_lm import save_tiny

WORDS = ["the", "movie", "was", "plot", "actor", "film", "very", "good", "great", "bad", "awful"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
PAIRS = [
    ("greet me", "hello how are you today?"),
    ("where did the cat sit?", "the cat sat on the mat"),
    ("where did the dog sit?", "the dog sat on the log"),
    ("say thanks", "thank you very much"),
    ("last number", "ten"),
    ("what is the capital of france?", "the capital of france is paris"),
]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def sentiment(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.choices(WORDS[:7], k=rng.randint(3, 9)) + [
            rng.choice(WORDS[7:9] if label == "pos" else WORDS[9:])
        ]
        rng.shuffle(words)
        rows.append({"id": i, "text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("resume")
    bert = root / "bert"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(bert)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)}).save_pretrained(bert)
    return {
        "bert": str(bert),
        "llama": str(save_tiny(root / "llama")),
        "train": write_jsonl(root / "train.jsonl", sentiment(400, 0)),
        "eval": write_jsonl(root / "eval.jsonl", sentiment(40, 1)),
        "sft": write_jsonl(root / "sft.jsonl", [{"instruction": i, "output": o} for i, o in PAIRS * 8]),
    }


def finetune_recipe(folders, output: Path, **train) -> dict:
    """Full fine-tuning (dropout on, shuffled, length-grouped batches): every source of randomness in play."""
    return {
        "model": folders["bert"],
        "task": {"type": "classify", "text": "text", "label": "label"},
        "data": {"train": folders["train"], "eval": folders["eval"], "test": None},
        "method": {"type": "full"},
        "train": {"epochs": 3, "lr": 5e-3, "batch_size": 8, "max_length": 32, "num_threads": 1,
                  "save_every": 6, "keep_checkpoints": 2, "logging_steps": 5} | train,
        "eval": {"every": 6},
        "output": str(output),
    }  # fmt: skip


def sft_recipe(folders, output: Path, **train) -> dict:
    return {
        "model": folders["llama"],
        "task": {"type": "sft"},
        "data": {"train": folders["sft"], "eval": folders["sft"], "test": None},
        "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.1, "target": "all-linear"},
        "stage": "sft",
        "train": {"epochs": 6, "lr": 1e-2, "batch_size": 2, "max_length": 48, "num_threads": 1,
                  "save_every": 3, "keep_checkpoints": 2, "logging_steps": 3} | train,
        "eval": {"every": "no"},
        "output": str(output),
    }  # fmt: skip


def write_recipe(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def train_cmd(recipe: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmadapt", "train", str(recipe), *extra]


def train(recipe: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(train_cmd(recipe, *extra), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def kill_after_checkpoint(recipe: Path, output: Path, step: int, *extra: str) -> None:
    """Start training, SIGKILL it once a checkpoint at or past `step` is on disk (it runs on a little).

    The process and every process it started die: `--nproc` workers run in sessions of their own, as
    torchrun starts them, so a kill of the launcher alone would leave them training."""
    import psutil

    proc = subprocess.Popen(train_cmd(recipe, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = staging_path(output) / "checkpoints"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(s >= step and (p / MANIFEST).is_file() for s, p in checkpoint_steps(checkpoints)):
                for pid in [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]:
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"training ended ({proc.returncode}) before the kill at {step}"


def weights(run: Path) -> dict[str, torch.Tensor]:
    files = sorted((run / "model").glob("*.safetensors")) + sorted((run / "adapter").glob("*.safetensors"))
    assert files, f"no weights in {run}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def final_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["final"]


# ----------------------------------------------------------------------------------------- kill + resume
def test_finetune_killed_then_resumed_equals_uninterrupted_and_a_torn_checkpoint_falls_back(
    tmp_path, folders
):
    whole = train(write_recipe(tmp_path / "whole.yaml", finetune_recipe(folders, tmp_path / "whole")))
    assert "resuming" not in whole.stdout
    output = tmp_path / "killed"
    recipe = write_recipe(tmp_path / "killed.yaml", finetune_recipe(folders, output))
    step = random.choice(range(12, 90, 6))  # 150 steps in all; a random checkpoint, the kill lands after it
    kill_after_checkpoint(recipe, output, step)
    assert not output.exists()  # nothing half-written where a complete run would be
    with pytest.raises(LmadaptError, match="--resume"):
        RunDir.open_complete(output)
    # tear the newest verified checkpoint: resuming must detect it and use the one before
    checkpoints = staging_path(output) / "checkpoints"
    newest = next(p for _, p in checkpoint_steps(checkpoints) if (p / MANIFEST).is_file())
    weights_file = next(newest.glob("*.safetensors"))
    weights_file.write_bytes(weights_file.read_bytes()[:100])
    assert "does not match" in verify(newest)
    resumed = train(recipe, "--resume")
    assert f"{newest.name} is torn" in resumed.stdout
    assert "resuming from checkpoint-" in resumed.stdout
    assert_same_weights(tmp_path / "whole", output)
    assert final_metrics(tmp_path / "whole") == final_metrics(output)
    assert json.loads((output / "metrics.json").read_text())["cost"]["resumed_from_step"] < int(
        newest.name.split("-")[1]
    )


def test_sft_killed_then_resumed_equals_uninterrupted(tmp_path, folders):
    train(write_recipe(tmp_path / "whole.yaml", sft_recipe(folders, tmp_path / "whole")))
    output = tmp_path / "killed"
    recipe = write_recipe(tmp_path / "killed.yaml", sft_recipe(folders, output))
    kill_after_checkpoint(recipe, output, random.choice(range(3, 120, 3)))  # 144 steps in all, 24 an epoch
    assert not output.exists()
    resumed = train(recipe, "--resume")
    assert "resuming from checkpoint-" in resumed.stdout
    assert_same_weights(tmp_path / "whole", output)
    assert final_metrics(tmp_path / "whole") == final_metrics(output)


def test_latest_checkpoint_skips_one_without_manifest(tmp_path):
    for step in (4, 8):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "model.safetensors").write_bytes(b"x" * step)
    from lmadapt.training.checkpoints import write_manifest

    write_manifest(tmp_path / "checkpoint-4", 4, 0.5)
    said = []
    assert latest_checkpoint(tmp_path, said.append) == tmp_path / "checkpoint-4"
    assert said == [
        "checkpoint-8 is torn: no manifest (the save did not finish); falling back to an earlier one"
    ]
    assert not (tmp_path / "checkpoint-8").exists()


# ----------------------------------------------------------------------------------------- run folders
def test_crashed_rerun_leaves_the_complete_run_and_compare_unchanged(tmp_path, folders):
    """A re-run of a changed recipe killed mid-training: the complete run, and compare's report, stay."""
    raw = finetune_recipe(folders, tmp_path / "out" / "runs" / "tiny", epochs=1)
    source = write_recipe(tmp_path / "tiny.yaml", raw | {"output": "ignored"})
    board = run_compare([source], output=tmp_path / "out")
    before = board.read_text()
    run = tmp_path / "out" / "runs" / "tiny"
    metrics_before = (run / "metrics.json").read_bytes()
    changed = write_recipe(
        tmp_path / "changed.yaml", raw | {"train": raw["train"] | {"lr": 1e-3, "epochs": 3}}
    )
    kill_after_checkpoint(changed, run, 6)
    assert (run / "metrics.json").read_bytes() == metrics_before
    assert RunDir.open_complete(run).read_config().train.lr == raw["train"]["lr"]
    assert not finished_run(load_recipe(changed))  # the changed recipe is not taken for finished
    after = run_compare([source], output=tmp_path / "out").read_text()  # reused: same numbers
    assert "| reused |" in after and after == before.replace("| trained |", "| reused |")


def test_same_seed_twice_gives_the_same_metrics(tmp_path, folders):
    for make, extra in ((finetune_recipe, {"epochs": 1}), (sft_recipe, {"epochs": 2})):
        runs = []
        for i in range(2):
            recipe = parse_recipe(make(folders, tmp_path / f"{make.__name__}-{i}", **extra))
            runs.append(run_stage(recipe))
        a, b = (json.loads((r / "metrics.json").read_text()) for r in runs)
        assert a["final"] == b["final"] and a["history"] == b["history"]
        assert_same_weights(*runs)


def test_sft_that_drops_every_training_example_stops_with_exit_2(tmp_path, folders):
    long = [{"instruction": "the cat sat on the mat " * 40, "output": "ten"}] * 3
    raw = sft_recipe(folders, tmp_path / "run") | {
        "data": {"train": write_jsonl(tmp_path / "long.jsonl", long), "eval": None, "test": None}
    }
    recipe = write_recipe(tmp_path / "long.yaml", raw)
    proc = subprocess.run(train_cmd(recipe), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    said = " ".join((proc.stdout + proc.stderr).split())
    assert "all 3 training examples were dropped" in said and "max_length=48" in said
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists() and not staging_path(tmp_path / "run").exists()
    with pytest.raises(DataError, match="all 3 training examples"):
        run_stage(parse_recipe(raw))


def test_readers_refuse_incomplete_runs_and_resume_refuses_a_changed_recipe(tmp_path, folders):
    raw = finetune_recipe(folders, tmp_path / "run", epochs=1)
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    kill_after_checkpoint(recipe, tmp_path / "run", 6)
    from lmadapt.export import export_run
    from lmadapt.infer.engine import load_engine
    from lmadapt.predict import load_predictor

    for read in (load_predictor, lambda p: export_run(p, tmp_path / "x"), load_engine):
        with pytest.raises(LmadaptError, match="incomplete run"):
            read(str(tmp_path / "run"))
    changed = write_recipe(tmp_path / "c.yaml", raw | {"train": raw["train"] | {"lr": 1e-4}})
    proc = subprocess.run(train_cmd(changed, "--resume"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "different recipe" in proc.stderr
    assert staging_path(tmp_path / "run").is_dir()  # the interrupted run is still there to resume


def test_output_that_is_not_a_run_folder_is_never_replaced(tmp_path, folders):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("do not lose me")
    raw = finetune_recipe(folders, keep, epochs=1, save_every=None)
    with pytest.raises(LmadaptError, match="not a run folder"):
        run_stage(parse_recipe(raw))
    assert (keep / "notes.txt").read_text() == "do not lose me"


def test_trust_remote_code_never_comes_from_a_run_folder(tmp_path, folders):
    run = run_stage(parse_recipe(finetune_recipe(folders, tmp_path / "run", epochs=1, save_every=None)))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"]["trust_remote_code"] = True  # as if someone edited the folder's file
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    assert RunDir.open_complete(run).read_config().model.trust_remote_code is False
    assert RunDir.open_complete(run).read_config(trust_remote_code=True).model.trust_remote_code is True
