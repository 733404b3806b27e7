"""The recipe schema: strict keys, all errors at once, line numbers, closest keys, overrides."""

import subprocess
import sys
import textwrap
from pathlib import Path

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


PROMPT = """\
model: smollm2-135m-instruct
task: {type: classify, text: [title], labels: [a, b]}
stage: prompt
prompt: {mode: zero_shot}
train: {max_length: 128, seed: 1}
eval: {metrics: [accuracy]}
"""


def test_a_section_or_key_the_stage_ignores_is_an_error_naming_the_stage(tmp_path):
    path = write(tmp_path, PROMPT + "method: {type: lora}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["train.lr=1e-3", "eval.every=no"])
    msg = str(err.value)
    assert "3 problem(s)" in msg
    assert f"{path}:7: method: stage prompt trains nothing: remove 'method' or use stage finetune/sft" in msg
    assert "(override train.lr=...): train.lr: stage prompt trains nothing" in msg
    assert "remove 'train.lr' or use stage finetune/sft" in msg
    assert "remove 'eval.every' or use stage finetune/sft" in msg

    with pytest.raises(RecipeError) as err:  # finetune: the prompt section, and sft's training-loop keys
        load_recipe(write(tmp_path, GOOD + "prompt: {mode: zero_shot}\n"), ["train.packing=rows"])
    msg = str(err.value)
    assert "2 problem(s)" in msg and f"{tmp_path / 'r.yaml'}:7: prompt: stage finetune" in msg
    assert "remove 'prompt' or use stage prompt" in msg
    assert "train.packing: stage finetune does not read it" in msg and "or use stage sft" in msg

    sft = "model: m\ntask: {type: sft}\nstage: sft\neval: {best_metric: loss, every: 5}\n"
    with pytest.raises(RecipeError, match=r"r.yaml:4: eval.best_metric: stage sft keeps no best checkpoint"):
        load_recipe(write(tmp_path, sft))


def test_stage_checks_count_only_keys_written_with_other_than_their_default(tmp_path):
    recipe = load_recipe(write(tmp_path, PROMPT + "method: {type: full}\n"))  # the default, written out
    assert recipe.stage == "prompt"
    # a run folder's config.yaml spells out every key (defaults included) and must load again, any stage
    for text in (PROMPT, GOOD):
        resolved = recipe_to_yaml(load_recipe(write(tmp_path, text)))
        assert load_recipe(write(tmp_path, resolved, "config.yaml")) == load_recipe(write(tmp_path, text))
    sft = {"model": "m", "task": {"type": "sft"}, "stage": "sft", "train": {"packing": "rows"}}
    assert parse_recipe(sft).train.packing == "rows"


def test_stage_table_names_real_keys():
    from lmadapt.config.stages import READS, WHY

    for stage, sections in READS.items():
        for section, reads in sections.items():
            assert section in Recipe.model_fields
            model = Recipe.model_fields[section].annotation
            fields = getattr(model, "model_fields", {})
            assert set(reads or ()) <= set(fields), (stage, section)
            if reads is not None and set(reads) != set(fields):
                assert (stage, section) in WHY


def test_each_method_and_task_is_registered_once_for_schema_and_runtime():
    from lmadapt import methods, tasks
    from lmadapt.config.base import section_tag

    for package, runtime in ((methods, methods.METHODS), (tasks, tasks.TASKS)):
        tags = [section_tag(m.CONFIG) for m in package.MODULES]
        assert tags == [m.__name__.rpartition(".")[2] for m in package.MODULES]
        assert set(runtime) <= set(tags)
    assert set(tags) - set(tasks.TASKS) == {"sft", "generate", "lm", "preference"}  # served by their stages
    with pytest.raises(
        RecipeError, match=r"unknown type 'lorra'; did you mean 'lora'\? \(choose one of: full, "
    ):
        parse_recipe({"model": "m", "task": {"type": "classify"}, "method": {"type": "lorra"}})


def test_a_registered_module_without_its_section_names_the_file_to_edit():
    import types

    from lmadapt.config.base import Section, tagged_union

    module = types.ModuleType("lmadapt.methods.mine")
    module.__file__ = "src/lmadapt/methods/mine.py"
    with pytest.raises(TypeError, match=r"src/lmadapt/methods/mine.py: set CONFIG"):
        tagged_union([module])

    class Mine(Section):
        r: int = 1

    module.CONFIG = Mine
    with pytest.raises(TypeError, match=r"mine.py: Mine needs the field `type: Literal\['mine'\] = 'mine'`"):
        tagged_union([module])


def test_reading_a_recipe_imports_no_torch_or_peft():
    """The method and task sections live beside their code, which must stay cheap to import for a recipe."""
    code = (
        "import sys; from lmadapt.config import load_recipe; load_recipe('recipes/pubmed-mesh-lora.yaml');"
        "print(sorted(m for m in ('torch', 'peft', 'transformers') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_key_of_another_type_of_the_section_is_named_as_such():
    """`backend.type=openai` over a local backend's settings: the error says which type the key belongs to."""
    from lmadapt.config import parse_config
    from lmadapt.synth.config import SynthConfig

    raw = {"backend": {"type": "openai", "base_url": "http://h/v1", "model": "m", "batch_size": 4}}
    with pytest.raises(RecipeError) as err:
        parse_config(raw, SynthConfig, "s.yaml", what="synth config")
    said = " ".join(str(err.value).split())
    assert "'backend.batch_size' is a setting of type local, not of type openai: remove it" in said
    assert "did you mean" not in said
