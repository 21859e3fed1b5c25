"""ltlab: a workbench for long-tailed image recognition.

    import ltlab
    run_dir = ltlab.fit({"dataset": "demo", "epochs": 2})
    run = ltlab.load_run(run_dir)
"""
from ltlab.config import ConfigError, RunConfig  # noqa: F401

__version__ = "0.1.0"


def fit(config, **kwargs):
    from ltlab.train import fit as _fit

    return _fit(config, **kwargs)


def load_run(run_dir):
    from ltlab.evaluate import load_run as _load_run

    return _load_run(run_dir)
