"""The recipe schema: strict keys, all errors at once, line numbers, closest keys, overrides."""

import subprocess
import sys
import textwrap

import pytest

from lmadapt.config import Recipe, load_recipe, parse_recipe, recipe_to_yaml
from lmadapt.errors import RecipeError

GOOD = """\
model: minilm-l6
task: {type: classify, text: [title, abstract], label: label}
data: {source: pubmed-mesh, max_train: 100}
method: {type: lora, r: 4}
train: {epochs: 1, lr: 1.0e-4}
output: runs/x
"""


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_good_recipe_resolves_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    assert recipe.model.name == "minilm-l6"
    assert recipe.task.text == ["title", "abstract"]
    assert recipe.method.type == "lora" and recipe.method.r == 4 and recipe.method.alpha == 16
    assert recipe.train.batch_size == 16
    # The resolved YAML round-trips to an equal recipe.
    assert parse_recipe(__import__("yaml").safe_load(recipe_to_yaml(recipe))) == recipe


def test_misspelled_section_names_key_and_suggestion_with_line(tmp_path):
    path = write(tmp_path, GOOD + "trian:\n  epochs: 2\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "'trian'" in msg and "'train'" in msg
    assert f"{path}:7" in msg


def test_all_errors_reported_at_once_including_nested_tagged_keys(tmp_path):
    path = write(tmp_path, GOOD.replace("r: 4", "rr: 4").replace("lr: 1.0e-4", "lr: -1"))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert "2 problem(s)" in msg
    assert "method.rr" in msg and "did you mean 'method.r'" in msg
    assert "train.lr" in msg and "-1" in msg


def test_bad_literal_value_names_path_and_value(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, GOOD.replace("type: lora", "type: lorra")))
    assert "method" in str(err.value) and "lorra" in str(err.value)


def test_overrides_apply_dotted_keys_and_are_validated(tmp_path):
    path = write(tmp_path, GOOD)
    recipe = load_recipe(path, ["train.lr=3e-4", "method.r=16", "model.dtype=bfloat16"])
    assert recipe.train.lr == 3e-4 and recipe.method.r == 16 and recipe.model.dtype == "bfloat16"
    with pytest.raises(RecipeError, match="train.lrr"):
        load_recipe(path, ["train.lrr=1"])
    with pytest.raises(RecipeError, match="dotted.key=value"):
        load_recipe(path, ["train.lr"])


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(RecipeError, match=r"r.yaml:\d+: not valid YAML"):
        load_recipe(write(tmp_path, "model: x\ntask: [unclosed\n"))


def test_schema_defaults_are_valid():
    assert Recipe.model_validate({"model": "m", "task": {"type": "classify"}}).method.type == "full"


def test_cli_exits_2_naming_bad_key(tmp_path):
    path = write(tmp_path, GOOD + "trian:\n  epochs: 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lmadapt", "recipes", "check", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "trian" in proc.stderr and "'train'" in proc.stderr
