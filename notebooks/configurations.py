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
# # The configuration gallery: every split-learning topology, leakage per message
#
# Split learning is a family of collaborations (Vepakomma et al., "Split learning for
# health"): the two-party vanilla split, U-shaped (the labels stay with the data holder),
# vertical (clients hold different features of the same samples), multi-task (one client,
# several servers with their own labels), multi-hop (a chain of parties) and clients in
# turns (round robin). nopeek trains every one of them on one protocol engine, and measures
# what each message leaks: one row per (party, message) in the table.
#
# Small version by default (2 epochs, one seed, no decoder; seconds). **Full size**
# (`NOPEEK_NOTEBOOK_SIZE=full`, preset `configurations`: 30 epochs, 3 seeds):
# 171 s on 2 shared CPU cores (`docs/results/configurations/`). In every topology NoPeek
# alpha 1 keeps test accuracy (0.961-0.970) and lowers the dCor of the data holder's first
# message from 0.952-0.957 to 0.814-0.844; the vertical clients, each holding half of every
# image, from 0.967-0.976 to 0.714-0.725. Vanilla, U-shaped and multi-hop give the same
# first message, cell for cell: the same network cut in different places. A decoder still
# rebuilds every message (SSIM 0.855 or more, the class-mean image 0.621-0.714). Without
# NoPeek the second hop of multi-hop leaks less than the first (dCor 0.912 vs 0.953); NoPeek
# on the first hop alone (alpha 1) takes the first below the second (0.814 vs 0.836):
# `--nopeek-hops all` penalises both.
#
# ```bash
# nopeek sweep --preset configurations --out runs/configurations && nopeek figures runs/configurations
# ```

# %%
import os

from IPython.display import Image, display

from nopeek import plots
from nopeek.sweeps import PRESET_INFO, format_table, run_preset

print(PRESET_INFO["configurations"].description)
rows, out = run_preset("configurations")
print(format_table(rows))

# %% [markdown]
# ## How to read it
#
# * `party` and `message`: who sends what. Vertical has one row per client (`client1:z`,
#   `client2:z`) and per client the merged view (`client1:z[all]`: what the server rebuilds
#   of that client's slice from every client's message); multi-hop has one row per hop
#   (`client:z1`, `relay1:z2`); round robin one per client; U-shaped one, the client's
#   `z1` (the server's reply goes back to the data holder, who has the inputs already).
# * NoPeek is applied where the raw data is (the data holder's first message; `--nopeek-hops
#   all` penalises every hop of a chain).
# * Each figure row is one topology: accuracy against held-out dCor and against the decoder's
#   SSIM, alpha 0 and 1 per message.

# %%
paths = plots.sweep_figures(rows, os.path.join(out, "figures"), samples_dir=os.path.join(out, "samples"))
display(Image(next(p for p in paths if p.endswith("tradeoff.png"))))
