"""The package's import graph: no cycles, imports at the top of modules, and a config that
reports a typo without importing torch, SMP or albumentations."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sever"

# Modules that import sever modules inside functions, each for a measured start-up cost.
LOCAL_IMPORTS_ALLOWED = {
    "sever.config",  # SMP's names (model.catalogue), in validation's second pass (NAMES_CHECKED)
    "sever.engine.launch",  # the trainer after the config: a typo answers in 0.3 s, not 7
}
# Each command imports its library: `sever --help` stays at ~0.3 s.
LOCAL_IMPORTS_PREFIX = "sever.cli."


def local_imports_allowed(module: str) -> bool:
    return module in LOCAL_IMPORTS_ALLOWED or module.startswith(LOCAL_IMPORTS_PREFIX)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported sever module, inside a function) for every import: at the top, inside
    functions and under `if TYPE_CHECKING:` alike (an annotation-only import is still a
    dependency, and a cycle through one is a responsibility in the wrong place)."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names if a.name.startswith("sever"))
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith("sever"):
                module = child.module or ""
                found.append((module, inner))
                found.extend((f"{module}.{a.name}", inner) for a in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """module -> the sever modules it imports, and module -> those it imports locally."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    local: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, inner in imports(path):
            if target in modules and target != name:
                edges[name].add(target)
                if inner:
                    local[name].add(target)
    return edges, local


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            connect(v)
    return found


def described(edges: dict[str, set[str]]) -> list[str]:
    """Each cycle as its modules' imports within it: 'a -> b; b -> a'."""
    return [
        "; ".join(f"{m} -> {', '.join(sorted(edges[m] & set(c)))}" for m in c)
        for c in cycles(edges)
    ]


def test_no_import_cycles() -> None:
    """Counting every import: at the top, inside functions and under TYPE_CHECKING, in
    every module (each of sever/cli/*.py too)."""
    edges, _ = graph()
    assert described(edges) == []


def test_every_kind_of_import_is_counted(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            import sever.a
            if TYPE_CHECKING:
                from sever.b import B
            def f():
                from sever import c
            """
        )
    )
    assert imports(module) == [
        ("sever.a", False),
        ("sever.b", False),
        ("sever.b.B", False),
        ("sever", True),
        ("sever.c", True),
    ]


def test_lazy_public_names_are_in_the_graph() -> None:
    """sever.inference's __getattr__ imports the home of each public name by string; its
    TYPE_CHECKING imports name the same modules, so the graph sees those edges."""
    from sever.inference import _HOME

    edges, _ = graph()
    assert {f"sever.inference.{home}" for home in _HOME.values()} <= edges["sever.inference"]


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_sever_modules_are_imported_at_the_top() -> None:
    _, local = graph()
    offenders = {m: sorted(t) for m, t in local.items() if t and not local_imports_allowed(m)}
    assert offenders == {}


@pytest.mark.parametrize("command", ["train", "bench"])
def test_a_config_typo_needs_no_heavy_library(tmp_path: Path, command: str) -> None:
    """Keys, types and values are checked before the names that need torch, SMP or
    albumentations to check, and `sever train` loads the config before the trainer: a typo
    in a full recipe is reported without importing them (0.3 s instead of 7)."""
    recipe = PACKAGE.parent / "experiments" / "fpn-b5.yml"
    code = textwrap.dedent(
        f"""
        import sys
        from sever.cli import main
        try:
            main([{command!r}, "-c", {str(recipe)!r}, "-o", "trainer.epoch=3"])
        except SystemExit as done:
            print(done.code)
        heavy = ["torch", "segmentation_models_pytorch", "albumentations", "timm"]
        print(sorted(m for m in heavy if m in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    status, loaded = done.stdout.strip().splitlines()
    assert done.stderr == (
        "error: -o trainer.epoch=3: unknown key 'trainer.epoch' (did you mean 'trainer.epochs'?)\n"
    )
    assert (status, loaded) == ("2", "[]")


def test_sever_turns_off_onnxruntimes_telemetry_unless_told_otherwise() -> None:
    # onnxruntime 1.29+ uploads telemetry on Linux unless ORT_DISABLE_TELEMETRY=1 is set
    # before it initialises; importing sever sets it, and keeps a value the user set.
    code = "import os, sever; print(os.environ.get('ORT_DISABLE_TELEMETRY'))"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert found.stdout.strip() == "1", found.stderr
    env["ORT_DISABLE_TELEMETRY"] = "0"
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert found.stdout.strip() == "0", found.stderr
