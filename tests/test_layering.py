"""The library never imports the paper's reproduction (``sparsedepth.paper``).

Every module outside ``src/sparsedepth/paper/`` is read with ``ast``: no ``import`` statement, at the top or
inside a function, absolute or relative, may reach the paper layer. The command line composes the program
and names paper modules only as strings, which it imports when their command runs.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sparsedepth"
PAPER = "sparsedepth.paper"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (or in ``source``, read as that file),
    relative ones resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text() if source is None else source, filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            # `from sparsedepth import paper` imports the paper layer as much as `import sparsedepth.paper`
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def library_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if PAPER.split(".")[1] not in p.relative_to(PACKAGE).parts[:1])


def test_the_library_is_found() -> None:
    names = {module_name(p) for p in library_files()}
    assert {"sparsedepth.config", "sparsedepth.train.loop", "sparsedepth.probes.suite", "sparsedepth.cli"} <= names
    assert not any(n.startswith(PAPER) for n in names)


@pytest.mark.parametrize("path", library_files(), ids=lambda p: module_name(p))
def test_library_module_does_not_import_the_paper_layer(path: Path) -> None:
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {mod}" for line, mod in imported_modules(path)
           if mod == PAPER or mod.startswith(PAPER + ".")]
    assert not bad, "the library must not import the paper layer: " + "; ".join(bad)


@pytest.mark.parametrize("statement", ["from ..paper.spec.experiments import resolve", "from .. import paper",
                                       "import sparsedepth.paper.pipeline.results as R",
                                       "from sparsedepth.paper import report"])
def test_the_checker_sees_every_spelling(statement: str) -> None:
    """An import of the paper layer, at the top or inside a function, relative or absolute, is caught."""
    source = f"def f():\n    {statement}\n"
    mods = [m for _, m in imported_modules(PACKAGE / "train" / "cli.py", source)]
    assert any(m.startswith(PAPER) for m in mods), mods


def test_importing_the_library_loads_no_paper_module() -> None:
    code = ("import sys, sparsedepth.cli, sparsedepth.bench, sparsedepth.train, sparsedepth.probes, sparsedepth.eval, "
            "sparsedepth.data, sparsedepth.model, sparsedepth.theory, sparsedepth.catalog, sparsedepth.provenance\n"
            f"print(sorted(m for m in sys.modules if m.startswith({PAPER!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_no_module_changes_the_working_directory() -> None:
    """Paths are passed explicitly (an output root, a data root); a chdir would move every other caller too."""
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("chdir", "fchdir"):
                calls.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not calls, f"os.chdir in {calls}; pass the folder to the function that needs it"
