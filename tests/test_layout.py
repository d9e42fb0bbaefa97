"""The package's shape, as the README's Layout section promises it: no import cycles (function-level imports
included), short functions, a training entry point that reads in one sitting, and one error base class."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import distgan
from distgan.errors import DistganError

ROOT = Path(__file__).resolve().parents[1]

PACKAGE = Path(distgan.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The distgan modules ``path`` imports, anywhere in the file (a function-level import counts too)."""
    me, out = module_name(path), set()
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    known = {module_name(p) for p in MODULES}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("distgan")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if not base.startswith("distgan"):
                continue
            for a in node.names:  # `from distgan import resume` imports the module distgan.resume
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m in known and m != me}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = {module_name(p): imports(p) for p in MODULES}
    graph.pop("distgan", None)  # the package's __init__ imports nothing of its own
    assert "distgan.models" in graph["distgan.config"]  # the graph sees module-to-module imports
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_no_function_longer_than_80_lines():
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in MODULES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, long


def test_the_training_entry_point_stays_short():
    assert len((PACKAGE / "train.py").read_text().splitlines()) <= 300


def test_every_user_facing_error_shares_one_base():
    """main() catches DistganError: every error class the package defines derives from it."""
    mods = [importlib.import_module(m.name) for m in pkgutil.walk_packages(distgan.__path__, "distgan.")]
    mods = [m for m in mods if not m.__name__.startswith("distgan.bench.__main__")]
    errors = {
        obj
        for m in mods
        for _, obj in inspect.getmembers(m, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__.startswith("distgan")
    }
    strays = sorted(e.__qualname__ for e in errors if not issubclass(e, DistganError) and e.__name__ != "Stopped")
    assert len(errors) >= 9 and not strays, strays


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_every_module_says_what_it_is_for(path):
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no module docstring"


def test_the_readme_names_the_slurm_signal_the_scripts_ask_for():
    readme = (ROOT / "README.md").read_text()
    said = set(re.findall(r"--signal=(?:B:)?([A-Z0-9]+@\d+)", readme))
    asked = set(re.findall(r"--signal=(?:B:)?([A-Z0-9]+@\d+)", (ROOT / "launch" / "slurm.sbatch").read_text()))
    asked |= set(re.findall(r"--signal=(?:B:)?([A-Z0-9]+@\d+)", (ROOT / "distgan" / "compare.py").read_text()))
    assert said and said <= asked, said - asked


def test_every_test_the_readme_map_names_exists():
    """The README's "What is tested" map: every row names tests, and each named test is a function of the
    named file (a renamed or deleted test fails here, so the map cannot rot)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("What is tested:") :]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| promise")]
    assert len(rows) >= 30, "the map lists the README's promises"
    for row in rows:
        named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", row)
        assert named, f"a promise with no test: {row}"
        for file, name in named:
            path = ROOT / "tests" / file
            assert path.is_file(), f"{file} (in the README's map) does not exist"
            defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
            assert name in defined, f"{file}::{name} (in the README's map) does not exist"
