"""Figures for long-tailed recognition runs, one module a concept: :mod:`~ltlab.viz.accuracy`
(curves, per-class and group accuracy, confusion, weight norms, label shift),
:mod:`~ltlab.viz.calibration` (reliability diagrams) and :mod:`~ltlab.viz.scores` (failure
prediction: score distributions, risk-coverage, energy bias), on :mod:`~ltlab.viz.base`.

Every function takes numpy arrays / DataFrames (never run directories) and returns a
:class:`matplotlib.figure.Figure` built without pyplot, so it is safe under Agg and in
notebooks; nothing is shown or closed. Functions named ``set_*`` move a figure made by their
builder to new data in place (the widgets' fast redraw, :mod:`ltlab.interactive.redraw`).
"""
from ltlab.viz.accuracy import (
                                accuracy_across_shifts,
                                confusion_matrix,
                                group_bars,
                                learning_curves,
                                per_class_accuracy_vs_count,
                                set_per_class_accuracy,
                                weight_norms,
)
from ltlab.viz.base import GROUP_COLORS
from ltlab.viz.calibration import (
                                ACC_LABEL,
                                GAP_LABEL_PREFIX,
                                reliability_before_after,
                                reliability_by_group,
                                reliability_diagram,
                                set_reliability,
)
from ltlab.viz.scores import energy_vs_count, risk_coverage_curves, score_distributions, set_score_temperature

__all__ = [
    "learning_curves", "per_class_accuracy_vs_count", "set_per_class_accuracy", "group_bars", "confusion_matrix",
    "weight_norms", "accuracy_across_shifts", "reliability_diagram", "set_reliability", "reliability_before_after",
    "reliability_by_group", "score_distributions", "set_score_temperature", "risk_coverage_curves",
    "energy_vs_count", "ACC_LABEL", "GAP_LABEL_PREFIX", "GROUP_COLORS",
]
