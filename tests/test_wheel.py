"""The package as users get it: a wheel built from the tracked files, installed into a fresh
venv, trains on the shipped demo set and runs a notebook that `ltlab notebooks` copied out."""
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def test_wheel_packages_are_the_subpackages_on_disk():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "ltlab").rglob("__init__.py")}
    listed = set(cfg["packages"])
    assert on_disk == {p for p in listed if not p.startswith("ltlab._shipped")}
    assert cfg["package-dir"] == {"ltlab._shipped.data": "data", "ltlab._shipped.notebooks": "notebooks"}


def test_notebooks_command_copies_and_refuses_to_overwrite(tmp_path, capsys):
    from ltlab.cli import main

    assert main(["notebooks", str(tmp_path / "nb")]) == 0
    names = sorted(p.name for p in (tmp_path / "nb").iterdir())
    assert names == sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    assert main(["notebooks", str(tmp_path / "nb")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["notebooks", str(tmp_path / "nb"), "--force"]) == 0


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow
def test_wheel_from_clean_checkout_trains_and_runs_a_notebook(tmp_path):
    src = tmp_path / "checkout"          # the tracked files only, as a fresh clone has them
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
          str(tmp_path / "dist"), str(src)], env=env)
    wheel = next((tmp_path / "dist").glob("ltlab-*.whl"))
    venv = tmp_path / "venv"             # reuses torch & co. from this interpreter: no network
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], env=env)
    py, bin_ = venv / "bin" / "python", venv / "bin"
    # when this interpreter is itself a venv, --system-site-packages reaches only the base
    # interpreter's packages: a .pth adds this one's, after the new venv's own (the wheel wins)
    own = Path(_run([str(py), "-c", "import site; print(site.getsitepackages()[0])"], env=env).strip())
    (own / "_ltlab_test_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(wheel)], env=env)
    work = tmp_path / "work"             # neither the repository nor its data/ in sight
    work.mkdir()
    where = _run([str(py), "-c", "import ltlab.resources as r; print(r.data_dir())"], cwd=work, env=env)
    assert str(venv) in where and (Path(where.strip()) / "demo" / "train").is_dir()
    run_dir = work / "runs" / "demo_e1"
    _run([str(bin_ / "ltlab"), "train", "dataset=demo", "epochs=1", "device=cpu", "progress=false",
          f"run_dir={run_dir}"], cwd=work, env={**env, "TQDM_DISABLE": "1"})
    assert (run_dir / "summary.json").is_file()
    _run([str(bin_ / "ltlab"), "notebooks", str(work / "notebooks")], cwd=work, env=env)
    kernels = venv / "share" / "jupyter"     # the kernel must be the venv's python, not this one
    _run([str(py), "-m", "ipykernel", "install", "--prefix", str(venv), "--name", "ltlab"], env=env)
    out = work / "02_energy.out.ipynb"
    _run([str(py), "-m", "papermill", str(work / "notebooks" / "02_energy.ipynb"), str(out), "-k", "ltlab",
          "-p", "run_dir", str(run_dir), "--cwd", str(work)], cwd=work, env={**env, "JUPYTER_PATH": str(kernels)})
    import nbformat

    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert str(run_dir) in text and "AUROC" in "".join(str(c.get("outputs")) for c in nb.cells)
