# ---
# jupyter:
#   kernelspec:
#     display_name: ltlab
#     language: python
#     name: ltlab
# ---

# %% [markdown]
# # Compare runs
#
# Many finished runs side by side. Runs whose configs agree on everything but the seed (and
# paths) form one group; the leaderboard gives the mean ± std over its seeds (accuracy and ECE
# in %, test split, last epoch). Unfinished runs (no summary.json) are never counted.

# %% tags=["parameters"]
run_dirs = []           # finished run directories
skip_unfinished = True  # False refuses a list holding an unfinished run
n_bins = 15             # confidence bins of the reliability diagrams
interactive = False     # True in live JupyterLab: a metric dropdown

# %%
# %matplotlib inline
from IPython.display import display

from ltlab import viz
from ltlab.config import ConfigError
from ltlab.interactive import widgets
from ltlab.reports import analysis
from ltlab.reports.compare import compare_runs

runs, skipped = analysis.load_finished(run_dirs, skip_unfinished)
if skipped:
    print(f"skipped {len(skipped)} unfinished run(s) (no summary.json): " + ", ".join(skipped))
groups = analysis.group_runs(runs)
board = analysis.leaderboard(runs)
print(f"{len(runs)} finished runs in {len(groups)} group(s)")

# %% [markdown]
# ## Leaderboard (mean ± std over seeds)

# %%
analysis.format_leaderboard(board)

# %%
if interactive:
    display(widgets.leaderboard_widget(board))
else:
    widgets.show_view(widgets.leaderboard_view(board, "balanced_acc"))

# %% [markdown]
# ## Is a difference real? Paired comparisons on the same test images
# Each run against the first (`ltlab compare A B`): A − B with a paired bootstrap interval over the
# same test images and McNemar's exact test. "The interval covers 0" means this test set cannot
# tell the two apart; a ± over seeds says nothing about that.

# %%
for r in runs[1:]:
    print(f"A = {r.path}\nB = {runs[0].path}")
    try:
        print("\n".join(compare_runs(r.path, runs[0].path, n_resamples=1000)["lines"]) + "\n")
    except ConfigError as e:   # not the same test images
        print(f"not comparable image by image: {e}\n")

# %% [markdown]
# ## Shot groups side by side

# %%
analysis.group_bars_compare(board)

# %% [markdown]
# ## Reliability side by side (seeds pooled)

# %%
analysis.reliability_compare(groups, n_bins=n_bins)

# %% [markdown]
# ## Accuracy across test label distributions (mean over seeds)
# Without correction and with the known test prior; CIFAR-style subsets of balanced test splits.

# %%
if all(r.config["dataset"] in ("demo", "cifar10_lt", "cifar100_lt") for r in runs):
    display(viz.accuracy_across_shifts(analysis.shift_compare(groups)))
else:
    print("test-shift comparison needs CIFAR-style (balanced) test splits: see 04_test_shift per run")
