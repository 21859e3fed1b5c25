# Two commands: `make demo` and `make test`. Each sets up .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ltlab-installed

.PHONY: venv demo test lab kernel notebooks clean-reports

# uv installs the ~160 packages instead of pip (pip only fetches uv itself): 10 s with a warm cache,
# 39 s with an empty one, where pip took 128 s (docs/performance.md).
# --compile-bytecode: uv does not write .pyc files by default (pip does), and where
# PYTHONDONTWRITEBYTECODE is set (this machine) no import ever writes them either, so every process
# compiled torch, pandas and scipy from source again: 8.6 s to import what a notebook kernel imports,
# 3.5 s with the .pyc files (2026-12-04, docs/performance.md); make demo starts 12 such processes.
# uv does not read pip's configuration, so the constraints pip would apply on this machine
# (PIP_CONSTRAINT or pip.conf's global.constraint) are passed on: both install the same releases.
PIP_CONSTRAINTS := $(strip $(or $(PIP_CONSTRAINT),$(shell python3 -m pip config list 2>/dev/null | sed -n "s/^global.constraint='\(.*\)'$$/\1/p")))
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) $(foreach c,$(PIP_CONSTRAINTS),--constraint $(c)) -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name ltlab --display-name "ltlab" >/dev/null
	touch $(STAMP)

venv: $(STAMP)

kernel: $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name ltlab --display-name "ltlab"

# the live training on the demo set, then the analysis pages of the archived full-length
# CIFAR-10-LT runs (experiments/results; no training), two at a time (on 2 cores, 2026-12-01: the
# 40-epoch demo batch 322 s with --jobs 2 and 352 s with 1). 2026-12-04, 30 epochs and CE's pages,
# bytecode compiled at install: 112 s and 28 s, 161 s from a fresh clone with uv's cache warm and
# 183 s with it empty (scripts/time_make_demo.sh; docs/performance.md)
demo: $(STAMP)
	$(VENV)/bin/ltlab batch experiments/demo.yaml --jobs 2
	$(VENV)/bin/ltlab batch experiments/demo_archive.yaml --jobs 2

# two xdist workers, each torch on one thread (two 2-thread workers on 2 cores fight over them),
# in conftest's longest-first file order (xdist's default reorders files by test count, which
# left the one-test long files for the end); 2 cores: 1168 s where one process took about 1430 s;
# 925 s with the .pyc files (docs/performance.md)
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/ruff check ltlab tests scripts
	$(VENV)/bin/lint-imports --no-cache
	TQDM_DISABLE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# mutation testing of the numeric core (metrics, failure, scores, post-hoc, calibration + EM, intervals,
# losses, samplers, schedule): mutmut 3 on a copy of ltlab/ and tests/ in $TMPDIR (the sources here
# are never edited), each mutant against the unit tests that reach its function, two workers;
# report, how to read it and the wall time in experiments/mutants/README.md (docs/developing.md)
.PHONY: mutants
MUTANT_JOBS ?= 2
mutants: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) scripts/mutants.py --jobs $(MUTANT_JOBS)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# notebooks/X.ipynb <-> notebooks/src/X.py (notebooks/jupytext.toml): the newer of each pair wins
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/src/*.py

clean-reports:
	rm -rf reports/*/
