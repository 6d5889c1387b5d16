"""Code-health report for a Python package: big modules, long functions, private names used across modules.

Usage::

    python tools/code_health.py [PACKAGE_DIR] [--max-module-lines 400] [--max-function-lines 80] [--strict]

Prints one line per violation, ``<kind> <path>:<line> [<name>] <detail>``, with ``kind`` one of ``module``
(a module over the line limit), ``function`` (a function or method over the line limit, decorators
excluded) and ``private`` (``from .x import _y``, or ``x._y`` where ``x`` is a module bound by an
import). Paths are relative to the package's parent folder. Exits 1 with ``--strict`` when anything
is printed, else 0. Standard library only (``ast``).
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Violation:
    """One finding: ``kind`` (module, function, private), ``path`` (posix, relative), ``line``, ``name``
    (the function's qualified name, the private name as written, ``""`` for a module) and ``detail``."""

    kind: str
    path: str
    line: int
    name: str
    detail: str

    @property
    def key(self) -> str:
        """An identity that survives edits (for allow-lists): ``kind path[ name]``, no line or size."""
        return f"{self.kind} {self.path} {self.name}".rstrip()

    def __str__(self) -> str:
        return f"{self.kind} {self.path}:{self.line} {self.name} {self.detail}".replace("  ", " ").rstrip()


def is_private(name: str) -> bool:
    """A single-underscore name (``_x``), not a dunder (``__x__``)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(path: Path, root: Path, node: ast.ImportFrom) -> Path | None:
    """The folder or file an ``ImportFrom`` of the package points at (``None`` for outside imports)."""
    if node.level:
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
    elif node.module and node.module.split(".")[0] == root.name:
        base, parts = root.parent, node.module.split(".")
        return base.joinpath(*parts)
    else:
        return None
    return base.joinpath(*node.module.split(".")) if node.module else base


def _is_module(target: Path | None, name: str) -> bool:
    """True when ``name`` under ``target`` is a module or package (importing it is not a private name)."""
    return target is not None and ((target / f"{name}.py").is_file() or (target / name / "__init__.py").is_file())


def _module_names(tree: ast.Module, path: Path, root: Path) -> set[str]:
    """Names bound to the package's own modules by an import anywhere in the file.

    ``import pkg.x as y``, ``from . import x``, ``from pkg.a import x`` where ``x`` is a module file.
    Third-party modules (``argparse._SubParsersAction``) are not the package's business.
    """
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == root.name:
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(path, root, node)
            for alias in node.names:
                if _is_module(target, alias.name):
                    bound.add(alias.asname or alias.name)
    return bound


def _function_lines(node: ast.AST) -> int:
    """Lines from ``def`` to the last line of the body (decorators excluded)."""
    return int(getattr(node, "end_lineno", node.lineno)) - node.lineno + 1


def check_file(path: Path, root: Path, rel: str, max_module: int = MAX_MODULE_LINES,
               max_function: int = MAX_FUNCTION_LINES) -> list[Violation]:
    """The violations in one Python file of the package at ``root`` (``rel`` is the path printed)."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    found: list[Violation] = []
    n_lines = len(text.splitlines())
    if n_lines > max_module:
        found.append(Violation("module", rel, 1, "", f"{n_lines} lines"))

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                n = _function_lines(child)
                if n > max_function:
                    found.append(Violation("function", rel, child.lineno, name, f"{n} lines"))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    modules = _module_names(tree, path, root)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(path, root, node)
            for alias in node.names:
                if target is not None and is_private(alias.name) and not _is_module(target, alias.name):
                    src = "." * node.level + (node.module or "")
                    found.append(Violation("private", rel, node.lineno, alias.name, f"(from {src} import {alias.name})"))
        elif (isinstance(node, ast.Attribute) and is_private(node.attr)
              and isinstance(node.value, ast.Name) and node.value.id in modules):
            found.append(Violation("private", rel, node.lineno, f"{node.value.id}.{node.attr}", "(module attribute)"))
    return found


def check_package(root: Path, max_module: int = MAX_MODULE_LINES,
                  max_function: int = MAX_FUNCTION_LINES) -> list[Violation]:
    """The violations in every ``*.py`` under ``root``, sorted by path and line."""
    root = Path(root).resolve()
    found: list[Violation] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        found.extend(check_file(path, root, rel, max_module, max_function))
    return sorted(found, key=lambda v: (v.path, v.line, v.kind))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path(__file__).resolve().parent.parent / "napari_cardiac_motion"
    parser.add_argument("package", nargs="?", type=Path, default=default, help="package folder to check")
    parser.add_argument("--max-module-lines", type=int, default=MAX_MODULE_LINES)
    parser.add_argument("--max-function-lines", type=int, default=MAX_FUNCTION_LINES)
    parser.add_argument("--strict", action="store_true", help="exit 1 when anything is found")
    args = parser.parse_args(argv)
    if not args.package.is_dir():
        parser.error(f"{args.package} is not a folder; pass the package folder to check")
    found = check_package(args.package, args.max_module_lines, args.max_function_lines)
    for v in found:
        print(v)
    print(f"{len(found)} violation(s)", file=sys.stderr)
    return 1 if (args.strict and found) else 0


if __name__ == "__main__":
    sys.exit(main())
