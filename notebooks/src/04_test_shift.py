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
# - **em**: q estimated on the unlabeled subset by EM (Saerens et al. 2002), from softmax(logits / T).
#
# π is the prior the logits encode (the training prior for CE; uniform for balanced softmax /
# class-balanced stage two; see `ltlab.shift.model_prior_counts`). Many / medium / few are class
# means by **training** counts. ImageNet-LT, Places-LT and iNat use their list files instead.

# %% tags=["parameters"]
run_dir = ""            # a finished run directory (with summary.json)
source_prior = "auto"   # prior the logits encode: auto, train or uniform
em_temperature = 0.0    # 0 fits T on the val split when there is one, else 1
shift_seed = 0          # seed of the per-class shuffle
splits_dir = ""         # large benchmarks: folder of the shift lists, empty for the shipped ones
test_list = ""          # large benchmarks: test list in prediction order, empty uses the run test list
shift_name = "forward50"  # distribution shown in the prior view
interactive = False     # True in live JupyterLab: dropdowns redraw from the cached logits

# %%
# %matplotlib inline
from IPython.display import display

from ltlab import analysis, posthoc, shift, viz, widgets

run = analysis.open_run(run_dir)
test = widgets.predictions(run, "test")
logits, labels, counts = test["logits"], test["labels"], test["train_counts"]
dataset = run.config["dataset"]
src = widgets.source_counts(run, source_prior)
if em_temperature > 0:
    T = float(em_temperature)
elif widgets.has_split(run, "val"):
    val = widgets.predictions(run, "val")
    T = posthoc.fit_temperature(val["logits"], val["labels"])
else:
    T = 1.0
subsets = shift.subsets_for_run(run.config, labels, splits_dir, test_list)   # None: CIFAR-style
print(f"{run.path}: method {run.config['method']}, dataset {dataset}; source prior {source_prior} "
      f"(head/tail {src.max() / src.min():.3g}); EM temperature {T:.3g}")

# %%
table = shift.shift_table(logits, labels, counts, seed=shift_seed, source_counts=src, temperature=T,
                          subsets=subsets)
table.round(4)

# %%
viz.accuracy_across_shifts(table[["none", "known", "em"]].rename(
    columns={"none": "no correction", "known": "known test prior", "em": "EM-estimated prior"}))

# %% [markdown]
# ## Per group (class mean by training counts)

# %%
cols = [f"{v}_{g}" for v in ("none", "known") for g in ("many", "medium", "few")]
viz.accuracy_across_shifts(table[[c for c in cols if table[c].notna().any()]])

# %% [markdown]
# ## One distribution: true prior, EM estimate and accuracy

# %%
if interactive:
    display(widgets.prior_widget(run, shift_name=shift_name, source=source_prior, temperature=T,
                                 subsets=subsets))
else:
    widgets.show_view(widgets.prior_view(run, shift_name=shift_name, source=source_prior, temperature=T,
                                         seed=shift_seed, subsets=subsets))
