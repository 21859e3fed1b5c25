"""Smoke and consistency tests of ltlab.viz on small seeded synthetic long-tailed data.

Every figure is also written to /tmp/viz_check/ for a visual check.
"""
import matplotlib

matplotlib.use("Agg")


import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ltlab import viz  # noqa: E402
from ltlab.evaluation.metrics import calibration_bins, ece, per_class_accuracy, softmax  # noqa: E402

COUNTS = np.array([500, 299, 179, 107, 64, 38, 23, 13, 8, 5])  # 4 many, 3 medium, 3 few


def _synthetic(counts=COUNTS, n=1000, seed=0):
    """Logits with a stronger true-class signal and a prior bias for head classes."""
    rng = np.random.default_rng(seed)
    c = len(counts)
    labels = rng.integers(0, c, size=n)
    strength = 0.5 + 2.5 * np.log(counts) / np.log(counts.max())
    logits = rng.normal(0.0, 1.0, size=(n, c)) + 0.4 * np.log(counts)[None, :]
    logits[np.arange(n), labels] += strength[labels] + rng.normal(0, 0.5, size=n)
    return 2.0 * logits, labels  # x2: over-confident, so temperature scaling has work to do


@pytest.fixture(scope="module")
def data():
    return _synthetic()


def _save(fig, tmp_path, name):
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / f"{name}.png", dpi=80)
    assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_learning_curves(tmp_path):
    e = np.arange(1, 31)
    evaluated = e % 5 == 0
    df = pd.DataFrame({
        "epoch": e, "lr": np.where(e < 20, 0.1, 0.001), "train_loss": 3.0 * np.exp(-e / 10),
        "seconds": np.full(30, 12.0),
        "test_top1": np.where(evaluated, 0.3 + e / 60, np.nan),
        "test_balanced_acc": np.where(evaluated, 0.2 + e / 70, np.nan),
        "test_ece": np.where(evaluated, 0.2 - e / 300, np.nan),
    })
    fig = viz.learning_curves(df)
    assert len(fig.axes) == 3
    assert fig.axes[0].get_yscale() == "log"
    acc_lines = fig.axes[1].get_lines()
    assert len(acc_lines) == 3 and all(len(ln.get_xdata()) == 6 for ln in acc_lines)
    _save(fig, tmp_path, "learning_curves")


def test_per_class_accuracy_vs_count(data, tmp_path):
    logits, labels = data
    acc = per_class_accuracy(logits.argmax(1), labels, len(COUNTS))
    fig = viz.per_class_accuracy_vs_count(acc, COUNTS, class_names=[f"c{i}" for i in range(10)])
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    vlines = {ln.get_xdata()[0] for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1}
    assert {20, 100} <= vlines
    texts = {t.get_text() for t in ax.texts}
    assert {"few", "medium", "many"} <= texts
    _save(fig, tmp_path, "per_class_accuracy_vs_count")


def test_group_bars_handles_none(tmp_path):
    results = {
        "CE": {"many": 0.82, "medium": 0.55, "few": 0.21, "top1": 0.61},
        "LA": {"many": 0.75, "medium": 0.62, "few": 0.44, "top1": 0.65},
        "cRT (no few)": {"many": 0.78, "medium": 0.60, "few": None, "top1": 0.66},
    }
    fig = viz.group_bars(results)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    n_bars = sum(len(c.patches) for c in ax.containers)
    assert n_bars == 11  # 12 values, one None
    assert sum(t.get_text() == "n/a" for t in ax.texts) == 1
    _save(fig, tmp_path, "group_bars")


def _container(ax, label_start):
    return next(c for c in ax.containers if c.get_label().startswith(label_start))


def test_reliability_diagram_bars_match_calibration_bins(data, tmp_path):
    logits, labels = data
    probs = softmax(logits)
    fig = viz.reliability_diagram(probs, labels, n_bins=15, title="synthetic")
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    b = calibration_bins(probs.max(1), probs.argmax(1) == labels, n_bins=15)
    full = b["count"] > 0
    bars = [p for p in _container(ax, viz.ACC_LABEL).patches if p.get_visible()]
    assert len(bars) == full.sum() < 15  # some bins are empty and hidden
    np.testing.assert_allclose([p.get_height() for p in bars], b["acc"][full])
    np.testing.assert_allclose([p.get_x() for p in bars], b["edges"][:-1][full])
    gaps = [p for p in _container(ax, viz.GAP_LABEL_PREFIX).patches if p.get_visible()]
    np.testing.assert_allclose([p.get_y() + p.get_height() for p in gaps], b["conf"][full])
    e = 100 * ece(probs, labels)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "perfect calibration", viz.ACC_LABEL, f"{viz.GAP_LABEL_PREFIX} (ECE = {e:.2f}%)"]
    hist = fig.axes[1]
    np.testing.assert_allclose(sum(p.get_height() for p in hist.patches), 100.0)
    _save(fig, tmp_path, "reliability_diagram")


def test_set_reliability_moves_a_figure_to_what_a_fresh_one_shows(data):
    """The calibration widget's in-place redraw: after a move the figure shows what a figure
    built from scratch at the new temperature shows (bars, gaps, histogram, lines, legends)."""
    logits, labels = data
    fig = viz.reliability_diagram(softmax(logits), labels, title="T = 1")
    moved = viz.set_reliability(fig, softmax(logits / 3.0), labels, title="T = 3")
    fresh = viz.reliability_diagram(softmax(logits / 3.0), labels, title="T = 3")
    assert moved is fig

    def seen(f):
        rel, hist = f.axes
        bars = [(p.get_x(), p.get_y(), p.get_height()) for c in rel.containers for p in c.patches if p.get_visible()]
        return (bars, [p.get_height() for p in hist.patches], [ln.get_xdata()[0] for ln in hist.lines],
                [t.get_text() for a in f.axes for t in a.get_legend().get_texts()], rel.get_title(), hist.get_ylim())
    a, b = seen(moved), seen(fresh)
    np.testing.assert_allclose(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])
    np.testing.assert_allclose(a[2], b[2])
    assert a[3:] == b[3:]
    e3 = 100 * ece(softmax(logits / 3.0), labels)
    assert a[3][:3] == ["perfect calibration", viz.ACC_LABEL, f"{viz.GAP_LABEL_PREFIX} (ECE = {e3:.2f}%)"]


def test_reliability_diagram_on_given_ax(data):
    logits, labels = data
    fig = Figure()
    ax = fig.subplots()
    out = viz.reliability_diagram(softmax(logits), labels, ax=ax)
    assert out is fig and len(fig.axes) == 1


def test_reliability_before_after(data, tmp_path):
    from ltlab.evaluation.posthoc import fit_temperature

    logits, labels = data
    T = fit_temperature(logits, labels)
    assert T > 1.0
    fig = viz.reliability_before_after(logits, labels, T)
    assert len(fig.axes) == 4
    rel = fig.axes[0], fig.axes[1]
    for ax, t in zip(rel, (1.0, T)):
        assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
        e = 100 * ece(softmax(logits / t), labels)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "perfect calibration", viz.ACC_LABEL, f"{viz.GAP_LABEL_PREFIX} (ECE = {e:.2f}%)"]
    assert fig.axes[2].get_ylim() == fig.axes[3].get_ylim()
    _save(fig, tmp_path, "reliability_before_after")


def test_reliability_by_group(data, tmp_path):
    logits, labels = data
    fig = viz.reliability_by_group(softmax(logits), labels, COUNTS)
    assert len(fig.axes) == 3
    _save(fig, tmp_path, "reliability_by_group")
    head = labels < 4  # many-shot classes only: the other panels are skipped
    fig = viz.reliability_by_group(softmax(logits[head]), labels[head], COUNTS)
    assert len(fig.axes) == 1 and fig.axes[0].get_title().startswith("many")


def test_score_distributions(data, tmp_path):
    logits, labels = data
    fig = viz.score_distributions(logits, labels, COUNTS)
    assert len(fig.axes) == 2 * 4
    assert all("AUROC" in ax.get_title() for ax in fig.axes)
    _save(fig, tmp_path, "score_distributions")


def test_risk_coverage_curves(data, tmp_path):
    logits, labels = data
    fig = viz.risk_coverage_curves(logits, labels)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(texts) == 3 + 2 and all("AURC" in t for t in texts)
    oracle = next(ln for ln in ax.get_lines() if ln.get_label().startswith("oracle"))
    assert np.all(np.diff(oracle.get_ydata()) >= 0)
    _save(fig, tmp_path, "risk_coverage_curves")


def test_weight_norms(tmp_path):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(10, 16)) * np.sqrt(COUNTS / 100.0)[:, None]
    perm = rng.permutation(10)  # counts not pre-sorted: the plot must sort them
    fig = viz.weight_norms(w[perm], COUNTS[perm], taus=(0.0, 0.5, 1.0))
    assert len(fig.axes) == 1
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3
    np.testing.assert_allclose(lines[0].get_ydata(), np.linalg.norm(w, axis=1))
    np.testing.assert_allclose(lines[2].get_ydata(), 1.0)
    _save(fig, tmp_path, "weight_norms")


def test_confusion_matrix_full_and_grouped(data, tmp_path):
    logits, labels = data
    fig = viz.confusion_matrix(logits.argmax(1), labels, COUNTS)
    img = fig.axes[0].images[0].get_array()
    assert img.shape == (10, 10) and len(fig.axes) == 2  # matrix + colourbar
    np.testing.assert_allclose(img.filled(0).sum(axis=1), 1.0)
    _save(fig, tmp_path, "confusion_matrix_10")

    counts100 = np.round(500 * 0.01 ** (np.arange(100) / 99)).astype(int)
    lg, lb = _synthetic(counts100, n=3000, seed=2)
    fig = viz.confusion_matrix(lg.argmax(1), lb, counts100)
    img = fig.axes[0].images[0].get_array()
    assert img.shape == (3, 3)
    assert len(fig.axes[0].texts) == 9
    _save(fig, tmp_path, "confusion_matrix_100_grouped")


def test_accuracy_across_shifts(tmp_path):
    dists = ["forward50", "forward10", "forward2", "uniform", "backward2", "backward10",
             "backward50"]
    table = pd.DataFrame({
        "no prior": [0.70, 0.66, 0.60, 0.55, 0.50, 0.45, 0.40],
        "known prior": [0.78, 0.72, 0.63, 0.55, 0.56, 0.60, 0.66],
        "EM prior": [0.76, 0.70, 0.61, 0.54, 0.54, 0.57, 0.62],
    }, index=dists)
    fig = viz.accuracy_across_shifts(table)
    assert len(fig.axes) == 1 and len(fig.axes[0].get_lines()) == 3 + 1  # + uniform marker
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == dists
    fig2 = viz.accuracy_across_shifts(table.rename_axis("test").reset_index())
    assert [t.get_text() for t in fig2.axes[0].get_xticklabels()] == dists
    _save(fig, tmp_path, "accuracy_across_shifts")


def test_accuracy_across_shifts_one_panel_per_variant(tmp_path):
    """analysis.shift_compare's 'group (variant)' columns: a panel per variant, each group one
    colour in every panel, one legend entry per group outside the panels (the archive's ten
    groups, twenty lines, once hid the backward half of a single axis)."""
    dists = ["forward50", "uniform", "backward50"]
    groups = [f"m{i}, lr=0.{i}" for i in range(12)]
    table = pd.DataFrame({f"{g} ({v})": np.linspace(0.5, 0.8, 3) + 0.01 * i
                          for i, g in enumerate(groups) for v in ("none", "known")}, index=dists)
    fig = viz.accuracy_across_shifts(table)
    assert [ax.get_title() for ax in fig.axes] == ["none", "known"]
    lines = [[ln for ln in ax.get_lines() if ln.get_label() in groups] for ax in fig.axes]
    assert [len(ls) for ls in lines] == [12, 12]
    assert [ln.get_color() for ln in lines[0]] == [ln.get_color() for ln in lines[1]]
    assert len({str(ln.get_color()) for ln in lines[0]}) == 12                 # tab20 past ten groups
    np.testing.assert_allclose(lines[1][3].get_ydata(), table["m3, lr=0.3 (known)"])
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == groups and not fig.axes[0].get_legend()
    _save(fig, tmp_path, "accuracy_across_shifts_variants")


def test_energy_vs_count(data, tmp_path):
    logits, labels = data
    fig = viz.energy_vs_count(logits, COUNTS, labels)
    assert len(fig.axes) == 1
    assert fig.axes[0].get_xscale() == "log"
    _save(fig, tmp_path, "energy_vs_count")
