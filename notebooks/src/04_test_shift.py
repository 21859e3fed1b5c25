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
# - **known**: the known test prior q (the subset's class frequencies), logits + log q − log π;
# - **em**: q estimated on the unlabeled subset by EM (Saerens et al. 2002) from posteriors
#   calibrated on the val split first: bias-corrected temperature scaling, softmax(z / T + b)
#   (BCTS, Alexandari, Kundaje & Shrikumar, ICML 2020), by default; `ts` (T only) or `none` on
#   request. An estimate that hit EM's iteration cap or whose entropy collapsed is flagged in
#   `em_status` and its accuracy is left empty.
#
# π is the prior the logits encode (the training prior for CE; uniform for balanced softmax /
# class-balanced stage two; see `ltlab.evaluation.shift.model_prior_counts`). Many / medium / few are class
# means by **training** counts. ImageNet-LT, Places-LT and iNat use their list files instead.
# `em_tv` is the total variation between the EM estimate and the subset's true prior.

# %% tags=["parameters"]
run_dir = ""            # a finished run directory (with summary.json)
source_prior = "auto"   # prior the logits encode: auto, train or uniform
em_calibration = "bcts"  # calibration fitted on the val split before EM: bcts, ts or none
shift_seed = 0          # seed of the per-class shuffle
splits_dir = ""         # large benchmarks: folder of the shift lists, empty for the shipped ones
test_list = ""          # large benchmarks: test list in prediction order, empty uses the run test list
shift_name = "forward50"  # distribution shown in the prior view
interactive = False     # True in live JupyterLab: dropdowns redraw from the cached logits

# %%
# %matplotlib inline
from IPython.display import display

from ltlab.reports import analysis
from ltlab.evaluation import shift
from ltlab import viz
from ltlab.interactive import widgets

run = analysis.open_run(run_dir)
test = widgets.predictions(run, "test")
logits, labels, counts = test["logits"], test["labels"], test["train_counts"]
dataset = run.config["dataset"]
src = widgets.source_counts(run, source_prior)
cal = widgets.em_calibration(run, em_calibration, source_prior)   # an error without val unless 'none'
subsets = shift.subsets_for_run(run.config, labels, splits_dir, test_list)   # None: CIFAR-style
print(f"{run.path}: method {run.config['method']}, dataset {dataset}; source prior {source_prior} "
      f"(head/tail {src.max() / src.min():.3g}); EM calibration {cal.method}: T = {cal.temperature:.3g}, "
      f"bias range {cal.bias.max() - cal.bias.min():.3g}")

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
        for m in ("bcts", "ts", "none") if m == "none" or widgets.has_split(run, "val")}
widgets.percent_table(shift.em_tv_table(logits, labels, cals, seed=shift_seed, subsets=subsets))

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
