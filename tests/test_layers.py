"""The two layers, read from the source: every import of every module, lazy ones included.

- The compute layer (``bench/core``, ``attacks``, ``defenses``) imports the standard
  library, torch, torchvision, numpy and PIL, and its own modules; nothing of Ray,
  MLflow, pandas, YAML or the orchestration layer. One module has a named exception:
  the embedded digits dataset is scikit-learn's bundled copy.
- Orchestration (the rest of ``bench``) reaches the compute layer only through the names
  ``bench.core`` exposes (its ``__all__``): never a module inside it, never ``attacks`` or
  ``defenses`` directly.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMPUTE_PACKAGES = ("bench.core", "attacks", "defenses")
COMPUTE_THIRD_PARTY = frozenset({"torch", "torchvision", "numpy", "PIL"})
FACE = "bench.core"
# module → (package it may import besides the above, why)
COMPUTE_EXCEPTIONS = {"bench.core.datasets.digits": ("sklearn", "the embedded dataset is scikit-learn's bundled copy")}


def module_name(path: Path, repo: Path) -> str:
    parts = list(path.relative_to(repo).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.Module, module: str, is_package: bool) -> list[tuple[int, str, tuple[str, ...]]]:
    """``(line, imported module, names taken from it)`` for every import statement in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, base, tuple(alias.name for alias in node.names)))
    return found


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def face_names(repo: Path) -> frozenset[str]:
    """The names in ``bench/core/__init__.py``'s ``__all__``."""
    tree = ast.parse((repo / "bench" / "core" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return frozenset(ast.literal_eval(node.value))
    return frozenset()


def compute_violation(module: str, target: str) -> str | None:
    top = target.split(".")[0]
    if top in sys.stdlib_module_names or top in COMPUTE_THIRD_PARTY:
        return None
    if module in COMPUTE_EXCEPTIONS and top == COMPUTE_EXCEPTIONS[module][0]:
        return None
    if any(within(target, package) for package in COMPUTE_PACKAGES):
        return None
    return f"the compute layer may import only the standard library, {', '.join(sorted(COMPUTE_THIRD_PARTY))} and its own modules"


def orchestration_violation(target: str, names: tuple[str, ...], face: frozenset[str]) -> str | None:
    if within(target, "attacks") or within(target, "defenses"):
        return "orchestration reaches attacks and defenses through bench.core's face"
    if within(target, FACE) and target != FACE:
        return "orchestration may import only the names bench.core exposes, not its modules"
    outside = [name for name in names if name not in face]
    if target == FACE and outside:
        return f"{', '.join(outside)} is not in bench.core.__all__"
    return None


def import_violations(repo: Path) -> list[str]:
    """One line per import that breaks the layer rule: ``path:line imports X: why``."""
    face = face_names(repo)
    problems = []
    files = [p for folder in ("bench", "attacks", "defenses") for p in sorted((repo / folder).rglob("*.py"))]
    for path in files:
        module = module_name(path, repo)
        compute = any(within(module, package) for package in COMPUTE_PACKAGES)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target, names in imported(tree, module, path.name == "__init__.py"):
            if target == "__future__":
                continue
            why = compute_violation(module, target) if compute else orchestration_violation(target, names, face)
            if why:
                problems.append(f"{path.relative_to(repo)}:{line} imports {target}: {why}")
    return problems


def test_the_tree_keeps_the_layer_rule():
    assert import_violations(REPO) == []


def test_the_face_exports_only_names_it_defines():
    import bench.core

    assert set(bench.core.__all__) == face_names(REPO)
    assert all(hasattr(bench.core, name) for name in bench.core.__all__)


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_planted_violations_are_each_found(tmp_path):
    write(tmp_path, "bench/__init__.py", "")
    write(tmp_path, "bench/core/__init__.py", "from bench.core.train import train\n__all__ = ['train']\n")
    write(tmp_path, "bench/core/train.py", "import math\nimport torch\nfrom bench.core import data\n")
    write(tmp_path, "bench/core/store.py", "def f():\n    import pandas\n")  # a lazy import counts
    write(tmp_path, "bench/core/rel.py", "from ..grid import Grid\n")  # relative, resolves to bench.grid
    write(tmp_path, "bench/core/datasets/digits.py", "from sklearn.datasets import load_digits\n")  # the exception
    write(tmp_path, "bench/core/datasets/mnist.py", "from sklearn.datasets import fetch_openml\n")  # not excepted
    write(tmp_path, "attacks/__init__.py", "")
    write(tmp_path, "attacks/a.py", "import yaml\nfrom bench.core.train import train\n")
    write(tmp_path, "defenses/__init__.py", "")
    write(tmp_path, "defenses/d.py", "from bench import grid\nfrom PIL import Image\nimport numpy\n")
    write(tmp_path, "bench/sweep.py", "from bench.core.train import train\nfrom bench.core import train as t, run\n")
    write(tmp_path, "bench/cli.py", "import attacks\nimport ray\nfrom bench.core import train\n")

    found = sorted(import_violations(tmp_path))
    assert [line.split(" imports ")[0] for line in found] == [
        "attacks/a.py:1",
        "bench/cli.py:1",
        "bench/core/datasets/mnist.py:1",
        "bench/core/rel.py:1",
        "bench/core/store.py:2",
        "bench/sweep.py:1",
        "bench/sweep.py:2",
        "defenses/d.py:1",
    ]
    assert "run is not in bench.core.__all__" in found[6]
    assert "pandas" in found[4] and "standard library" in found[4]
