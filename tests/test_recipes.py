"""Every shipped recipe (package data lmadapt/recipes/**/*.yaml with a `model:` section) loads and validates;
`lmadapt recipes list|cp` find them through importlib.resources, also from a non-editable install."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lmadapt.cli import app
from lmadapt.config import load_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPES = Path(str(files("lmadapt") / "recipes"))  # a real folder in a source checkout
ALL_YAML = sorted(RECIPES.rglob("*.yaml"))
# recipes/ also holds other configs (e.g. recipes/synth/ for `lmadapt synth`): a recipe is what has `model:`
PATHS = [p for p in ALL_YAML if "model" in (yaml.safe_load(p.read_text()) or {})]
NAMES = sorted(p.relative_to(RECIPES).with_suffix("").as_posix() for p in ALL_YAML)


def test_recipes_found():
    assert len(PATHS) >= 12
    assert {"compare-flagship/lora", "synth/self-instruct", "pubmed-mesh-lora"} <= set(NAMES)


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


def test_repo_root_recipes_is_a_link_to_the_package_data():
    # README commands such as `lmadapt compare recipes/compare-flagship` run from the repository root.
    link = REPO / "recipes"
    assert link.is_symlink() and os.readlink(link) == "src/lmadapt/recipes"
    assert sorted(p.relative_to(link) for p in link.rglob("*.yaml")) == [
        p.relative_to(RECIPES) for p in ALL_YAML
    ]


def test_recipes_list_and_cp_read_the_package_data(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["recipes", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.split() == NAMES  # subfolder recipes too, as folder/name

    for name in ("compare-flagship/lora", "synth/self-instruct.yaml", "pubmed-mesh-lora"):
        dest = tmp_path / f"{name.replace('/', '-')}.out.yaml"
        copied = runner.invoke(app, ["recipes", "cp", name, str(dest)])
        assert copied.exit_code == 0, copied.output
        assert dest.read_text() == (RECIPES / f"{name.removesuffix('.yaml')}.yaml").read_text()
    # a folder as DEST takes the recipe's own file name (and is never replaced by it)
    into = runner.invoke(app, ["recipes", "cp", "compare-flagship/full", str(tmp_path)])
    assert into.exit_code == 0 and (tmp_path / "full.yaml").is_file() and tmp_path.is_dir()

    bad = runner.invoke(app, ["recipes", "cp", "compare-flagship/lorra", str(tmp_path / "x.yaml")])
    assert bad.exit_code == 2 and re.search(r"did you mean\s+'compare-flagship/lora'", bad.output)


def test_a_built_wheel_ships_the_recipes_and_they_work_installed(tmp_path):
    """Build a wheel from a copy of the project, install it into a folder, run `lmadapt recipes` from it."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(project)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("lmadapt-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("lmadapt/recipes/")}
    assert shipped == {f"lmadapt/recipes/{n}.yaml" for n in NAMES}
    with zipfile.ZipFile(wheel) as zf:
        assert (
            zf.read("lmadapt/recipes/compare-flagship/lora.yaml")
            == (RECIPES / "compare-flagship/lora.yaml").read_bytes()
        )

    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--no-compile", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"  # no recipes/ folder or source checkout anywhere near
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def lmadapt(*args):
        return subprocess.run(
            [sys.executable, "-m", "lmadapt", *args], cwd=work, env=env, capture_output=True, text=True
        )

    where = subprocess.run(
        [sys.executable, "-c", "import lmadapt; print(lmadapt.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(site)  # the installed copy, not the checkout
    listed = lmadapt("recipes", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == NAMES
    copied = lmadapt("recipes", "cp", "synth/self-instruct", "mine.yaml")
    assert copied.returncode == 0, copied.stderr
    assert (work / "mine.yaml").read_text() == (RECIPES / "synth" / "self-instruct.yaml").read_text()
