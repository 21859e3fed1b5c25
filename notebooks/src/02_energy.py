# ---
# jupyter:
#   kernelspec:
#     display_name: ltlab
#     language: python
#     name: ltlab
# ---

# %% [markdown]
# # Energy scores and failure prediction
#
# How well do confidence scores separate correct from wrong predictions of one finished run?
# Scores are oriented higher = more likely correct: MSP, the free energy −E(x) = T·logsumexp(f/T)
# (Liu et al. 2020) and the residual energy BE(x, ŷ) = −log Σ_{j≠ŷ} e^{f_j} (ReDebias). Groups are
# by the sample's *true* class: many > 100, medium 20–100, few < 20 training images.
#
# Set `interactive = True` in JupyterLab for a temperature slider; batch runs draw the same
# figures at the default values below.

# %% tags=["parameters"]
run_dir = ""            # a finished run directory (with summary.json)
split = "test"          # test or val
energy_T = 1.0          # temperature of the scores
interactive = False     # True in live JupyterLab: sliders redraw from the cached logits

# %%
# %matplotlib inline
from IPython.display import display

from ltlab.reports import analysis
from ltlab import viz
from ltlab.interactive import widgets

run = analysis.open_run(run_dir)
pred = widgets.predictions(run, split)
logits, labels, counts = pred["logits"], pred["labels"], pred["train_counts"]
print(f"{run.path}: method {run.config['method']}, dataset {run.config['dataset']}, seed {run.config['seed']}; "
      f"{split} split, {len(labels)} samples, {logits.shape[1]} classes, "
      f"top-1 {(logits.argmax(1) == labels).mean():.1%}")
caveat = analysis.energy_caveat(logits)
if caveat:
    print(caveat)

# %% [markdown]
# ## Score distributions, correct vs incorrect
# Densities are normalised per outcome (the minority "incorrect" curve keeps its shape); each
# panel's title gives the AUROC of separating correct (positive) from incorrect.

# %%
if interactive:
    display(widgets.energy_widget(run, T=energy_T, split=split))
else:
    widgets.show_view(widgets.energy_view(run, T=energy_T, split=split))

# %% [markdown]
# ## Risk–coverage
# Selective risk (error rate of the accepted samples) when accepting the most confident
# fraction first; AURC × 1000 in the legend (lower is better), with the oracle ranking.

# %%
viz.risk_coverage_curves(logits, labels, scores=("msp", "energy", "residual_energy"), T=energy_T)

# %% [markdown]
# ## Energy bias by class frequency
# Mean −E(x) of the test samples of each class against its training count: head classes
# usually get larger logits, so a raw energy threshold rejects tail samples first.

# %%
viz.energy_vs_count(logits, counts, labels, T=energy_T)

# %% [markdown]
# ## Failure-prediction metrics per score and group
# AUROC (correct = positive), AURC and E-AURC (× 1000, lower is better), FPR at 95% TPR
# (fraction of errors accepted while keeping 95% of the correct predictions), AUPR of the errors.
# NaN: the group has no error (or no correct prediction).

# %%
widgets.percent_table(analysis.failure_table(logits, labels, counts, T=energy_T))
