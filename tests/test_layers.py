"""Imports point one way: cli -> experiments -> train -> evaluate -> data, models, with recipes and
faults as leaves every layer may import (STYLE.md, "The layout we aim at").

Every import statement in sotakit/ is read with ``ast``, those inside functions and the relative
ones too; an arrow the other way fails, named by file, line and arrow.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sotakit"

# The first name under sotakit. -> its layer. The package root re-exports the public helper API and
# __main__ runs the CLI: both sit at the top with it.
LAYER = {"": "cli", "__main__": "cli", "cli": "cli", "console": "cli", "parsers": "cli",
         "experiments": "experiments", "train": "train", "evaluate": "evaluate", "data": "data",
         "models": "models", "recipes": "recipes", "faults": "faults", "_version": "version"}
RANK = {"cli": 4, "experiments": 3, "train": 2, "evaluate": 1, "data": 0, "models": 0}  # data, models: peers
# import nothing from sotakit but themselves; faults: standard library only
LEAVES = {"recipes", "faults", "version"}



def layer_of(module: str) -> str:
    head = module.split(".")[1] if "." in module else ""
    if head not in LAYER:
        raise AssertionError(f"{module}: no layer for sotakit.{head}: add it to test_layers.LAYER")
    return LAYER[head]


def allowed(src: str, dst: str) -> bool:
    if src == dst:
        return True
    if src in LEAVES:
        return False
    return dst in LEAVES or RANK[src] > RANK[dst]


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(source: str, module: str, is_package: bool = False):
    """(line, imported sotakit module, statement) for every import in ``source`` (of ``module``)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: up level-1 packages from this one
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            # `from pkg import name`: name is a submodule when such a file exists, else an attribute of pkg
            targets = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        for t in targets:
            if t == "sotakit" or t.startswith("sotakit."):
                yield node.lineno, t, ast.unparse(node)


def arrows_against(source: str, module: str, path: str, is_package: bool = False) -> list[str]:
    """``path:line: src -> dst (statement)`` for each import of ``source`` against the direction."""
    src = layer_of(module)
    bad = []
    for line, target, text in imports(source, module, is_package):
        dst = layer_of(target)
        if not allowed(src, dst):
            bad.append(f"{path}:{line}: {src} -> {dst} ({text})")
    if src == "faults":
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            for n in names:
                if n.split(".")[0] not in sys.stdlib_module_names and n.split(".")[0] != "sotakit":
                    bad.append(f"{path}:{node.lineno}: faults -> {n} (faults is standard library only)")
    return bad


def sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        parts = list(rel.with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        yield path.read_text(), module, str(rel), is_package


def test_imports_follow_the_layers():
    bad = [msg for args in sources() for msg in arrows_against(*args)]
    assert not bad, "against cli -> experiments -> train -> evaluate -> data, models:\n" + "\n".join(bad)


def test_the_walk_reads_the_whole_package():
    found = [(module, t) for text, module, _, pkg in sources() for _, t, _ in imports(text, module, pkg)]
    # 33 of 49 files and 333 names when this was written
    assert len({m for m, _ in found}) >= 30 and len(found) >= 200


@pytest.mark.parametrize("module, source, expected", [
    ("sotakit.data.fake", "from ..train.fit import fit\n", ["1: data -> train"]),
    ("sotakit.evaluate.fake", "import os\n\ndef f():\n    import sotakit.experiments.runner\n",
     ["4: evaluate -> experiments"]),  # inside a function
    ("sotakit.models.fake", "from .. import cli\n", ["1: models -> cli"]),
    ("sotakit.data.fake", "from ..models import build_model\n", ["1: data -> models"]),  # peers
    ("sotakit.recipes.fake", "from sotakit.faults import fault_count\n", ["1: recipes -> faults"]),
    ("sotakit.faults", "import torch\nfrom . import data\n", ["1: faults -> torch", "2: faults -> data"]),
    ("sotakit.train.fake", "from .. import __version__\n", ["1: train -> cli"]),
    ("sotakit.cli", "from .train import fit\nfrom .recipes import Recipe\n", []),
    ("sotakit.data.fake", "from ..faults import fault_count\nfrom . import catalog\nimport torch\n", []),
])
def test_the_checker_catches_a_bad_arrow(module, source, expected):
    bad = arrows_against(source, module, "x.py")
    assert sorted(b.removeprefix("x.py:").split(" (")[0] for b in bad) == expected
