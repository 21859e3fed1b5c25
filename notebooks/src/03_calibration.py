# ---
# jupyter:
#   kernelspec:
#     display_name: ltlab
#     language: python
#     name: ltlab
# ---

# %% [markdown]
# # Calibration
#
# Reliability of one finished run's confidences: 15 equal-width bins, top-label ECE / MCE /
# RMSCE, classwise ECE (Kull et al. 2019), adaptive (equal-mass) ECE, NLL and Brier, overall
# and per many / medium / few group (true class). Temperature scaling is fitted on the run's
# **validation** split only (predictions/val.npz), never on the test split.

# %% tags=["parameters"]
run_dir = ""            # a finished run directory (with summary.json)
n_bins = 15             # confidence bins
temperature = 0.0       # 0 fits T on the val split, a positive value is used as given
tau = 1.0               # tau-norm exponent shown when the val split cannot choose one
interactive = False     # True in live JupyterLab: sliders redraw from the cached logits

# %%
# %matplotlib inline
from IPython.display import display

from ltlab.reports import analysis
from ltlab.evaluation import posthoc, posthoc_classifier
from ltlab import viz
from ltlab.interactive import widgets
from ltlab.evaluation.metrics import softmax

run = analysis.open_run(run_dir)
test = widgets.predictions(run, "test")
logits, labels, counts = test["logits"], test["labels"], test["train_counts"]
val = widgets.predictions(run, "val") if widgets.has_split(run, "val") else None
if temperature > 0:
    T = float(temperature)
    print(f"temperature given: T = {T:.4g}")
elif val is not None:
    T = posthoc.fit_temperature(val["logits"], val["labels"])
    print(f"temperature fitted on the validation split ({len(val['labels'])} samples): T = {T:.4g}")
else:
    T = None
    print("This run has no validation split (predictions/val.npz): temperature scaling is skipped "
          "(it is never fitted on the test split). Train with val_per_class > 0 to get one.")

# %% [markdown]
# ## Calibration metrics, overall and per group

# %%
widgets.percent_table(analysis.calibration_table(logits, labels, counts, temperature=T, n_bins=n_bins))

# %% [markdown]
# ## Reliability diagrams
# Bars: accuracy per confidence bin; red hatched: the gap to the bin's mean confidence;
# below, the share of samples per bin with the mean accuracy and confidence.

# %%
if T is not None:
    display(viz.reliability_before_after(logits, labels, T, n_bins=n_bins))
else:
    display(viz.reliability_diagram(softmax(logits), labels, n_bins=n_bins, title="test, T = 1"))

# %%
viz.reliability_by_group(softmax(logits), labels, counts, n_bins=n_bins, title="before temperature scaling (T = 1)")

# %%
if T is not None:
    display(viz.reliability_by_group(softmax(logits / T), labels, counts, n_bins=n_bins,
                                     title=f"after temperature scaling (T = {T:.3g})"))

# %% [markdown]
# ## Interactive temperature
# The same reliability diagram at any temperature (batch: at the fitted one, or T = 1).

# %%
if interactive:
    display(widgets.calibration_widget(run, temperature=T or 1.0))
else:
    widgets.show_view(widgets.calibration_view(run, temperature=T or 1.0, n_bins=n_bins))

# %% [markdown]
# ## Classifier weight norms and τ-normalisation
# Long-tailed training leaves larger weight norms on head classes; τ-norm (Decoupling) divides
# each class's weights by ‖w‖^τ and drops the bias. τ is chosen on the validation split when
# the run has one (balanced accuracy), else the `tau` parameter is shown.

# %%
if widgets.has_classifier(run):
    tau_show = tau
    if val is not None and "features" in val:
        tau_show, _, val_scores = posthoc_classifier.choose_tau(val["features"], val["labels"],
                                                                test["classifier_weight"])
        print(f"τ chosen on the validation split: {tau_show:g} "
              f"(val balanced accuracy {val_scores.max():.1%})")
    if interactive:
        display(widgets.tau_widget(run, tau=tau_show))
    else:
        widgets.show_view(widgets.tau_view(run, tau=tau_show))
else:
    print("This run has no linear classifier weights with features (classifier_weight, features; an archived "
          "run keeps features only when they are small): no weight-norm / τ-norm view.")

# %% [markdown]
# ## Post-hoc logit adjustment
# f(x) − τ·log π (Menon et al. 2021), π the prior the logits encode (`ltlab.evaluation.shift.source_prior`):
# τ = 0 is the run's own prediction, τ = 1 removes a training prior the logits carry in full.
# Accuracy by class frequency and ECE at this τ (batch: τ = 1).

# %%
if interactive:
    display(widgets.logit_adjust_widget(run, tau=1.0))
else:
    widgets.show_view(widgets.logit_adjust_view(run, tau=1.0))

# %% [markdown]
# ## TDE counterfactual strength α (TDE runs)
# Causal-TDE (Tang et al. 2020) subtracts α times the effect of the moving feature direction from
# the logits; the view recomputes them from the saved features for any α (batch: the run's own α).

# %%
if widgets.is_tde(run):
    if interactive:
        display(widgets.tde_widget(run))
    else:
        widgets.show_view(widgets.tde_view(run))
else:
    print(f"{run.config['method']} is not a TDE run: no α to vary (method=tde saves the TDE head).")
