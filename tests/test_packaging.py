"""Layout and install contract: pyproject and environment.yml name the same dependencies."""
import json
import re

import yaml
from conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_reqs = [r for r in pip if not r.startswith("-e")]
    assert sorted(map(_name, env_reqs)) == sorted(map(_name, project["dependencies"]))
    assert dict((_name(r), r) for r in env_reqs) == dict((_name(r), r) for r in project["dependencies"])
    assert any(r.startswith("-e .") for r in pip), "the conda env must install this package"


def test_torch_requirements_admit_local_builds():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(d for d in deps if _name(d) == "torch")
    tv = next(d for d in deps if _name(d) == "torchvision")
    assert "==" not in torch and "==" not in tv          # no pin for users elsewhere
    from packaging.specifiers import SpecifierSet
    assert "2.14.1" in SpecifierSet(torch[len("torch"):]) and "0.29.1" in SpecifierSet(tv[len("torchvision"):])


def test_top_level_layout_and_ci():
    for name in ("notebooks", "ltlab", "data", "reports", "environment.yml", "README.md", "pyproject.toml",
                 "Makefile", "tests", "experiments", ".ci/run"):
        assert (REPO / name).exists(), name
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def test_notebooks_committed_clean():
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, nb.name
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells if c["cell_type"] == "code")


def test_parameters_cells_hold_parseable_literals(caplog):
    """papermill must parse every parameter line (a '=' in a comment silently breaks it)."""
    import ast

    import papermill

    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        src = "".join(next(c for c in cells if "parameters" in c["metadata"].get("tags", []))["source"])
        for node in ast.parse(src).body:
            assert isinstance(node, ast.Assign), f"{nb.name}: parameters cell holds only assignments"
            ast.literal_eval(node.value)   # literals only
        caplog.clear()
        params = papermill.inspect_notebook(str(nb))
        assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()], nb.name
        assert len(params) == len([n for n in ast.parse(src).body])
