"""04_test_shift's "how sure" tables (ltlab.reports.shift_report) and figures (ltlab.viz.label_shift),
on the archived CE run; the shifted-sample draw of ltlab.evaluation.reweighting."""
import numpy as np
import pytest
from conftest import REPO
from matplotlib.figure import Figure

from ltlab.evaluation import calibrated_em as CE
from ltlab.evaluation import reweighting as R
from ltlab.evaluation import shift
from ltlab.evaluation.run_dir import load_run
from ltlab.reports import analysis, shift_report
from ltlab.viz import label_shift

CE_RUN = REPO / "experiments" / "results" / "cifar10_lt_if100" / "ce" / "seed0"


@pytest.fixture(scope="module")
def ce():
    run = load_run(CE_RUN)
    test, val = run.predictions("test"), run.predictions("val")
    cal = shift.run_calibration(run.config, test, val)          # auto
    return run, test, val, cal


def test_draw_shifted_sample():
    y = np.repeat(np.arange(4), [50, 40, 30, 20])
    s = np.array([0.7, 0.2, 0.1, 0.0])
    idx = R.draw_shifted_sample(y, s, 5000, seed=3)
    assert idx.size == 5000 and np.array_equal(idx, R.draw_shifted_sample(y, s, 5000, seed=3))
    freq = np.bincount(y[idx], minlength=4) / idx.size
    np.testing.assert_allclose(freq, s, atol=0.02)
    assert np.ptp(np.bincount(idx[y[idx] == 1], minlength=90)[50:90]) < 60     # every image of a class drawn
    with pytest.raises(ValueError, match="no image to draw"):
        R.draw_shifted_sample(y[y < 3], s[[0, 1, 3, 2]], 100)


def test_run_calibration_is_auto_and_refuses_a_missing_val(ce):
    run, test, val, cal = ce
    assert cal.method == "ts" and cal.label == "auto: ts" and set(cal.info["cv_nll"]) == {"ts", "bcts", "bcts_l2"}
    assert shift.run_calibration(run.config, test, None, "none").method == "none"
    with pytest.raises(ValueError, match="needs the run's val split"):
        shift.run_calibration(run.config, test, None)


def test_prior_interval_table_on_the_ce_run(ce):
    run, test, val, cal = ce
    t = shift_report.prior_interval_table(test["logits"], test["labels"], cal, val, n_resamples=60)
    assert list(t.index) == ["forward50", "uniform", "backward50"] and t.loc["forward50", "n"] == 2795
    tv = shift.em_tv_table(test["logits"], test["labels"], {"auto": cal}, shifts=list(t.index))
    np.testing.assert_allclose(t["tv"], tv["tv auto"])
    assert (t["tv_lo"] <= t["tv_hi"]).all() and "val images" in t.attrs["method"]
    pi = shift_report.prior_intervals(test["logits"], test["labels"], cal, None, "backward50", n_resamples=60)
    assert pi.resampled == "test images" and pi.true_prior[9] == pytest.approx(1000 / 2795, abs=1e-3)
    fig = label_shift.prior_with_intervals(pi, test["train_counts"], title="backward50")
    assert isinstance(fig, Figure) and "TV to the true prior" in fig.axes[0].get_title()


def test_biased_sample_table_against_the_truth(ce):
    run, test, val, cal = ce
    df = shift_report.biased_sample_table(test["logits"], test["labels"], test["train_counts"], cal,
                                          "forward50", n_resamples=200)
    assert set(df["weights"]) == {"known prior", "label frequencies", "EM-estimated prior"}
    assert set(df["target"]) == {"balanced_acc", "many", "medium"}             # CIFAR-10-LT has no few class
    truth = df.drop_duplicates("target").set_index("target")["truth"]
    for k in ("balanced_acc", "many", "medium"):
        # the float16 archive flips an image: 1 / 2,000 of the medium group (2 classes)
        assert truth[k] == pytest.approx(run.summary[k], abs=6e-4)
    row = df.set_index(["weights", "estimator", "target"])
    # the forward sample over-represents the head: its plain accuracy is far above the balanced one
    assert row.loc[("known prior", "naive", "balanced_acc"), "estimate"] > truth["balanced_acc"] + 0.1
    for e in ("ipw", "snipw", "dr"):
        assert abs(row.loc[("known prior", e, "balanced_acc"), "error"]) < 0.05
    # the sample's own label frequencies: the three agree, on the post-stratified estimate
    freq = [row.loc[("label frequencies", e, "balanced_acc"), "estimate"] for e in ("ipw", "snipw", "dr")]
    assert freq[0] == pytest.approx(freq[1], abs=1e-12) and freq[0] == pytest.approx(freq[2], abs=1e-12)
    assert df.attrs["em_status"] == "ok" and df.attrs["em_tv"] < 0.1 and "2795 images" in df.attrs["sample"]
    text = shift_report.format_sample_table(df)
    assert text.loc[("truth", "full test set"), "balanced_acc"] == f"{100 * truth['balanced_acc']:.1f}"
    assert text.loc[("known prior", "naive"), "balanced_acc"].endswith(" *")
    fig = label_shift.estimates_vs_truth(df)
    assert len(fig.axes) == 3


def test_shift_compare_with_em_uses_each_runs_val_calibration(ce):
    run = ce[0]
    t = analysis.shift_compare({"ce": [run]}, variants=("none", "known", "em"), em=True)
    test = run.predictions("test")
    want = shift.shift_table(test["logits"], test["labels"], test["train_counts"], calibration=ce[3],
                             shifts=["backward50"])
    assert t.loc["backward50", "ce (em)"] == pytest.approx(want.loc["backward50", "em"])
    assert CE.CALIBRATIONS[0] == "auto"


def test_calibration_comparison_pairs_the_resamples(ce):
    run, test, val, cal = ce
    cals = {m: shift.run_calibration(run.config, test, val, m) for m in ("ts", "bcts")}
    t = shift_report.calibration_comparison(test["logits"], test["labels"], {cal.label: cal, **cals}, val,
                                            "forward50", n_resamples=40)
    assert list(t.index) == ["auto: ts", "bcts"]                     # ts is the auto choice: shown once
    assert t.loc["auto: ts", "tv - tv auto: ts"] == 0 and t.loc["auto: ts", "diff_lo"] == 0
    assert t.loc["bcts", "tv - tv auto: ts"] == pytest.approx(t.loc["bcts", "tv"] - t.loc["auto: ts", "tv"])
