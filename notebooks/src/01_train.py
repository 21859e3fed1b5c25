# ---
# jupyter:
#   kernelspec:
#     display_name: ltlab
#     language: python
#     name: ltlab
# ---

# %% [markdown]
# # Train one long-tailed run
#
# Set the parameters below (or pass them with papermill / `ltlab batch`), run all cells.
# `None` means "the method's default" (the paper's CIFAR hyperparameters). The run
# directory gets `config.yaml`, `metrics.csv`, `checkpoint.pt`, `predictions/` and, last,
# `summary.json`.

# %% tags=["parameters"]
dataset = "demo"        # demo | cifar10_lt | cifar100_lt | folder
data_root = ""          # cifar*_lt: folder with cifar-10-batches-py, or train/<class>/ + test/<class>/
imb_factor = 100.0      # head/tail ratio (demo is fixed at 100)
method = "ce"           # ce, focal, cb, ldam_drw, balanced_softmax, logit_adjust, ... (see docs/methods.md)
model = None            # None: the default of the dataset (demo: resnet8; CIFAR: resnet32)
epochs = None           # None: demo 40; otherwise the method default (200 for the CIFAR recipes)
batch_size = None       # images per step; None: the method default
lr = None               # peak learning rate; None: the method default
seed = 0
device = "auto"         # auto | cpu | cuda
eval_every = 5          # epochs between test evaluations for the learning curves
stage1_run = ""         # stage-two methods: the finished stage-one run directory
run_dir = ""            # empty: runs/DATASET_METHOD_ifIF_sSEED
overrides = {}          # any other config key and value, for example mixup_alpha or val_per_class
resume = True           # continue an interrupted run found in run_dir
restart = False         # discard what run_dir holds and start over

# %%
# %matplotlib inline
from IPython.display import display

import ltlab
from ltlab.training import logs
from ltlab.reports import run_page
from ltlab import viz
from ltlab.evaluation.metrics import per_class_accuracy, softmax
from ltlab.methods.resolve import from_dict

logs.to_stdout()   # start-up lines are information, not errors: keep them off Jupyter's stderr
given = dict(dataset=dataset, data_root=data_root, imb_factor=imb_factor, method=method, model=model,
             epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, eval_every=eval_every,
             stage1_run=stage1_run, run_dir=run_dir)
cfg = from_dict({**{k: v for k, v in given.items() if v not in (None, "")}, **overrides})

# %%
run_dir = ltlab.fit(cfg, resume=resume, restart=restart)
run = ltlab.load_run(run_dir)
run_page.header(run_dir)

# %%
if len(run.metrics):
    display(viz.learning_curves(run.metrics))
else:
    print(f"{cfg.method} is post hoc: no training epochs, no learning curves")

# %% [markdown]
# ## Accuracy by class frequency
# Many / medium / few: more than 100, 20 to 100, fewer than 20 training images.

# %%
test = run.predictions("test")
counts, labels, logits = test["train_counts"], test["labels"], test["logits"]
per_class = per_class_accuracy(logits.argmax(1), labels, len(counts))
viz.per_class_accuracy_vs_count(per_class, counts)

# %%
viz.group_bars({cfg.method: run.summary})

# %% [markdown]
# ## Calibration (15 equal-width bins)

# %%
viz.reliability_diagram(softmax(logits), labels, title=f"{cfg.method}, test, T = 1 (no temperature scaling)")

# %% [markdown]
# ## Everything recorded

# %%
display(run_page.collapsed("Full configuration (config.yaml)", run.config))
run_page.collapsed("Full summary (summary.json, fractions)", run.summary)
