"""notebooks/X.ipynb and notebooks/src/X.py are one jupytext pair: same cells, no outputs."""
import ast
import io
import tokenize

import jupytext
import nbformat
import pytest
from conftest import REPO
from jupytext.config import load_jupytext_config

NB = REPO / "notebooks"
NAMES = sorted(p.stem for p in NB.glob("*.ipynb"))


def test_every_notebook_has_a_source_and_the_reverse():
    assert NAMES and NAMES == sorted(p.stem for p in (NB / "src").glob("*.py"))


@pytest.mark.parametrize("name", NAMES)
def test_pair_in_sync(name):
    """The .py that jupytext writes from the .ipynb, under the repo's pairing config, is the
    committed .py byte for byte: a cell edited on one side only fails here."""
    config = load_jupytext_config(str(NB))
    assert "ipynb,src//py:percent" in str(config.formats)
    nb = jupytext.read(NB / f"{name}.ipynb")
    text = jupytext.writes(nb, fmt="py:percent", config=config)
    assert text == (NB / "src" / f"{name}.py").read_text(), f"run `make notebooks` ({name})"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_stripped_with_ltlab_kernel(name):
    nb = nbformat.read(NB / f"{name}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "ltlab"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert all(set(c.metadata) <= {"tags"} for c in nb.cells)


@pytest.mark.parametrize("name", NAMES)
def test_parameters_cell_holds_literals(name):
    nb = nbformat.read(NB / f"{name}.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    src = params[0].source
    names = set()
    for stmt in ast.parse(src).body:        # literals only: papermill overrides them one by one
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
        ast.literal_eval(stmt.value)
        names.add(stmt.targets[0].id)
    if name != "01_train":
        assert "interactive" in names and ({"run_dir", "run_dirs"} & names)
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:      # papermill's parameter parser trips on these
            assert not any(ch in tok.string for ch in "='\""), tok.string
