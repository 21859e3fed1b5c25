"""ltlab's informational lines (start-up, schedule, stage plans): the `ltlab` logger.

The CLI keeps them on stderr, because stdout carries the run directory for scripts. In a
notebook stderr is painted as an error (a pink block in Jupyter and in the HTML reports), so
notebooks call :func:`to_stdout` and the same lines render as plain output. The handler looks
the stream up on every line, so pytest's capture and redirect_stdout/stderr see them.
"""
from __future__ import annotations

import logging
import sys

LOGGER = logging.getLogger("ltlab")


class _SysStreamHandler(logging.StreamHandler):
    """Writes to sys.<name> as it is at the time of the line."""

    def __init__(self, name: str):
        self.stream_name = name
        super().__init__()

    @property
    def stream(self):
        return getattr(sys, self.stream_name)

    @stream.setter
    def stream(self, value):   # StreamHandler.__init__ assigns one; the name decides instead
        pass


def _handler() -> _SysStreamHandler:
    for h in LOGGER.handlers:
        if isinstance(h, _SysStreamHandler):
            return h
    h = _SysStreamHandler("stderr")
    h.setFormatter(logging.Formatter("%(message)s"))
    LOGGER.addHandler(h)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False   # a root handler configured by the user would print each line twice
    return h


def info(msg: str) -> None:
    _handler()
    LOGGER.info(msg)


def to_stdout() -> None:
    """Informational lines go to stdout from now on (call it at the top of a notebook)."""
    _handler().stream_name = "stdout"


def to_stderr() -> None:
    _handler().stream_name = "stderr"
