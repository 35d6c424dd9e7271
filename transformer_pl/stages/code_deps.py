"""The code a stage runs, derived from the import graph instead of kept by hand.

A stage's result depends on its own function, the functions of its module that it calls, and
every module of this package that those import — anywhere in their bodies, since the stages
import their libraries lazily — and, transitively, everything those modules import (at module
level or inside functions: a module's behaviour is all of it). Package `__init__` files count,
as Python runs them on import. The list is what `dvc.yaml` and the Prefect cache hash as the
stage's code: edit any of those files and the stage re-runs, nothing else does.

Static (the AST, nothing imported or run), so it costs milliseconds at import time.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

PACKAGE = "transformer_pl"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_ROOT = PACKAGE_DIR.parent


def code_deps(function: Callable[..., object]) -> tuple[str, ...]:
    """Project-relative paths of every package module `function` (a stage) runs, sorted."""
    module = function.__module__
    seeds = {module, *_imports_of_function(module, function.__name__)}
    modules: set[str] = set()
    pending = [name for name in seeds if _is_package_module(name)]
    while pending:
        name = pending.pop()
        if name in modules:
            continue
        modules.add(name)
        if name == module:  # the stage's own module: only what the stage itself reaches
            continue
        pending += [imported for imported in _module_imports(name) if imported not in modules]
    files = {_module_file(name) for name in modules}
    files |= {init for name in modules for init in _package_inits(name)}
    return tuple(sorted(path.relative_to(PROJECT_ROOT).as_posix() for path in files))


def _is_package_module(name: str) -> bool:
    return (name == PACKAGE or name.startswith(f"{PACKAGE}.")) and _module_path(name) is not None


def _module_path(name: str) -> Path | None:
    relative = Path(*name.split("."))
    for candidate in (PROJECT_ROOT / f"{relative}.py", PROJECT_ROOT / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_file(name: str) -> Path:
    path = _module_path(name)
    if path is None:
        raise ValueError(f"no source file for module {name}")
    return path


def _package_inits(name: str) -> Iterator[Path]:
    parts = name.split(".")
    for depth in range(1, len(parts)):
        init = PROJECT_ROOT.joinpath(*parts[:depth], "__init__.py")
        if init.is_file():
            yield init


@cache
def _tree(name: str) -> ast.Module:
    return ast.parse(_module_file(name).read_text(encoding="utf-8"))


def _resolved(name: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package modules an import statement in module `name` loads (`from a import b` loads
    `a.b` when b is a module, else `a`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if _is_package_module(alias.name)]
    if node.level:
        raise ValueError(
            f"{name}: relative import at line {node.lineno}; the package imports absolutely"
        )
    base = node.module or ""
    found = [base] if _is_package_module(base) else []
    found += [
        f"{base}.{alias.name}" for alias in node.names if _is_package_module(f"{base}.{alias.name}")
    ]
    return found


@cache
def _module_imports(name: str) -> tuple[str, ...]:
    """Every package module that module `name` imports, wherever the import stands."""
    return tuple(
        imported
        for node in ast.walk(_tree(name))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for imported in _resolved(name, node)
    )


def _imports_of_function(module: str, function: str) -> set[str]:
    """What `function` of `module` imports, with the module-level imports and the imports of
    the module's functions it calls (directly or through each other)."""
    tree = _tree(module)
    functions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    module_level = {
        imported
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for imported in _resolved(module, node)
    }
    reached: set[str] = set()
    pending = [function]
    imports = set(module_level)
    while pending:
        current = pending.pop()
        if current in reached or current not in functions:
            continue
        reached.add(current)
        for node in ast.walk(functions[current]):
            if isinstance(node, ast.Import | ast.ImportFrom):
                imports.update(_resolved(module, node))
            elif isinstance(node, ast.Name) and node.id in functions:
                pending.append(node.id)
    return imports
