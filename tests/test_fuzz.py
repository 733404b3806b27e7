"""Hostile input, generated with hypothesis: malformed recipes and data files through the real CLI, in process.

Every case is invalid by construction and must end the same way: exit code 2 (a SystemExit, no other
exception), an `error:` message naming the file and, where the problem has them, the line and the field or
key; no traceback; nothing written (no run folder, no file in the case's folder touched). `train` must stop
while validating: the functions that load a model are patched to fail the test if they are reached.

LMADAPT_FUZZ_EXAMPLES sets the examples per test (default 40); with CI set the examples are derandomized.
The module ends by printing its tally, e.g. `fuzz: 520 cases, 0 tracebacks`:
    LMADAPT_FUZZ_EXAMPLES=1000 .venv/bin/python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import string
import tempfile
import traceback
from collections import Counter
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lmadapt.cli import app
from lmadapt.config import Recipe
from lmadapt.config.data import DataConfig
from lmadapt.config.model import ModelConfig
from lmadapt.config.train import EvalConfig, TrainConfig
from lmadapt.methods.lora import LoraMethod
from lmadapt.sources import MODELS
from lmadapt.tasks.classify import ClassifyConfig

EXAMPLES = int(os.environ.get("LMADAPT_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    database=None,  # nothing written into the repository; a failure prints its example
    suppress_health_check=list(HealthCheck),
)
HEAVY = settings(FUZZ, max_examples=max(2, EXAMPLES // 10))  # cases holding a 10 MB line
WIDE = settings(FUZZ, max_examples=3 * EXAMPLES)  # the data defects: 12 kinds x 4 formats x 2 commands
TALLY: Counter = Counter()
RUNNER = CliRunner()
BIG = 10 * 1024 * 1024
LABELS = ["neg", "pos"]
# functions that load a model: a case that reaches one got past validation
MODEL_LOADERS = (
    "lmadapt.tasks.build_model",
    "lmadapt.infer.engine.load_causal_lm",
    "lmadapt.infer.engine.load_engine",
    "lmadapt.prompting.verbalizer.load_lm",
    "lmadapt.prompting.fewshot.load_encoder",
    "lmadapt.baselines.tfidf.run",
)


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def tally(request):
    """Print how many cases ran and how many ended in a traceback (a long run reports this count)."""
    yield
    counts = {family: n for family, n in TALLY.items() if family not in ("traceback", "known crash")}
    cases = sum(n for family, n in counts.items() if not family.startswith(("known", "clean")))
    families = ", ".join(f"{family} {n}" for family, n in sorted(counts.items()))
    known = f"; xfail cases that crash as reported: {TALLY['known crash']}" if TALLY["known crash"] else ""
    line = f"fuzz: {cases} cases, {TALLY['traceback']} tracebacks{known} ({families})"
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(line)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random local models, so every recipe is valid apart from its one defect: a BERT and a Llama."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    from tiny_lm import save_tiny

    bert = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "the", "movie"]
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(bert)
    BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(bert)
    llama = save_tiny(tmp_path_factory.mktemp("tiny-llama"))
    return {"bert": str(bert), "llama": str(llama)}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@contextlib.contextmanager
def case_dir(base: Path):
    folder = Path(tempfile.mkdtemp(dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------- the oracle
def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` with a digest of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def _model_loaded(*args, **kwargs):
    raise AssertionError(f"a model was loaded ({args[:1]}): validation let this case through")


def invoke(args: list, family: str, guard: bool = True):
    """The CLI in process (model loading patched to fail when `guard`); counted in the tally.

    Families starting with "known" are the xfail cases below: counted apart, not as tracebacks found.
    """
    with contextlib.ExitStack() as stack:
        if guard:
            for target in MODEL_LOADERS:
                stack.enter_context(mock.patch(target, _model_loaded))
        result = RUNNER.invoke(app, [str(a) for a in args], env={"COLUMNS": "100000"})
    TALLY[family] += 1
    crashed = "Traceback" in result.output or not isinstance(result.exception, SystemExit | None)
    if not family.startswith("clean"):
        TALLY["known crash" if family.startswith("known") else "traceback"] += crashed
    return result


def expect_error(args, folder: Path, family: str, *, names=(), file=None, line=None, guard=True):
    """Run the CLI on one case and check the contract: exit 2, a located message, nothing written."""
    before = snapshot(folder)
    result = invoke(args, family, guard)
    text = result.output
    shown = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
    assert isinstance(result.exception, SystemExit), f"{result.exception!r}\n{shown}\n{text}"
    assert result.exit_code == 2, text
    assert "Traceback" not in text, text
    assert "error:" in text, text  # the CLI's own message, not a usage error
    assert len(text) < 100_000, f"{len(text)} characters of message"
    if file is not None:
        assert file.name in text, text
        if line is not None:
            assert f"{file.name}:{line}:" in text, f"expected line {line}:\n{text}"
    for name in names:
        assert name in text, f"expected {name!r} in:\n{text}"
    after = snapshot(folder)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"
    return text


# ------------------------------------------------------------------------------------------- recipes
def emit(recipe: dict) -> tuple[str, dict[tuple, int]]:
    """Block YAML, one key per line, values as JSON (valid YAML); and the line of every key path."""
    lines: list[str] = []
    where: dict[tuple, int] = {}

    def put(node: dict, path: tuple, indent: int):
        for key, value in node.items():
            where[(*path, key)] = len(lines) + 1
            if isinstance(value, dict) and value:
                lines.append(" " * indent + f"{json.dumps(key)}:")
                put(value, (*path, key), indent + 2)
            else:
                lines.append(" " * indent + f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")

    put(recipe, (), 0)
    return "\n".join(lines) + "\n", where


def finetune_recipe(folder: Path, model: str, train: Path) -> dict:
    return {
        "model": {"name": model},
        "task": {"type": "classify", "text": ["text"], "label": "label", "labels": list(LABELS)},
        "data": {"train": str(train), "eval": None, "test": None},
        "method": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "stage": "finetune",
        "train": {"epochs": 1.0, "max_steps": 1, "lr": 0.001, "batch_size": 2, "max_length": 32,
                  "grad_accum": 1, "warmup_ratio": 0.0, "shuffle": True, "scheduler": "linear"},
        "eval": {"every": "no"},
        "output": str(folder / "run"),
    }  # fmt: skip


def good_records(n: int = 4) -> list[dict]:
    return [
        {"text": f"the movie {i} was {'good' if i % 2 else 'bad'}", "label": LABELS[i % 2]} for i in range(n)
    ]


def write_recipe(folder: Path, recipe: dict) -> tuple[Path, dict]:
    text, where = emit(recipe)
    path = folder / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path, where


def prepared(folder: Path, models: dict) -> dict:
    train = folder / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in good_records()), encoding="utf-8")
    return finetune_recipe(folder, models["bert"], train)


SECTIONS = {  # key path of a mapping section -> the schema classes whose keys are valid there
    (): [Recipe],
    ("model",): [ModelConfig],
    ("task",): [ClassifyConfig],
    ("data",): [DataConfig],
    ("method",): [LoraMethod],
    ("train",): [TrainConfig],
    ("eval",): [EvalConfig],
}
COMMANDS = st.sampled_from([["recipes", "check"], ["train"]])
IDENT = st.from_regex(r"[a-z][a-z0-9_]{0,14}", fullmatch=True)
COERCIBLE = {"inf", "infinity", "nan", "true", "false", "yes", "no", "on", "off", "y", "n", "t", "f"}
WORDS = st.text(string.ascii_letters, min_size=1, max_size=10).filter(lambda s: s.lower() not in COERCIBLE)
LISTS = st.lists(st.integers(-5, 5), min_size=1, max_size=3)
DICTS = st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), min_size=1, max_size=2)
# non-integral floats that YAML reads back as floats: 5e-324 (no dot) would be the string "5e-324"
FRACTIONS = st.floats(-1e6, 1e6, allow_nan=False).filter(
    lambda x: not x.is_integer() and "." in json.dumps(x)
)


@st.composite
def misspelt(draw, valid: list[str]) -> tuple[str, bool]:
    """A key one edit away from a valid one (True), or another name (False); never a valid key."""
    long = [k for k in valid if len(k) >= 4]
    if long and draw(st.booleans()):
        word = draw(st.sampled_from(long))
        i = draw(st.integers(0, len(word) - 1))
        edit = draw(st.sampled_from(["drop", "swap", "double", "replace"]))
        if edit == "drop":
            key = word[:i] + word[i + 1 :]
        elif edit == "swap" and i + 1 < len(word):
            key = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        elif edit == "double":
            key = word[:i] + word[i] + word[i:]
        else:
            key = word[:i] + draw(st.sampled_from("xqz")) + word[i + 1 :]
        close = True
    else:
        key, close = draw(IDENT), False
    assume(key not in valid)
    return key, close


def ints(low: int):  # wrong for an int field with minimum `low`
    return st.one_of(WORDS, LISTS, DICTS, FRACTIONS, st.integers(max_value=low - 1))


def floats(low: float, high: float | None = None):  # wrong for a float field in [low, high)
    above = [st.floats(min_value=high, max_value=1e9)] if high is not None else []
    below = st.floats(max_value=low, min_value=-1e9).filter(lambda x: x <= low)
    return st.one_of(WORDS, LISTS, DICTS, below, *above)


def not_in(allowed: set):  # wrong for a Literal field
    return st.one_of(WORDS.filter(lambda s: s not in allowed), LISTS, st.integers(10, 99), FRACTIONS)


BOOLS = st.one_of(WORDS, LISTS, DICTS, st.integers(2, 99), FRACTIONS)
STRINGS = st.one_of(st.integers(), FRACTIONS, LISTS, st.booleans())
WRONG = {  # key path -> values of the wrong type or out of range
    ("train", "epochs"): floats(0.0),
    ("train", "lr"): floats(0.0),
    ("train", "batch_size"): ints(1),
    ("train", "max_length"): ints(8),
    ("train", "grad_accum"): ints(1),
    ("train", "warmup_ratio"): floats(-1e-9, 1.0),
    ("train", "shuffle"): BOOLS,
    ("train", "scheduler"): not_in({"linear", "cosine", "constant"}),
    ("method", "r"): ints(1),
    ("method", "dropout"): floats(-1e-9, 1.0),
    ("task", "text"): st.one_of(st.integers(), DICTS, LISTS, st.just([]), st.just([""])),
    ("task", "label"): STRINGS,
    ("task", "labels"): st.one_of(st.just(["neg", "neg"]), DICTS, st.lists(DICTS, min_size=1, max_size=2)),
    ("data", "max_train"): ints(1),
    ("eval", "every"): st.one_of(WORDS.filter(lambda s: s not in {"epoch", "no"}), LISTS, FRACTIONS),
    ("model", "dtype"): not_in({"float32", "bfloat16", "float16"}),
    ("model", "name"): STRINGS,
    ("stage",): not_in({"finetune", "sft", "prompt"}),
    ("output",): st.one_of(STRINGS, st.just("")),
}


def put_at(recipe: dict, path: tuple, value, position: int | None = None) -> None:
    node = recipe
    for part in path[:-1]:
        node = node[part]
    if position is None or path[-1] in node:
        node[path[-1]] = value
        return
    items = list(node.items())
    items.insert(min(position, len(items)), (path[-1], value))
    node.clear()
    node.update(items)


@FUZZ
@given(command=COMMANDS, section=st.sampled_from(list(SECTIONS)), data=st.data())
def test_unknown_or_misspelt_key_at_any_depth(base, models, command, section, data):
    valid = sorted({k for m in SECTIONS[section] for k in m.model_fields})
    key, close = data.draw(misspelt(valid))
    with case_dir(base) as folder:
        recipe = prepared(folder, models)
        put_at(
            recipe, (*section, key), data.draw(st.one_of(st.integers(), WORDS)), data.draw(st.integers(0, 9))
        )
        path, where = write_recipe(folder, recipe)
        dotted = ".".join((*section, key))
        text = expect_error(
            [*command, path], folder, "recipe-key", file=path, line=where[(*section, key)],
            names=[f"unknown key '{dotted}'"],
        )  # fmt: skip
        if close:
            suggested = re.search(r"did you mean '([^']+)'", text)
            assert suggested and suggested.group(1).rpartition(".")[2] in valid, text


@FUZZ
@given(command=COMMANDS, field=st.sampled_from(list(WRONG)), data=st.data())
def test_wrong_type_or_range_names_the_field_and_line(base, models, command, field, data):
    value = data.draw(WRONG[field])
    with case_dir(base) as folder:
        recipe = prepared(folder, models)
        put_at(recipe, field, value)
        path, where = write_recipe(folder, recipe)
        expect_error(
            [*command, path], folder, "recipe-type", file=path, line=where[field], names=[".".join(field)]
        )


BREAKS = [  # a line that is not YAML, whatever surrounds it
    'broken: "no closing quote',
    "\tindented: with a tab",
    "key: value: another",
    "- an item inside a mapping",
    "@reserved: indicator",
    "alias: *undefined",
    "flow: [1, 2",
    "bell: \x07",
    "? [a, b]\n: unhashable",
]


@FUZZ
@given(command=COMMANDS, broken=st.sampled_from(BREAKS), data=st.data())
def test_invalid_yaml_names_a_line_at_or_after_the_break(base, models, command, broken, data):
    with case_dir(base) as folder:
        lines = emit(prepared(folder, models))[0].splitlines()
        at = data.draw(st.integers(0, len(lines)))
        lines.insert(at, broken)
        path = folder / "recipe.yaml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        text = expect_error([*command, path], folder, "recipe-yaml", file=path, names=["not valid YAML"])
        line = int(re.search(rf"{re.escape(path.name)}:(\d+): not valid YAML", text).group(1))
        assert at + 1 <= line <= len(lines) + 1, text


@FUZZ
@given(
    command=COMMANDS,
    top=st.one_of(
        st.lists(st.one_of(st.integers(), WORDS), min_size=1, max_size=3), st.integers(), WORDS, FRACTIONS
    ),
)
def test_a_top_level_that_is_not_a_mapping(base, command, top):
    with case_dir(base) as folder:
        path = folder / "recipe.yaml"
        path.write_text(json.dumps(top) + "\n", encoding="utf-8")
        expect_error([*command, path], folder, "recipe-top", file=path, names=["must be a mapping"])


ENCODINGS = ["latin-1", "cp1252", "utf-16", "utf-32", "utf-16-le", "utf-16-be"]


@FUZZ
@given(
    command=COMMANDS,
    encoding=st.sampled_from([*ENCODINGS, "bom", "empty"]),
    accent=st.sampled_from("éàüßñç°±µ"),
    blank=st.sampled_from(["", "\n\n", "# only a comment\n", "   \n", "---\n"]),
    data=st.data(),
)
def test_wrong_encoding_bom_and_empty_recipes(base, models, command, encoding, accent, blank, data):
    with case_dir(base) as folder:
        recipe = prepared(folder, models)
        path = folder / "recipe.yaml"
        if encoding == "empty":
            path.write_text(blank, encoding="utf-8")
            expect_error([*command, path], folder, "recipe-empty", file=path, names=["is empty"])
            return
        if encoding == "bom":  # a UTF-8 BOM is read as nothing: the defect's line is still right
            key, _ = data.draw(misspelt(sorted(TrainConfig.model_fields)))
            recipe["train"][key] = 1
            text, where = emit(recipe)
            path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
            expect_error(
                [*command, path], folder, "recipe-bom", file=path, line=where[("train", key)],
                names=[f"unknown key 'train.{key}'"],
            )  # fmt: skip
            return
        recipe["output"] = str(folder / f"run{accent}x")
        text, where = emit(recipe)
        path.write_bytes(text.encode(encoding))
        line = where[("output",)] if encoding in ("latin-1", "cp1252") else 1  # UTF-16/32: said at once
        expect_error([*command, path], folder, "recipe-encoding", file=path, line=line)


@FUZZ
@given(field=st.sampled_from(list(WRONG)), data=st.data())
def test_a_bad_override_names_the_override(base, models, field, data):
    with case_dir(base) as folder:
        path = write_recipe(folder, prepared(folder, models))[0]
        kind = data.draw(st.sampled_from(["wrong", "unknown", "yaml", "no-equals"]))
        if kind == "wrong":
            override, names = f"{'.'.join(field)}={json.dumps(data.draw(WRONG[field]))}", [".".join(field)]
            names.append(f"(override {'.'.join(field)}=...)")
        elif kind == "unknown":
            section = data.draw(st.sampled_from([s for s in SECTIONS if s]))
            key, _ = data.draw(misspelt(sorted({k for m in SECTIONS[section] for k in m.model_fields})))
            dotted = ".".join((*section, key))
            override, names = f"{dotted}=1", [f"unknown key '{dotted}'", f"(override {dotted}=...)"]
        elif kind == "yaml":
            broken = data.draw(st.sampled_from(["[1, 2", "{a: ", '"open', "@x"]))
            override, names = f"{'.'.join(field)}={broken}", ["not valid YAML"]
        else:
            override, names = ".".join(field), ["dotted.key=value"]
        names.append(override.partition("=")[0])
        command = data.draw(COMMANDS)
        expect_error([*command, path, override], folder, "recipe-override", file=path, names=names)


@FUZZ
@given(
    command=COMMANDS,
    levels=st.integers(6, 9),
    where=st.sampled_from([("surprise",), ("task", "label"), ("task", "labels"), ("output",)]),
)
def test_a_yaml_alias_bomb_is_reported_not_expanded(base, models, command, levels, where):
    """Nine aliases of nine aliases...: tiny as YAML, 9**9 items spelled out. The message stays short."""
    bomb = ['"b0": &b0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    bomb += [f'"b{i}": &b{i} [{", ".join([f"*b{i - 1}"] * 9)}]' for i in range(1, levels)]
    with case_dir(base) as folder:
        text = "\n".join(bomb) + "\n" + emit(prepared(folder, models))[0]  # anchors first, then the recipe
        if where == ("surprise",):
            text += f'"surprise": *b{levels - 1}\n'
        else:  # the first line setting that key (task.label, task.labels, output) takes the alias instead
            key = re.escape(json.dumps(where[-1]))
            text = re.sub(rf"^(\s*{key}): .*$", rf"\1: *b{levels - 1}", text, count=1, flags=re.M)
        path = folder / "recipe.yaml"
        path.write_text(text, encoding="utf-8")
        expect_error([*command, path], folder, "recipe-alias", file=path, names=[".".join(where)])


SLASHED = st.builds("/".join, st.lists(st.sampled_from(["..", "a", "b", "", "x y"]), min_size=2, max_size=4))


@FUZZ
@given(
    # fields where a slashed string is wrong (task.text takes any string: a valid grid, runs would start)
    field=st.sampled_from(
        [f for f in WRONG if f not in {("task", "text"), ("task", "label"), ("output",), ("model", "name")}]
    ),
    values=st.lists(SLASHED.filter(lambda v: v.strip() and "," not in v), min_size=1, max_size=3),
)
def test_compare_grid_values_with_slashes_fail_before_any_run(base, models, field, values):
    """`--grid key=a/b,../c`: values that also make paths. A bad one is named with its key; nothing is made."""
    assume(all(not v.strip().isdigit() for v in values))
    with case_dir(base) as folder:
        path = write_recipe(folder, prepared(folder, models))[0]
        grid = f"{'.'.join(field)}={','.join(values)}"
        args = ["compare", path, "--grid", grid, "--output", folder / "out"]
        expect_error(args, folder, "compare-grid", file=path, names=[f"(override {'.'.join(field)}=...)"])


def test_compare_grid_value_with_a_slash_is_a_safe_run_name(base, models):
    with case_dir(base) as folder:
        path = write_recipe(folder, prepared(folder, models))[0]
        result = invoke(
            ["compare", path, "--grid", "task.text=a/b", "--output", folder / "out"], "known-grid"
        )
        assert isinstance(result.exception, SystemExit | None), repr(result.exception)
        assert "Traceback" not in result.output
        made = [p for p in (folder / "out").rglob("*") if p.is_dir() and p.name in ("b", "recipe-a")]
        assert not made, made


# ------------------------------------------------------------------------------------------- prompt stage
def prompt_recipe(folder: Path, models: dict, fields: list[str], prompt: dict) -> dict:
    test = folder / "test.jsonl"
    records = [dict.fromkeys(fields, "some words") | {"label": label} for label in LABELS]
    test.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return {
        "model": {"name": models["llama"]},
        "task": {"type": "classify", "text": fields, "labels": list(LABELS)},
        "data": {"train": None, "eval": None, "test": str(test)},
        "stage": "prompt",
        "prompt": prompt,
        "output": str(folder / "run"),
    }


FIELDS = st.lists(st.from_regex(r"[a-z][a-z_]{2,9}", fullmatch=True), min_size=1, max_size=3, unique=True)


@FUZZ
@given(
    command=COMMANDS,
    fields=FIELDS,
    mode=st.sampled_from(["zero_shot", "verbalizer"]),
    data=st.data(),
)
def test_template_placeholder_that_is_not_a_field(base, models, command, fields, mode, data):
    bad, close = data.draw(misspelt(fields) if all(len(f) >= 4 for f in fields) else misspelt([]))
    assume(bad != "mask")
    parts = [f"{f}: {{{f}}}" for f in fields] + [f"{bad}: {{{bad}}}"]
    parts = data.draw(st.permutations(parts)) + (["answer: {mask}"] if mode == "verbalizer" else [])
    with case_dir(base) as folder:
        recipe = prompt_recipe(folder, models, fields, {"mode": mode, "template": "\n".join(parts)})
        path, where = write_recipe(folder, recipe)
        text = expect_error(
            [*command, path], folder, "prompt-template", file=path, line=where[("prompt", "template")],
            names=["prompt.template", f"{{{bad}}}"],
        )  # fmt: skip
        if close:
            assert "did you mean {" in text, text


@FUZZ
@given(command=COMMANDS, data=st.data())
def test_verbalizer_entry_with_an_empty_word(base, models, command, data):
    words = {label: data.draw(st.lists(WORDS, min_size=1, max_size=3)) for label in LABELS}
    label = data.draw(st.sampled_from(LABELS))
    if data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(words[label])))
        words[label].insert(index, data.draw(st.text(" \t", max_size=3)))
        expected = f"prompt.verbalizer.{label}.{index}"
    else:
        words[label], expected = [], f"prompt.verbalizer.{label}"
    prompt = {"mode": "verbalizer", "template": "{text} it was {mask}", "verbalizer": words}
    with case_dir(base) as folder:
        path, where = write_recipe(folder, prompt_recipe(folder, models, ["text"], prompt))
        expect_error(
            [*command, path], folder, "prompt-verbalizer", file=path,
            line=where[("prompt", "verbalizer", label)], names=[expected],
        )  # fmt: skip


# ------------------------------------------------------------------------------------------- data files
SAFE_TEXT = st.text(string.ascii_letters + string.digits + " .,;:!?'\"-éü中", min_size=1, max_size=30).filter(
    lambda s: s.strip() and not s.strip().startswith(("[", "{"))  # CSV cells starting so are parsed as JSON
)
FORMATS = [".jsonl", ".json", ".csv", ".tsv"]
SURROGATE, DEEP = "@@surrogate@@", "@@deep@@"
MISSING = object()


def data_bytes(records: list, suffix: str, header: list[str] | None = None) -> tuple[bytes, list[int]]:
    """The file's bytes and the line each record starts on. Records may be non-objects (JSON formats)."""
    if suffix in (".csv", ".tsv"):
        out = io.StringIO()
        writer = csv.writer(out, delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
        header = header or ["text", "label"]
        writer.writerow(header)
        for record in records:
            row = [record.get(name, MISSING) for name in header]
            while row and row[-1] is MISSING:
                row.pop()  # a field left out: a short row
            writer.writerow(["" if cell is None else cell for cell in row])
        return out.getvalue().encode("utf-8"), [i + 2 for i in range(len(records))]
    dumped = [json.dumps(r, ensure_ascii=False) for r in records]
    dumped = [
        d.replace(SURROGATE, "\\ud800").replace(f'"{DEEP}"', "[" * 100_000 + "]" * 100_000) for d in dumped
    ]
    if suffix == ".jsonl":
        return ("\n".join(dumped) + "\n").encode("utf-8"), [i + 1 for i in range(len(records))]
    return ("[\n" + ",\n".join(dumped) + "\n]\n").encode("utf-8"), [i + 2 for i in range(len(records))]


# defect -> (formats it applies to, message parts; commands it is an error for)
DEFECTS = {
    "missing_label": (FORMATS, ["'label'", "missing"]),
    "null_label": (FORMATS, ["'label'"]),
    "nan_label": ([".jsonl", ".json"], ["'label'"]),
    "list_label": ([".jsonl", ".json"], ["'label'"]),
    "label_not_in_labels": (FORMATS, ["'label'", "task.labels"]),
    "blank_text": (FORMATS, ["'text'"]),
    "misspelt_field": (FORMATS, ["'text'", "did you mean"]),
    "not_an_object": ([".jsonl", ".json"], ["JSON object"]),
    "truncated": ([".jsonl", ".json"], ["not valid JSON"]),
    "bad_utf8": (FORMATS, ["UTF-8"]),
    "surrogate": ([".jsonl", ".json"], ["surrogate"]),
    "deep": ([".jsonl", ".json"], ["nested too deeply"]),
}
TRAIN_ONLY = {"label_not_in_labels"}  # `data check --shape classify` has no label set


@st.composite
def data_case(draw, big: bool = False):
    suffix = draw(st.sampled_from(FORMATS))
    defect = draw(st.sampled_from([d for d, (formats, _) in DEFECTS.items() if suffix in formats]))
    command = "train" if defect in TRAIN_ONLY else draw(st.sampled_from(["train", "data check"]))
    n = draw(st.integers(1, 6))
    records = [{"text": draw(SAFE_TEXT), "label": draw(st.sampled_from(LABELS))} for _ in range(n)]
    k = 0 if defect == "misspelt_field" and suffix in (".csv", ".tsv") else draw(st.integers(0, n - 1))
    if big:  # a 10 MB line before (or on) the bad one
        records[draw(st.integers(0, k))]["text"] = "word " * (BIG // 5)
    record, header, wrong = records[k], None, None
    if defect == "missing_label":
        del record["label"]
    elif defect == "null_label":
        record["label"] = None
    elif defect == "nan_label":
        record["label"] = float("nan")
    elif defect == "list_label":
        record["label"] = draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=2))
    elif defect == "label_not_in_labels":
        record["label"] = draw(WORDS.filter(lambda s: s.strip() not in LABELS))
    elif defect == "blank_text":
        record["text"] = draw(st.text(" \t", max_size=3))
    elif defect == "misspelt_field":
        wrong, _ = draw(misspelt(["text"]).filter(lambda kc: kc[1]))
        if suffix in (".csv", ".tsv"):
            header = [wrong, "label"]
            for r in records:
                r[wrong] = r.pop("text")
        else:
            record[wrong] = record.pop("text")
    elif defect == "not_an_object":
        records[k] = draw(st.one_of(st.integers(), st.lists(st.integers(), max_size=2), WORDS, st.none()))
    elif defect == "surrogate":
        record["text"] = SURROGATE
    elif defect == "deep":
        record["label"] = DEEP
    content, starts = data_bytes(records, suffix, header)
    lines = content.split(b"\n")
    line = starts[k]
    if defect == "truncated":
        body = lines[line - 1]
        lines[line - 1] = body[: draw(st.integers(1, len(body) - 1))]
        lines = lines[:line] if suffix == ".json" else lines  # .json: the file ends inside the record
    elif defect == "bad_utf8":
        body = lines[line - 1]
        at = draw(st.integers(1, max(1, len(body) - 1)))
        lines[line - 1] = (
            body[:at] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf"])) + body[at:]
        )
    content = b"\n".join(lines)
    bom = draw(st.booleans())
    names = list(DEFECTS[defect][1]) + ([f"did you mean '{wrong}'"] if wrong else [])
    split = draw(st.sampled_from(["train", "test"]))
    return {"suffix": suffix, "defect": defect, "command": command, "content": (b"\xef\xbb\xbf" if bom else b"") + content,
            "line": line, "names": names, "split": split}  # fmt: skip


def run_data_case(base, models, case, family):
    with case_dir(base) as folder:
        path = folder / f"records{case['suffix']}"
        path.write_bytes(case["content"])
        if case["command"] == "data check":
            args = ["data", "check", path, "--shape", "classify"]
        else:
            recipe = prepared(folder, models)
            if case["split"] == "test":  # eval and test files are validated before anything starts, too
                recipe["data"]["test"] = str(path)
            else:
                recipe["data"]["train"] = str(path)
            args = ["train", write_recipe(folder, recipe)[0]]
        expect_error(args, folder, family, file=path, line=case["line"], names=case["names"])


@WIDE
@given(case=data_case())
def test_malformed_data_file_names_file_line_and_field(base, models, case):
    run_data_case(base, models, case, f"data-{case['defect']}")


@HEAVY
@given(case=data_case(big=True))
def test_a_10mb_line_is_read_and_the_bad_record_still_named(base, models, case):
    run_data_case(base, models, case, "data-10mb")


@FUZZ
@given(
    suffix=st.sampled_from(FORMATS),
    command=st.sampled_from(["train", "data check"]),
    content=st.sampled_from(["", "\n", "  \n\n", "[]", "header"]),
    bom=st.booleans(),
)
def test_a_data_file_without_records(base, models, suffix, command, content, bom):
    assume(content != "[]" or suffix == ".json")
    assume(content != "header" or suffix in (".csv", ".tsv"))
    text = "text,label\n".replace(",", "\t" if suffix == ".tsv" else ",") if content == "header" else content
    with case_dir(base) as folder:
        path = folder / f"records{suffix}"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
        if command == "data check":
            args = ["data", "check", path]
        else:
            recipe = prepared(folder, models)
            recipe["data"]["train"] = str(path)
            args = ["train", write_recipe(folder, recipe)[0]]
        expect_error(args, folder, "data-empty", file=path, names=["no records"])


@FUZZ
@given(suffix=st.sampled_from(FORMATS), texts=st.lists(SAFE_TEXT, min_size=1, max_size=5))
def test_a_utf8_bom_is_accepted_and_read_as_nothing(base, suffix, texts):
    records = [{"text": t, "label": LABELS[i % 2]} for i, t in enumerate(texts)]
    with case_dir(base) as folder:
        path = folder / f"records{suffix}"
        path.write_bytes(b"\xef\xbb\xbf" + data_bytes(records, suffix)[0])
        result = invoke(["data", "check", path, "--shape", "classify"], "data-bom-ok")
        assert result.exit_code == 0, result.output
        assert f"{len(records)} records" in result.output
        assert "\ufeff" not in result.output and "  text: in" in result.output


@FUZZ
@given(
    defect=st.sampled_from(["null_label", "label_not_in_labels", "blank_text", "misspelt", "garbage", "cut"]),
    n=st.integers(1, 5),
    data=st.data(),
)
def test_malformed_parquet_names_file_row_and_field(base, models, defect, n, data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = good_records(n)
    k = data.draw(st.integers(0, n - 1))
    names = [f"row {k}", "'label'"]
    if defect == "null_label":
        records[k]["label"] = None
    elif defect == "label_not_in_labels":
        records[k]["label"] = data.draw(WORDS.filter(lambda s: s not in LABELS))
        names.append("task.labels")
    elif defect == "blank_text":
        records[k]["text"], names = data.draw(st.text(" \t", max_size=3)), [f"row {k}", "'text'"]
    elif defect == "misspelt":
        wrong, _ = data.draw(misspelt(["text"]).filter(lambda kc: kc[1]))
        records = [{wrong: r["text"], "label": r["label"]} for r in records]
        names = ["row 0", "'text'", f"did you mean '{wrong}'"]
    with case_dir(base) as folder:
        path = folder / "records.parquet"
        pq.write_table(pa.Table.from_pylist(records), path)
        if defect in ("garbage", "cut"):
            content = path.read_bytes()
            cut = data.draw(st.integers(1, len(content) - 1))
            garbage = data.draw(
                st.binary(min_size=1, max_size=200).filter(lambda b: not b.startswith(b"PAR1"))
            )
            path.write_bytes(content[:cut] if defect == "cut" else garbage)
            names = ["not a readable parquet file"]
        if defect != "label_not_in_labels" and data.draw(st.booleans()):
            args = ["data", "check", path, "--shape", "classify"]
        else:
            recipe = prepared(folder, models)
            recipe["data"]["train"] = str(path)
            args = ["train", write_recipe(folder, recipe)[0]]
        expect_error(args, folder, f"parquet-{defect}", file=path, names=names)


# ------------------------------------------------------------------------------------------- generate + label_map
@FUZZ
@given(n=st.integers(1, 5), data=st.data())
def test_gold_value_missing_from_label_map(base, models, n, data):
    mapping = {"Humans": "1", "Animals": "0"}
    records = [{"text": "some words", "label": data.draw(st.sampled_from(list(mapping)))} for _ in range(n)]
    k = data.draw(st.integers(0, n - 1))
    records[k]["label"] = data.draw(WORDS.filter(lambda s: s not in mapping))
    with case_dir(base) as folder:
        path = folder / "train.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        recipe = {
            "model": {"name": models["llama"]},
            "task": {"type": "generate", "instruction": "Humans or animals?", "text": ["text"],
                     "target": "label", "metric": "label_f1", "labels": ["1", "0"], "label_map": mapping},
            "data": {"train": str(path), "eval": None, "test": None},
            "stage": "sft",
            "output": str(folder / "run"),
        }  # fmt: skip
        expect_error(
            ["train", write_recipe(folder, recipe)[0]], folder, "generate-label-map", file=path, line=k + 1,
            names=["'label'", "task.label_map"],
        )  # fmt: skip


# ------------------------------------------------------------------------------------------- model names
def near_miss(draw) -> str:
    name = draw(st.sampled_from(sorted(MODELS)))
    i = draw(st.integers(0, len(name) - 1))
    new = draw(st.sampled_from(string.ascii_lowercase + string.digits))
    return name[:i] + new + name[i + 1 :]


@FUZZ
@given(data=st.data())
def test_models_pull_of_a_near_miss_suggests_the_catalog_name(base, data):
    name = near_miss(data.draw)
    assume(name not in MODELS)
    with case_dir(base) as folder:
        expect_error(["models", "pull", name], folder, "model-pull", names=[name, "did you mean"])


@FUZZ
@given(data=st.data())
def test_train_with_a_model_name_that_exists_nowhere(base, models, data):
    name = near_miss(data.draw)
    assume(name not in MODELS and not Path(name).exists())
    with case_dir(base) as folder:
        recipe = prepared(folder, models)
        recipe["model"]["name"] = name
        path = write_recipe(folder, recipe)[0]
        names = [f"model {name!r}", "did you mean '"]  # resolved (and failed) before the run folder starts
        text = expect_error(["train", path], folder, "model-train", names=names, guard=False)
        assert re.search(r"did you mean '([^']+)'", text).group(1) in MODELS


# ------------------------------------------------------------------------------------------- the oracle itself
def test_the_clean_cases_pass_so_each_failure_is_the_defect(base, models):
    """The base recipe and data are valid: `recipes check` passes and `train` gets as far as loading the model."""
    with case_dir(base) as folder:
        path = write_recipe(folder, prepared(folder, models))[0]
        assert invoke(["recipes", "check", path], "clean").exit_code == 0
        result = invoke(["train", path], "clean-guard")  # the guard's AssertionError: not a crash found
        assert isinstance(result.exception, AssertionError) and "a model was loaded" in str(result.exception)
        for mode in ("zero_shot", "verbalizer"):
            template = "{text}" + (" {mask}" if mode == "verbalizer" else "")
            prompt = {"mode": mode, "template": template}
            recipe = write_recipe(folder, prompt_recipe(folder, models, ["text"], prompt))[0]
            assert invoke(["recipes", "check", recipe], "clean").exit_code == 0


def test_sft_data_error_leaves_no_run_folder(base, models):
    with case_dir(base) as folder:
        path = folder / "train.jsonl"
        path.write_text('{"instruction": "hi"}\n', encoding="utf-8")
        recipe = {"model": {"name": models["llama"]}, "task": {"type": "sft"}, "stage": "sft",
                  "data": {"train": str(path), "eval": None, "test": None}, "output": str(folder / "run")}  # fmt: skip
        expect_error(["train", write_recipe(folder, recipe)[0]], folder, "sft-run-folder", file=path, line=1)


def test_a_message_holding_markup_brackets_is_printed_as_is(base):
    with case_dir(base) as folder:
        path = folder / "records.jsonl"
        path.write_text('{"[/x]": "a", "label": "pos"}\n', encoding="utf-8")
        expect_error(
            ["data", "check", path, "--shape", "classify"], folder, "known-markup", file=path, line=1
        )
