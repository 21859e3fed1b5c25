"""ltlab: a workbench for long-tailed image recognition.

    import ltlab
    run_dir = ltlab.fit({"dataset": "demo", "epochs": 2})
    run = ltlab.load_run(run_dir)
"""
from ltlab.config import ConfigError, RunConfig  # noqa: F401
from ltlab.version import __version__  # noqa: F401

# fit and load_run import torch and the training stack (seconds): loaded on first use, so that
# `import ltlab` and the CLI's argument errors stay fast


def fit(config, **kwargs):
    from ltlab.training.loop import fit as _fit

    return _fit(config, **kwargs)


def load_run(run_dir):
    from ltlab.evaluation.run_dir import load_run as _load_run

    return _load_run(run_dir)
