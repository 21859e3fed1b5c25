"""Run-page figures stay readable: markers on a 1-epoch run, legends off the data, titles that
say which temperature a figure shows."""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from test_viz import COUNTS, _synthetic  # noqa: E402

from ltlab import viz  # noqa: E402
from ltlab.evaluation.metrics import per_class_accuracy, softmax  # noqa: E402


def test_one_epoch_run_draws_markers():
    df = pd.DataFrame({"epoch": [1], "lr": [0.1], "train_loss": [2.3], "seconds": [9.0],
                       "test_top1": [0.2], "test_balanced_acc": [0.1], "test_ece": [0.05]})
    fig = viz.learning_curves(df)
    for ax in fig.axes:
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata())]
        assert lines, ax.get_title()
        # one point: only a marker makes it visible
        assert all(ln.get_marker() not in (None, "None", "", " ") for ln in lines), ax.get_title()


def _data_points(ax):
    """Display coordinates of what a legend must not hide: scatter points, the vertices of
    data lines (not the vertical / diagonal guides), the top centres of bars."""
    pts = [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections if len(c.get_offsets())]
    for ln in ax.get_lines():
        x, y = np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
        if len(x) > 2 and len(np.unique(x)) > 1:
            pts.append(ax.transData.transform(np.column_stack([x, y])))
    for p in ax.patches:
        if isinstance(p, Rectangle) and p.get_height() > 0 and p.get_width() > 0:
            top = p.get_y() + p.get_height()
            pts.append(ax.transData.transform([[p.get_x() + p.get_width() / 2, top]]))
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def _assert_legends_clear(fig):
    fig.canvas.draw()
    checked = 0
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None:
            continue
        box = leg.get_window_extent()
        pts = _data_points(ax)
        inside = (pts[:, 0] > box.x0) & (pts[:, 0] < box.x1) & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1)
        assert not inside.any(), f"legend of '{ax.get_title()}' covers {int(inside.sum())} data points"
        checked += 1
    assert checked


@pytest.mark.parametrize("seed", [0, 1])
def test_legends_do_not_cover_data(seed):
    logits, labels = _synthetic(seed=seed)
    acc = per_class_accuracy(logits.argmax(1), labels, len(COUNTS))
    # head classes failing and tail classes perfect: the corner the old legend used is full
    acc_inverted = acc[::-1].copy()
    for fig in (viz.per_class_accuracy_vs_count(acc, COUNTS), viz.per_class_accuracy_vs_count(acc_inverted, COUNTS),
                viz.reliability_diagram(softmax(logits), labels),
                viz.reliability_diagram(softmax(logits / 5), labels),       # under-confident
                viz.risk_coverage_curves(logits, labels, scores=("msp", "energy")),
                viz.energy_vs_count(logits, COUNTS, labels)):
        _assert_legends_clear(fig)


def test_group_figures_say_which_temperature():
    logits, labels = _synthetic()
    before = viz.reliability_by_group(softmax(logits), labels, COUNTS, title="before temperature scaling (T = 1)")
    after = viz.reliability_by_group(softmax(logits / 1.7), labels, COUNTS, title="after temperature scaling (T = 1.7)")
    t0, t1 = before.get_suptitle(), after.get_suptitle()
    assert t0 != t1 and "T = 1)" in t0 and "T = 1.7" in t1
