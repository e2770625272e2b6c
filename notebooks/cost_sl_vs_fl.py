# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # What a collaboration costs: split learning against federated learning
#
# Split learning's pitch is a light client: it runs only the layers before the cut, and sends
# activations instead of the whole model. This notebook costs one client of each method from
# the real models (FLOPs from XLA's cost analysis of the compiled steps, bytes from the
# messages that cross the cut), against the number of clients sharing the data.
#
# Small version by default: the bundled models on their bundled data (`bundled` preset,
# seconds). **Full size** (`NOPEEK_NOTEBOOK_SIZE=full`): the split-learning paper's table,
# VGG-16 on CIFAR-10 and ResNet-50 on CIFAR-100, cut after the first block, with the per-cut
# sensitivity; 1 min 52 s on 2 CPU cores. It gives split learning's client **1/207** of a
# federated client's compute (the paper: about 1/190) and a communication crossover at
# **138 clients** (the paper: split sends more at 100 clients, less at 500). From the shell:
#
# ```bash
# nopeek cost --preset seed-table --out runs/seed-table
# ```

# %%
import os
import tempfile

from IPython.display import Image, display

from nopeek.cost import COST_PRESETS, run_cost, sensitivity_figure

FULL = os.environ.get("NOPEEK_NOTEBOOK_SIZE") == "full"
out = os.path.join(os.environ.get("NOPEEK_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="nopeek-"), "cost")
report = run_cost(COST_PRESETS["seed-table" if FULL else "bundled"], out, reference=FULL, force=True)  # run again: replaced
print(report.text)

# %% [markdown]
# ## How to read it
#
# * **compute**: TFLOPs one client spends over the whole training; `split / federated` is the
#   ratio of the two clients' work (below 1: the split client is lighter).
# * **communication**: GB one client sends and receives. Split learning's traffic scales
#   with the client's share of the data (activations and their gradients per sample), while
#   federated learning's is the model twice per round whatever the share: so split learning
#   sends less from some number of clients on (the `crossover`).
# * **assumptions**: every counting rule, so a reader can disagree with one and change it.

# %%
display(Image(os.path.join(out, "cost.png")))
if report.sensitivity:  # the full preset: the crossover and compute ratio at each cut
    display(Image(sensitivity_figure(report.sensitivity, os.path.join(out, "cost_sensitivity.png"))))
print({name: (None if c is None else round(c, 1)) for name, c in report.crossovers.items()}, "clients: crossover")
