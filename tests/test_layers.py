"""The package's layers (docs/developing.md): import-linter's contracts hold, no module is part of an
import circle, and the check does fail when a lower layer imports an upper one."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(pythonpath)})


def _cycles(graph) -> list[tuple[str, ...]]:
    """Every import circle, as the chain back: for each import m -> w, a chain w -> ... -> m."""
    out = []
    for m in sorted(graph.modules):
        for w in sorted(graph.find_modules_directly_imported_by(m)):
            back = graph.find_shortest_chain(importer=w, imported=m)
            if back:
                out.append((m, *back))
    return out


def test_contracts_hold():
    res = _lint(REPO, REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert re.search(r"Contracts: (\d+) kept, 0 broken", res.stdout)


def test_no_import_circle():
    graph = grimp.build_graph("ltlab", cache_dir=None)
    assert len(graph.modules) > 60        # every subpackage has an __init__ (namespace packages are not seen)
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_planted_circle(tmp_path, monkeypatch):
    pkg = tmp_path / "circ"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from circ import b\n")
    (pkg / "b.py").write_text("def f():\n    from circ import a  # a function-local import is still an import\n")
    (pkg / "c.py").write_text("from circ import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _cycles(grimp.build_graph("circ", cache_dir=None)) == [("circ.a", "circ.b", "circ.a"),
                                                                  ("circ.b", "circ.a", "circ.b")]


@pytest.mark.parametrize("module, line", [
    ("evaluation/metrics.py", "from ltlab.training import loop  # planted\n"),          # upward
    ("config/schema.py", "def _f():\n    from ltlab.methods import base  # planted\n"),    # lazy, still upward
    ("reports/archive.py", "from ltlab.training import schedule  # planted\n"),          # reports -> training
])
def test_a_planted_upward_import_breaks_the_check(tmp_path, module, line):
    src = tmp_path / "src"
    shutil.copytree(REPO / "ltlab", src / "ltlab", ignore=shutil.ignore_patterns("__pycache__", "_shipped"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(src / "ltlab" / module, "a") as f:
        f.write("\n" + line)
    res = _lint(tmp_path, src)
    assert res.returncode == 1, res.stdout[-2000:]
    assert "BROKEN" in res.stdout and "planted" not in res.stderr
