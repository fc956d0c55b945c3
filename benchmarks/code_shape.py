"""The shape of the engine, measured with ``ast``: what issue 8 asked to bring down, as numbers.

Run by hand from the repository root: ``python benchmarks/code_shape.py [ROOT]`` (ROOT: another
checkout, e.g. an older commit's worktree, to compare). Prints the length of fit() and
train_one_epoch (with and without signature and docstring), their nested functions, ``nonlocal``
and ``except`` counts, the largest modules, the places that call make_loaders, and the lines over
110 characters.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def function_shape(path: Path, name: str) -> str:
    tree = ast.parse(path.read_text())
    f = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    has_doc = isinstance(f.body[0], ast.Expr) and isinstance(f.body[0].value, ast.Constant)
    body = f.body[1:] if has_doc else f.body
    nonlocals = sum(isinstance(n, ast.Nonlocal) for n in ast.walk(f))
    excepts = sum(isinstance(n, ast.ExceptHandler) for n in ast.walk(f))
    nested = sum(isinstance(n, (ast.FunctionDef, ast.Lambda)) for n in ast.walk(f)) - 1
    return (f"{name}: {f.end_lineno - f.lineno + 1} lines, body {body[-1].end_lineno - body[0].lineno + 1}; "
            f"nested defs and lambdas {nested}, nonlocal {nonlocals}, except {excepts}")


def main(root: Path) -> None:
    package = root / "sotakit"
    print(function_shape(package / "train" / "fit.py", "fit"))
    print(function_shape(package / "train" / "loop.py", "train_one_epoch"))
    sizes = sorted(((len(p.read_text().splitlines()), p.relative_to(root)) for p in package.rglob("*.py")),
                   reverse=True)
    print("largest modules: " + ", ".join(f"{p} {n}" for n, p in sizes[:3]))
    calls = []
    for p in package.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "make_loaders":
                # Recipe fields written out as keyword arguments, not taken from the one adapter
                spelled = sum(isinstance(k.value, ast.Attribute)
                              and getattr(k.value.value, "id", "") == "recipe" for k in node.keywords)
                calls.append(f"{p.relative_to(root)}:{node.lineno} ({spelled} fields spelled out)")
    print(f"make_loaders calls in sotakit/: {len(calls)}: {', '.join(sorted(calls))}")
    long = sum(len(line) > 110 for p in package.rglob("*.py") for line in p.read_text().splitlines())
    print(f"lines over 110 characters in sotakit/: {long}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("."))
