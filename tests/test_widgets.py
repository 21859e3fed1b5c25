"""The knob views behind the notebook widgets, checked on a real demo run (and a synthetic TDE run)."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from ltlab.evaluation import calibrated_em, calibration_fit, posthoc, posthoc_tde
from ltlab.evaluation import metrics as M
from ltlab.evaluation.run_dir import Run, load_run
from ltlab.interactive import widgets


@pytest.fixture(scope="module")
def run(demo_run):
    return load_run(demo_run)


def _check(result):
    fig, nums = result
    assert isinstance(fig, Figure) and isinstance(nums, dict)
    return nums


def test_predictions_are_cached_and_read_only(run):
    a = widgets.predictions(run)
    assert widgets.predictions(run) is a
    np.testing.assert_array_equal(a["logits"], run.predictions("test")["logits"])
    with pytest.raises(ValueError):
        a["logits"][0, 0] = 1.0


def test_calibration_view_at_t1_is_the_raw_summary(run):
    nums = _check(widgets.calibration_view(run, 1.0))
    assert nums["ECE"] == pytest.approx(run.summary["ece"], abs=1e-12)
    assert nums["NLL"] == pytest.approx(run.summary["nll"], rel=1e-12)
    assert nums["accuracy"] == pytest.approx(run.summary["top1"])
    T = run.summary["temperature"]              # fitted on val by the run itself
    assert _check(widgets.calibration_view(run, T))["ECE"] == pytest.approx(run.summary["ece_ts"], abs=1e-12)


def test_energy_view_matches_the_summary_at_t1(run):
    nums = _check(widgets.energy_view(run, 1.0))
    for score in ("msp", "energy", "residual_energy"):
        assert nums[f"auroc_{score}"] == pytest.approx(run.summary[f"auroc_{score}"], abs=1e-12)
    assert nums["aurc_msp"] == pytest.approx(run.summary["aurc_msp"], abs=1e-12)
    # temperature re-ranks energy across samples
    assert _check(widgets.energy_view(run, 5.0))["T"] == 5.0


def test_tau_view_at_zero_is_the_plain_classifier_without_bias(run):
    p = run.predictions("test")
    W, b, feats, y = p["classifier_weight"], p["classifier_bias"], p["features"], p["labels"]
    # the premise: saved logits are features @ W.T + b
    np.testing.assert_allclose(feats.astype(np.float64) @ W.T + b, p["logits"], rtol=1e-3, atol=1e-3)
    nums = _check(widgets.tau_view(run, 0.0))
    pred = (feats.astype(np.float64) @ W.T.astype(np.float64)).argmax(1)
    assert nums["top1"] == M.top1(pred, y)
    assert nums["balanced_acc"] == M.balanced_accuracy(pred, y, W.shape[0])
    unit = W / np.linalg.norm(W, axis=1, keepdims=True)
    assert _check(widgets.tau_view(run, 1.0))["top1"] == M.top1((feats @ unit.T).argmax(1), y)
    assert widgets.has_classifier(run)


def test_prior_view_uniform_is_the_balanced_test_set(run):
    nums = _check(widgets.prior_view(run, "uniform", source="method", calibration="none"))
    assert nums["n"] == len(run.predictions()["labels"]) == 1000
    assert nums["none"] == pytest.approx(run.summary["top1"])
    # by its objective CE's logits encode the training prior: on the raw logits (calibration
    # 'none') a uniform target prior is logit adjustment tau = 1
    p = run.predictions()
    la = posthoc.logit_adjust(p["logits"], p["train_counts"], 1.0).argmax(1)
    assert nums["known"] == pytest.approx(M.top1(la, p["labels"]))
    # with a fitted calibration the known prior reweights its posteriors: argmax z / T + b - log s
    cal = widgets.em_calibration(run, "bcts", "method")
    want = (p["logits"] / cal.temperature + cal.bias - np.log(cal.source_prior)).argmax(1)
    nums = _check(widgets.prior_view(run, "uniform", source="method", calibration="bcts"))
    assert nums["known"] == pytest.approx(M.top1(want, p["labels"]))
    # by default the prior is fitted on the run's val split: pi^gamma
    src, how = widgets.source_prior(run)
    v = run.predictions("val")
    t, g, _ = calibration_fit.fit_prior_power(v["logits"], v["labels"], p["train_counts"])
    np.testing.assert_allclose(src, p["train_counts"].astype(float) ** (t * g))   # on the raw logits' scale
    cal = widgets.em_calibration(run, "ts")           # a calibration's posteriors: pi^gamma
    np.testing.assert_allclose(cal.source_prior, posthoc.class_prior(p["train_counts"].astype(float) ** g))
    assert "fitted on the val split" in how
    auto = _check(widgets.prior_view(run, "uniform", calibration="none"))
    assert auto["known"] == pytest.approx(M.top1(posthoc.logit_adjust(p["logits"], src, 1.0).argmax(1), p["labels"]))
    # raw logits read as already balanced: a uniform test prior changes nothing
    flat = _check(widgets.prior_view(run, "uniform", source="uniform", calibration="none"))
    assert flat["known"] == flat["none"]
    fwd = _check(widgets.prior_view(run, "forward50"))
    assert fwd["n"] == 276 and 0 <= fwd["em_tv"] <= 1


def test_logit_adjust_view(run):
    assert _check(widgets.logit_adjust_view(run, 0.0))["top1"] == pytest.approx(run.summary["top1"])


def test_views_refuse_what_the_run_lacks(run, tmp_path):
    with pytest.raises(ValueError, match="not a TDE run"):
        widgets.tde_view(run, 1.0)
    bare = tmp_path / "bare"
    (bare / "predictions").mkdir(parents=True)
    np.savez(bare / "predictions" / "test.npz", logits=np.zeros((4, 3)), labels=np.arange(4) % 3,
             train_counts=np.array([5, 3, 1]))
    r = Run(bare, {"method": "ce"}, {}, pd.DataFrame())
    with pytest.raises(ValueError, match="classifier_weight"):
        widgets.tau_view(r, 1.0)
    with pytest.raises(ValueError, match="source prior 'nonsense'"):
        widgets.source_counts(r, "nonsense")
    with pytest.raises(ValueError, match="needs the run's val split"):
        widgets.source_counts(r, "val")


@pytest.fixture
def tde_run(tmp_path):
    rng = np.random.default_rng(0)
    n, c, d = 300, 5, 8
    counts = np.array([100, 50, 20, 10, 5])
    y = rng.integers(0, c, n)
    W = rng.normal(size=(c, d))
    feats = W[y] + 0.8 * rng.normal(size=(n, d)) + 1.5          # a shared offset: the "momentum" direction
    direction = np.full(d, 1.5) + 0.1 * rng.normal(size=d)
    arrays = dict(features=feats, tde_weight=W, tde_direction=direction, tde_alpha=np.float64(1.0),
                  tde_tau=np.float64(16.0), tde_gamma=np.float64(1 / 32), tde_heads=np.int64(2))
    logits = posthoc_tde.from_predictions(arrays)
    (tmp_path / "predictions").mkdir()
    np.savez(tmp_path / "predictions" / "test.npz", logits=logits, labels=y, train_counts=counts, **arrays)
    return Run(tmp_path, {"method": "tde"}, {}, pd.DataFrame())


def test_tde_view_recomputes_the_logits_for_alpha(tde_run):
    p = tde_run.predictions()
    own = _check(widgets.tde_view(tde_run))
    assert own["alpha"] == 1.0 and own["top1"] == M.top1(p["logits"].argmax(1), p["labels"])
    zero = _check(widgets.tde_view(tde_run, 0.0))
    z0 = posthoc_tde.tde_logits(p["features"], p["tde_weight"], p["tde_direction"], 0.0, 16.0, 1 / 32, 2)
    assert zero["top1"] == M.top1(z0.argmax(1), p["labels"])
    assert widgets.is_tde(tde_run)


def test_widget_builders_wrap_the_views(run, tde_run, capsys):
    import ipywidgets as w

    box = widgets.energy_widget(run, T=2.0)
    assert isinstance(box, w.VBox)
    slider = box.children[0].children[0]
    assert slider.value == pytest.approx(2.0) and slider.continuous_update is False
    capsys.readouterr()
    slider.value = 1.0                           # the callback runs the view again
    shown = capsys.readouterr().out              # outside a kernel, display() prints
    assert "Image object" in shown and "auroc_msp (%)" in shown             # a PNG and the T = 1 numbers, in %
    assert f"{100 * run.summary['auroc_msp']:.1f}" in shown
    box = widgets.prior_widget(run, shift_name="backward10")
    shift_dd, source_dd, _ = box.children[0].children
    assert shift_dd.value == "backward10" and "uniform" in shift_dd.options
    source_dd.value = "uniform"
    for b in (widgets.calibration_widget(run), widgets.tau_widget(run, tau=0.5),
              widgets.logit_adjust_widget(run), widgets.tde_widget(tde_run)):
        assert isinstance(b, w.VBox) and b.children[0].children[0].continuous_update is False


def test_leaderboard_view():
    board = pd.DataFrame({"balanced_acc mean": [0.5, 0.4], "balanced_acc std": [0.01, np.nan]},
                         index=pd.Index(["ce", "bs"], name="group"))
    fig, nums = widgets.leaderboard_view(board, "balanced_acc")
    assert nums["ce"] == pytest.approx(50.0) and isinstance(fig, Figure)     # percent, as the tables
    with pytest.raises(ValueError, match="not in the leaderboard"):
        widgets.leaderboard_view(board, "top5")


# ------------------------------------------------------------- views at non-default knob values
def test_energy_view_at_t5_is_each_score_at_t5(run):
    from ltlab.evaluation import scores

    p = run.predictions("test")
    correct = p["logits"].argmax(1) == p["labels"]
    at5, at1 = _check(widgets.energy_view(run, 5.0)), _check(widgets.energy_view(run, 1.0))
    for name in ("msp", "energy", "residual_energy"):
        s = scores.SCORES[name](p["logits"], T=5.0)
        assert at5[f"auroc_{name}"] == pytest.approx(M.auroc(s, correct), abs=1e-12), name
        assert at5[f"aurc_{name}"] == pytest.approx(M.aurc(s, correct), abs=1e-12), name
    assert at5["auroc_energy"] != at1["auroc_energy"]   # T re-ranks the energy score


def test_logit_adjust_view_at_tau_is_f_minus_tau_log_pi(run):
    p = run.predictions("test")
    y, counts = p["labels"], p["train_counts"]
    src = widgets.source_counts(run)             # pi^(T gamma), fitted on the run's val split
    assert not np.allclose(src / src.sum(), counts / counts.sum())
    for tau in (0.7, 1.5):
        nums = _check(widgets.logit_adjust_view(run, tau))
        z = p["logits"].astype(np.float64) - tau * np.log(src / src.sum())
        pred = z.argmax(1)
        assert nums["top1"] == M.top1(pred, y) and nums["balanced_acc"] == M.balanced_accuracy(pred, y, 10)
        assert nums["few"] == pytest.approx(M.group_accuracy(M.per_class_accuracy(pred, y, 10), counts)["few"])
    assert _check(widgets.logit_adjust_view(run, 1.5))["balanced_acc"] != run.summary["balanced_acc"]


def test_prior_view_source_and_temperature_knobs(run):
    """'known' is argmax(f / T + b + log q - log source prior) on the subset, with the
    calibration's T, b and source prior (f + log q - log s for 'none'); EM starts from the source
    prior on softmax(f / T + b); em_tv = 0.5 |q_hat - q|_1, all recomputed here."""
    p = run.predictions("test")
    f, y, counts = p["logits"].astype(np.float64), p["labels"], p["train_counts"]
    # forward50 of a 100-per-class test set keeps int(100 * 0.02^(c/9)) of class c: 100, 64, 41, ...
    # 2, summing to 276 (SADE's test-agnostic subsets)
    kept = [int(100 * (1 / 50) ** (c / 9)) for c in range(10)]
    assert kept[0] == 100 and kept[-1] == 2 and sum(kept) == 276
    idx = widgets.shift.shift_subset(y, "forward", 50.0, seed=0, num_classes=10)
    assert np.bincount(y[idx], minlength=10).tolist() == kept
    q = np.bincount(y[idx], minlength=10) / len(idx)
    for source, src in (("train", counts / counts.sum()), ("uniform", np.full(10, 0.1))):
        tvs = {}
        for cal in ("none", "bcts"):
            nums = _check(widgets.prior_view(run, "forward50", source=source, calibration=cal))
            assert nums["n"] == 276 and nums["em_calibration"] == cal
            fitted = widgets.em_calibration(run, cal, source)
            if cal == "none":
                np.testing.assert_allclose(fitted.source_prior, src)
            known = (f[idx] / fitted.temperature + fitted.bias + np.log(q) - np.log(fitted.source_prior)).argmax(1)
            assert nums["known"] == pytest.approx(M.top1(known, y[idx]))
            res = calibrated_em.estimate_prior(f[idx], fitted)
            assert nums["em_tv"] == pytest.approx(0.5 * np.abs(res.prior - q).sum(), abs=1e-12)
            tvs[cal] = nums["em_tv"]
        assert tvs["none"] != tvs["bcts"]                     # the calibration knob changes the estimate
    by_source = {s: _check(widgets.prior_view(run, "forward50", source=s, calibration="none"))
                 for s in ("train", "uniform")}
    assert by_source["train"]["known"] != by_source["uniform"]["known"]


def test_every_widget_callback_reruns_its_view_with_the_new_knob(run, tde_run, monkeypatch):
    """Moving a control re-renders the view with that value: the numbers shown are the view's at it."""
    shown = []
    monkeypatch.setattr(widgets, "show_view", shown.append)
    board = pd.DataFrame({"balanced_acc mean": [0.5, 0.4], "balanced_acc std": [0.01, 0.02],
                          "top1 mean": [0.6, 0.7], "top1 std": [0.03, 0.04]},
                         index=pd.Index(["ce", "bs"], name="group"))
    cases = [
        (widgets.energy_widget(run), "T", 4.0, lambda v: widgets.energy_view(run, v)),
        (widgets.calibration_widget(run), "temperature", 2.5, lambda v: widgets.calibration_view(run, v)),
        (widgets.tau_widget(run), "tau", 0.35, lambda v: widgets.tau_view(run, v)),
        (widgets.logit_adjust_widget(run), "tau", 1.75, lambda v: widgets.logit_adjust_view(run, v)),
        (widgets.tde_widget(tde_run), "alpha", 2.5, lambda v: widgets.tde_view(tde_run, v)),
        (widgets.prior_widget(run), "calibration", "none", lambda v: widgets.prior_view(run, calibration=v)),
        (widgets.leaderboard_widget(board), "metric", "top1", lambda v: widgets.leaderboard_view(board, v)),
    ]
    for box, knob, value, view in cases:
        control = box.children[0].children[2 if knob == "calibration" else 0]
        shown.clear()
        control.value = value
        assert len(shown) == 1, knob
        got, want = shown[0][1], view(control.value)[1]
        assert got == pytest.approx(want, nan_ok=True), (knob, value)
    T_slider, score_dd = widgets.energy_widget(run, T=3.0).children[0].children
    assert score_dd.value == "energy"
    shown.clear()
    score_dd.value = "msp"                       # one score's row is drawn; the numbers stay at T
    fig, nums = shown[-1]
    assert nums == pytest.approx(widgets.energy_view(run, 3.0)[1], nan_ok=True)
    assert len(fig.axes) == 4 and fig.axes[0].get_xlabel() == "MSP"       # all + many / medium / few
    with pytest.raises(ValueError, match="not one of msp, energy, residual_energy"):
        widgets.energy_view(run, 1.0, score="entropy")
    box = widgets.prior_widget(run)
    shift_dd, source_dd, _ = box.children[0].children
    shown.clear()
    source_dd.value = "uniform"
    assert shown[-1][1] == pytest.approx(widgets.prior_view(run, "forward50", source="uniform")[1], nan_ok=True)
    shift_dd.value = "backward10"
    assert shown[-1][1] == pytest.approx(widgets.prior_view(run, "backward10", source="uniform")[1], nan_ok=True)


def test_energy_widget_redraws_one_figure_in_place(run):
    """The widget keeps its figure and moves it to the new T: the same histograms, limits and
    AUROC titles as a figure built from scratch at that T."""
    box = widgets.energy_widget(run, T=1.0)
    first, _ = box.ltlab_redraw(T=1.0, score="energy")
    moved, nums = box.ltlab_redraw(T=4.0, score="energy")
    assert moved is first and nums == pytest.approx(widgets.energy_numbers(run, 4.0), nan_ok=True)
    fresh, _ = widgets.energy_view(run, 4.0, score="energy")
    assert [a.get_title() for a in moved.axes] == [a.get_title() for a in fresh.axes]
    for a, b in zip(moved.axes, fresh.axes):
        assert a.get_xlim() == pytest.approx(b.get_xlim()) and a.get_ylim() == pytest.approx(b.get_ylim())
        assert len(a.patches) == len(b.patches) > 0
        for pa, pb in zip(a.patches, b.patches):
            np.testing.assert_allclose(pa.get_data().values, pb.get_data().values)
            np.testing.assert_allclose(pa.get_data().edges, pb.get_data().edges)
    assert moved.get_suptitle() == fresh.get_suptitle() and "T = 4" in moved.get_suptitle()


def test_widget_bench_times_every_widget(demo_run):
    """`ltlab bench --widgets`: one row per widget of each run (the synthetic run has a TDE head
    and a val split, so every widget applies to it); times are reported, not asserted."""
    from ltlab.interactive.widget_bench import SWEEPS, bench_widgets

    table = bench_widgets([demo_run], synthetic=(400, 20))
    synthetic = table[table["run"] == "synthetic_400x20"]
    assert set(synthetic["view"]) == set(SWEEPS)
    assert set(table[table["run"] == demo_run.name]["view"]) == set(SWEEPS) - {"tde"}
    assert (table["median ms"] > 0).all() and (table["redraws"] == 5).all()


def test_widgets_reuse_the_layout_of_their_last_figure(run):
    """After the first drawn figure, a redraw puts that figure's axes positions on the new one
    (no second constrained-layout solve); a figure of another shape is laid out afresh."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    box = widgets.tau_widget(run)
    first, _ = box.ltlab_redraw(tau=0.5)
    widgets.figure_png(first)
    second, nums = box.ltlab_redraw(tau=1.5)
    assert second is not first and not isinstance(second.get_layout_engine(), ConstrainedLayoutEngine)
    assert [a.get_position().bounds for a in second.axes] == [a.get_position().bounds for a in first.axes]
    assert nums == pytest.approx(widgets.tau_view(run, 1.5)[1])
    assert widgets.figure_png(second)[:4] == b"\x89PNG"
    fresh, _ = widgets.tau_view(run, 1.5)
    assert isinstance(fresh.get_layout_engine(), ConstrainedLayoutEngine)   # a view called directly: its own


@pytest.mark.parametrize("which", ["logit_adjust", "tde"])
def test_accuracy_widgets_move_one_figure(which, run, tde_run):
    """The logit-adjustment and TDE widgets keep one figure: after a move it shows what a figure
    built from scratch at the new knob shows (points, binned means, legend, title)."""
    if which == "tde":
        box, knob, view, r = widgets.tde_widget(tde_run), "alpha", widgets.tde_view, tde_run
    else:
        box, knob, view, r = widgets.logit_adjust_widget(run), "tau", widgets.logit_adjust_view, run
    first, _ = box.ltlab_redraw(**{knob: 0.0})
    widgets.figure_png(first)
    moved, nums = box.ltlab_redraw(**{knob: 1.5})
    fresh, want = view(r, 1.5)
    assert moved is first and nums == pytest.approx(want)
    a, b = moved.axes[0], fresh.axes[0]
    assert a.get_title() == b.get_title() and "1.5" in a.get_title()
    assert len(a.collections) == len(b.collections) > 0
    for ca, cb in zip(a.collections, b.collections):
        np.testing.assert_allclose(ca.get_offsets(), cb.get_offsets())
    np.testing.assert_allclose(a.lines[0].get_ydata(), b.lines[0].get_ydata())
    assert [t.get_text() for t in a.get_legend().get_texts()] == [t.get_text() for t in b.get_legend().get_texts()]


def test_calibration_and_prior_widgets_move_one_figure(run):
    """Both keep one figure: after a move it shows what a figure built from scratch shows."""
    box = widgets.calibration_widget(run)
    first, _ = box.ltlab_redraw(temperature=0.5)
    widgets.figure_png(first)
    moved, nums = box.ltlab_redraw(temperature=2.0)
    fresh, want = widgets.calibration_view(run, 2.0)
    assert moved is first and nums == pytest.approx(want)
    for a, b in zip(moved.axes, fresh.axes):
        assert a.get_title() == b.get_title() and a.get_ylim() == pytest.approx(b.get_ylim())
        assert [t.get_text() for t in a.get_legend().get_texts()] == [t.get_text() for t in b.get_legend().get_texts()]
        seen = [[(p.get_y(), p.get_height()) for p in x.patches if p.get_visible()] for x in (a, b)]
        np.testing.assert_allclose(*seen)

    box = widgets.prior_widget(run)
    first, _ = box.ltlab_redraw(shift_name="forward50", source="auto", calibration="bcts")
    widgets.figure_png(first)
    moved, nums = box.ltlab_redraw(shift_name="backward10", source="auto", calibration="none")
    fresh, want = widgets.prior_view(run, "backward10", calibration="none")
    assert moved is first and nums == pytest.approx(want, nan_ok=True)
    for a, b in zip(moved.axes, fresh.axes):
        assert a.get_title() == b.get_title() and a.get_ylim() == pytest.approx(b.get_ylim())
        assert [t.get_text() for t in a.get_legend().get_texts()] == [t.get_text() for t in b.get_legend().get_texts()]
        for la, lb in zip(a.lines, b.lines):
            np.testing.assert_allclose(la.get_ydata(), lb.get_ydata())
        np.testing.assert_allclose([p.get_height() for p in a.patches], [p.get_height() for p in b.patches])
        assert [t.get_text() for t in a.texts] == [t.get_text() for t in b.texts]      # the bar labels
    assert "backward10" in moved.axes[0].get_title()
    shown = [t.get_text() for t in moved.axes[1].texts]              # each bar's label is its height
    want_labels = ["" if np.isnan(want[k]) else f"{100 * want[k]:.1f}" for k in ("none", "known", "em")]
    assert [shown[0], shown[4], shown[8]] == want_labels, shown


def test_percent_table_shows_what_the_widgets_show():
    """Notebook tables in the widgets' units: accuracies, errors, ECEs, AUROCs in % (1 decimal)."""
    t = pd.DataFrame({"n": [10, 20], "ECE": [0.12345, 0.5], "AUROC": [0.81234, np.nan], "NLL": [1.234567, 2.0],
                      "none_many": [0.5, 0.25], "em_tv": [0.123456, 0.2], "em_status": ["ok", "flagged"]})
    p = widgets.percent_table(t)
    assert list(p.columns) == ["n", "ECE (%)", "AUROC (%)", "NLL", "none_many (%)", "em_tv", "em_status"]
    assert p["ECE (%)"].tolist() == [12.3, 50.0] and p["none_many (%)"].tolist() == [50.0, 25.0]
    assert np.isnan(p["AUROC (%)"][1]) and p["NLL"][0] == 1.2346 and p["em_tv"][0] == 0.1235
    assert p["n"].tolist() == [10, 20] and t["ECE"][0] == 0.12345        # a copy
