"""The package's imports point down the layers of ../shared/DESIGN.md, and no module imports itself back.

Every `import` / `from ... import` in src/lmadapt, at module level or inside a function, is an edge; an edge
from a lower layer to a higher one, or any cycle between modules, fails with the modules named.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lmadapt"

# DESIGN.md's layers, top to bottom; a module may import its own layer's modules and any lower layer's.
LAYERS = [
    ["cli", "__main__", "serve"],
    ["compare", "synth", "predict", "export", "launch", "auto"],
    ["stages", "baselines", "prompting", "infer", "alignment"],
    [
        "tasks",
        "methods",
        "data",
        "training",
        "evaluation",
        "plots",
        "generative",
        "templates",
        "metrics",
        "runs",
    ],
    ["sources", "config"],
    ["utils", "errors", "__init__"],
]
LAYER_OF = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def top(module: str) -> str:
    return module.split(".")[0]


def imports_of(path: Path) -> set[str]:
    """lmadapt modules imported by `path` (absolute `lmadapt.x` or relative), as dotted names in the package."""
    here = module_name(path).split(".") if module_name(path) != "__init__" else []
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif node.module and node.module.split(".")[0] == "lmadapt":
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from . import x` may name a submodule
                sub = [*target, alias.name]
                found.add(".".join(sub) if _exists(sub) else ".".join(target) or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lmadapt":
                    found.add(".".join(alias.name.split(".")[1:]) or "__init__")
    found.discard(module_name(path))
    return found


def _exists(parts: list[str]) -> bool:
    base = PACKAGE.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_every_top_level_module_has_a_layer():
    tops = {top(m) for m in graph()}
    assert tops <= set(LAYER_OF), f"add to LAYERS (and DESIGN.md): {sorted(tops - set(LAYER_OF))}"


def test_imports_point_down():
    upward = [
        f"{src} -> {dst}"
        for src, dsts in graph().items()
        for dst in dsts
        if LAYER_OF.get(top(dst), 99) < LAYER_OF.get(top(src), 99)
    ]
    assert not upward, "imports that point up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    # a package's __init__ re-exporting its own submodules is not a cycle between modules
    cycles = [c for c in cycles if len({top(m) for m in c.split(" -> ")}) > 1 or "__init__" not in c]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
