"""Shape and value checks of an experiments file (``ltlab batch``), before anything executes.

A batch that only fails inside its notebooks reports each run as failed, minutes later, with
the exit code of a finished batch; a value of the wrong shape (``analysis: x.ipynb``, ``runs:
5``) used to end in a Python TypeError. Both are refused here with one line naming the file,
the key, the value and what is allowed (ltlab.config.ConfigError, exit 2).
"""
from __future__ import annotations

import ast
import dataclasses

from ltlab.config import FIELDS, TYPES, ConfigError, RunConfig, coerce_value, unknown_key
from ltlab.config.checks import NAME_RE, check_ranges
from ltlab.methods.resolve import from_dict

SCALARS = (str, int, float, bool, type(None))
NAME_RULE = "letters, digits and . _ - + = , not starting with '.' (it names files under reports/ and runs/)"


def _is_ref(v) -> bool:
    return isinstance(v, str) and v.startswith("@")


def _grid_value_ok(v) -> bool:
    # a list value is a list-valued parameter (milestones: [[60, 80], [80, 90]]); no deeper nesting
    return isinstance(v, SCALARS) or (isinstance(v, list) and all(isinstance(x, SCALARS) for x in v))


def check_spec(spec: dict, path) -> None:
    """The experiments file's own keys (after batch.load_experiments' basic checks)."""
    def bad(msg):
        return ConfigError(f"experiments file '{path}': {msg}")

    if not NAME_RE.match(spec["name"]):
        raise bad(f"'name' = {spec['name']!r}: allowed {NAME_RULE}")
    if spec.get("notebook") is not None and not str(spec["notebook"]).endswith(".ipynb"):
        raise bad(f"'notebook' = {spec['notebook']!r}: expected a .ipynb file (build it from notebooks/src)")
    analysis = spec.get("analysis")
    if not isinstance(analysis, list) or not all(isinstance(a, str) and a.endswith(".ipynb") for a in analysis):
        raise bad(f"'analysis' = {analysis!r}: expected a list of .ipynb paths")
    compare = spec.get("compare")
    if compare is not None and not (isinstance(compare, str) and compare.endswith(".ipynb")):
        raise bad(f"'compare' = {compare!r}: expected one .ipynb path")
    for key in ("kernel", "runs_root"):
        if key in spec and not (isinstance(spec[key], str) and spec[key]):
            raise bad(f"'{key}' = {spec[key]!r}: expected a non-empty string")
    timeout = spec.get("timeout")
    if timeout is not None and not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
                                    and timeout > 0):
        raise bad(f"'timeout' = {timeout!r}: expected seconds a notebook cell may run (a number > 0), or null")
    if not isinstance(spec.get("runs"), list):
        raise bad(f"'runs' = {spec.get('runs')!r}: expected a list of {{name: str, parameters: {{...}}}}")
    for key, value in spec["parameters"].items():
        if _is_ref(value):
            raise bad(f"parameter '{key}' = {value!r}: '@NAME' references are allowed only in runs[].parameters")
    for key, values in spec["grid"].items():
        for v in values:
            if _is_ref(v):
                raise bad(f"grid key '{key}' value {v!r}: '@NAME' references are allowed only in runs[].parameters")
            if not _grid_value_ok(v):
                raise bad(f"grid key '{key}' value {v!r}: expected a scalar or a list of scalars (one run a value)")
        if len({repr(v) for v in values}) != len(values):
            raise bad(f"grid key '{key}' = {values!r} repeats a value (two runs would share one name)")


def check_run_entry(entry: dict, names: list, path) -> None:
    """One entry of ``runs`` (shape already checked): its name and its parameters' shape."""
    name = entry["name"]
    if not NAME_RE.match(name):
        raise ConfigError(f"experiments file '{path}': run name {name!r}: allowed {NAME_RULE}")
    if name in names:
        raise ConfigError(f"experiments file '{path}': run name {name!r} appears twice; run names must be unique")
    params = entry.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"experiments file '{path}': run '{name}' parameters = {params!r}: expected a mapping")


def check_kernel(kernel: str, path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    known = sorted(KernelSpecManager().find_kernel_specs())
    if kernel not in known:
        raise ConfigError(f"experiments file '{path}': 'kernel' = {kernel!r} is not an installed Jupyter kernel; "
                          f"allowed: {', '.join(known) or 'none installed'}")


def _literal(text):
    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return None      # not a literal: the notebook decides, as with None


def check_training_point(notebook_params: dict, params: dict, where: str) -> None:
    """Validate a training notebook's grid point as its parameters cell will (notebooks/src/01_train.py:
    the config keys it is given, None and '' meaning the default, updated by ``overrides``)."""
    if not {"method", "overrides"} <= set(notebook_params):
        return                      # not a training notebook: its parameters are not config keys
    defaults = {k: _literal(v) for k, v in notebook_params.items()}   # papermill gives the source text
    overrides = params.get("overrides", defaults["overrides"])
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: parameter 'overrides' = {overrides!r}: expected a mapping of config keys")
    given = {k: defaults[k] for k in defaults if k in FIELDS}
    given.update({k: v for k, v in params.items() if k in FIELDS})
    d = {k: v for k, v in given.items() if v not in (None, "") and k != "run_dir"}
    d.update(overrides)
    try:
        for key in d:
            if key not in FIELDS:
                raise unknown_key(key)
        if not any(_is_ref(v) for v in d.values()):
            from_dict(d)
            return
        # a stage two whose stage one this batch has not run yet: each value's type and range
        values = {k: coerce_value(k, v, TYPES[k]) for k, v in d.items() if k in FIELDS and k not in ("stage1_run", "extra")}
        check_ranges(dataclasses.replace(RunConfig(), **values))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
