"""Every shipped recipe (recipes/**/*.yaml with a `model:` section) loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmadapt.config import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# recipes/ also holds other configs (e.g. recipes/synth/ for `lmadapt synth`): a recipe is what has `model:`
PATHS = sorted(p for p in RECIPES.rglob("*.yaml") if "model" in (yaml.safe_load(p.read_text()) or {}))


def test_recipes_found():
    assert len(PATHS) >= 12


@pytest.mark.parametrize("path", PATHS, ids=[str(p.relative_to(RECIPES)) for p in PATHS])
def test_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.output


@pytest.mark.parametrize(
    "method", ["tfidf", "freeze", "lora", "adapter", "full", "prefix", "prompt", "ptuning", "ia3"]
)
def test_pubmed_mesh_recipe_for_every_method(method):
    recipe = load_recipe(RECIPES / f"pubmed-mesh-{method}.yaml")
    assert recipe.method.type == method and recipe.stage == "finetune"
    assert recipe.model.name == "minilm-l6" and recipe.task.text == ["title", "abstract"]
