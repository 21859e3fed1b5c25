# ---
# jupyter:
#   kernelspec:
#     display_name: ltlab
#     language: python
#     name: ltlab
# ---

# %% [markdown]
# # Test-time label shift
#
# Accuracy of one finished run when the test label distribution changes (BalPoE / SADE
# protocol): the balanced test set is subsampled to forward-R (head as in training), uniform
# and backward-R (reversed) profiles, R in 50, 25, 10, 5, 2 (seed 0, one shuffle per class).
# Each distribution is scored three ways:
#
# - **none**: the run's own predictions;
# - **known**: the known test prior q (the subset's class frequencies) by Bayes' rule on the
#   calibrated posteriors below, log p(y|x) + log q − log π (on the raw logits when the
#   calibration is `none`);
# - **em**: q estimated on the unlabeled subset by EM (Saerens et al. 2002) from the same
#   posteriors, calibrated on the val split first, so em − known is what not knowing q costs. By default (`auto`) the calibration is the one of
#   temperature scaling (`ts`), bias-corrected temperature scaling softmax(z / T + b) (`bcts`,
#   Alexandari, Kundaje & Shrikumar, ICML 2020) and BCTS with its biases shrunk to 0 (`bcts_l2`)
#   that has the lowest cross-validated NLL on this run's val split; each can also be asked for,
#   or `none`. An estimate that hit EM's iteration cap or whose entropy collapsed is flagged in
#   `em_status` and its accuracy is left empty.
#
# π is the prior the logits encode: by default fitted on the run's val split (softmax(z / T) are
# posteriors under π_train^γ, so the raw logits carry π_train^(Tγ)), since a method's objective says which prior it should carry but not which one
# it does (TDE's logits carry far less than the training prior); without a val split, the rule by
# objective (the training prior for CE, uniform for balanced softmax and class-balanced stage
# two). See `ltlab.evaluation.shift.source_prior`. Many / medium / few are class
# means by **training** counts. ImageNet-LT, Places-LT and iNat use their list files instead.
# `em_tv` is the total variation between the EM estimate and the subset's true prior.

# %% tags=["parameters"]
run_dir = ""            # a finished run directory (with summary.json)
source_prior = "auto"   # prior the logits encode: auto (fitted on val if the run has one), val, method, train, uniform
em_calibration = "auto"  # calibration fitted on the val split before EM: auto, ts, bcts, bcts_l2 or none
n_resamples = 500       # resamples of the prior intervals: one EM each (~3 s for 500 at 10,000 x 10; fewer for 1,000 classes)
shift_seed = 0          # seed of the per-class shuffle
splits_dir = ""         # large benchmarks: folder of the shift lists, empty for the shipped ones
test_list = ""          # large benchmarks: test list in prediction order, empty uses the run test list
shift_name = "forward50"  # distribution shown in the prior view
interactive = False     # True in live JupyterLab: dropdowns redraw from the cached logits

# %%
# %matplotlib inline
from IPython.display import display

from ltlab.reports import analysis, shift_report
from ltlab.evaluation import shift
from ltlab import viz
from ltlab.interactive import widgets
from ltlab.viz import label_shift

run = analysis.open_run(run_dir)
test = widgets.predictions(run, "test")
logits, labels, counts = test["logits"], test["labels"], test["train_counts"]
dataset = run.config["dataset"]
src, src_how = widgets.source_prior(run, source_prior)
cal = widgets.em_calibration(run, em_calibration, source_prior)   # an error without val unless 'none'
val = widgets.predictions(run, "val") if widgets.has_split(run, "val") else None
subsets = shift.subsets_for_run(run.config, labels, splits_dir, test_list)   # None: CIFAR-style
print(f"{run.path}: method {run.config['method']}, dataset {dataset}; source prior {source_prior}: {src_how} "
      f"(head/tail {src.max() / src.min():.3g})\nEM calibration: {cal.describe()}")

# %%
table = shift.shift_table(logits, labels, counts, seed=shift_seed, source_counts=src, calibration=cal,
                          subsets=subsets)
widgets.percent_table(table[["n", "none", "known", "em", "em_tv", "em_iter", "em_status"]])

# %%
viz.accuracy_across_shifts(table[["none", "known", "em"]].rename(
    columns={"none": "no correction", "known": "known test prior", "em": f"EM prior ({cal.method})"}))

# %% [markdown]
# ## EM's distance to the true prior, by calibration
#
# Total variation between the EM estimate and each subset's true prior, with each calibration
# the run allows (bcts and ts need the val split), and whether the estimate was flagged.

# %%
cals = {m: widgets.em_calibration(run, m, source_prior)
        for m in ("ts", "bcts", "bcts_l2", "none") if m == "none" or val is not None}
widgets.percent_table(shift.em_tv_table(logits, labels, cals, seed=shift_seed, subsets=subsets))

# %% [markdown]
# ## How sure is the estimated prior
#
# Percentile bootstrap intervals on EM's estimate: the unlabeled test images are resampled, and
# so are the val images the calibration was fitted on (stratified by class, the calibration
# refitted on each resample), so the interval holds the calibration's noise too. Per
# distribution: EM's total variation (TV) to the true prior with its interval, and how many
# classes' intervals contain their true prior.

# %%
prior_table = shift_report.prior_interval_table(logits, labels, cal, val, seed=shift_seed, subsets=subsets,
                                                n_resamples=n_resamples)
print(prior_table.attrs["method"])
prior_table.round(3)

# %%
prior_ci = shift_report.prior_intervals(logits, labels, cal, val, shift_name, seed=shift_seed, subsets=subsets,
                                        n_resamples=n_resamples)
display(prior_ci.table())
label_shift.prior_with_intervals(prior_ci, counts, title=shift_name)

# %% [markdown]
# Is the calibration EM used really better here than the others, or is the difference noise?
# Each calibration's TV on `shift_name`, and its difference to the one used, paired over the
# same test and val resamples.

# %%
shift_report.calibration_comparison(logits, labels, {cal.label: cal, **cals}, val, shift_name, seed=shift_seed,
                                    subsets=subsets, n_resamples=n_resamples).round(3)

# %% [markdown]
# ## Uniform-test accuracy from a label-shifted labelled sample
#
# A labelled sample drawn at random from the test set with the class distribution of
# `shift_name` (as a small labelled pool from a deployment whose classes are mixed that way).
# Its plain accuracy (naive) says little about the balanced test; importance weighting (ipw),
# its self-normalised form (snipw) and the doubly robust estimator (dr) reweight it to the
# uniform distribution (`ltlab.evaluation.reweighting`), with the known sample prior, with the
# sample's own label frequencies (then all three are the post-stratified estimate; these
# intervals covered on forward50 and backward50 samples), or with the prior EM estimates from the
# sample's logits alone (re-estimated on each resample, the calibration refitted on val
# resamples; on backward50 samples these intervals under-covered: docs/results.md).
# Truth: the full test set. `*`: the interval misses the truth.

# %%
sample_table = shift_report.biased_sample_table(logits, labels, counts, cal, shift_name, seed=shift_seed,
                                                subsets=subsets, val=val)
print(f"{sample_table.attrs['sample']}; EM-estimated prior at TV {sample_table.attrs['em_tv']:.3f} "
      f"({sample_table.attrs['em_status']})")
shift_report.format_sample_table(sample_table)   # %, 95% interval

# %%
label_shift.estimates_vs_truth(sample_table)

# %% [markdown]
# ## Per group (class mean by training counts)

# %%
cols = [f"{v}_{g}" for v in ("none", "known") for g in ("many", "medium", "few")]
viz.accuracy_across_shifts(table[[c for c in cols if table[c].notna().any()]])

# %% [markdown]
# ## One distribution: true prior, EM estimate and accuracy

# %%
if interactive:
    display(widgets.prior_widget(run, shift_name=shift_name, source=source_prior, calibration=em_calibration,
                                 subsets=subsets))
else:
    widgets.show_view(widgets.prior_view(run, shift_name=shift_name, source=source_prior,
                                         calibration=em_calibration, seed=shift_seed, subsets=subsets))
