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
# # The attacks of 2023-25 against NoPeek's operating point
#
# NoPeek was judged against a decoder fitted on leaked (x, z) pairs. Since then, passive
# servers attack without any leaked pair: SDAR (Zhu et al., NDSS 2025) simulates the
# client with the server's own model and auxiliary data, adversarially regularised, and
# also reads the labels in U-shaped split learning; FORA (Xu et al., CVPR 2024) fits a
# substitute client to the distribution of the messages alone. And an attacker who knows
# the defence trains its decoder to convergence on whitened messages, with more or fewer
# leaked pairs, and can know alpha. This notebook runs all of them on the same cells (no
# defence, NoPeek, the noise baseline; vanilla and U-shaped) and scores each on the same
# held-out targets beside what the attacker gets for free: the mean image and the
# class-mean image (the label alone).
#
# Small version by default (digits, a small cnn at a spatial cut, U-shaped only, a few steps). **Full
# preset** (`NOPEEK_NOTEBOOK_SIZE=full`, or `nopeek sweep --preset modern-attacks --out
# runs/modern-attacks`): bundled mnist5k, cnn 8/16/64/32, vanilla at cut 5 and U-shaped at
# cuts 4-5, 20 epochs: 46 min on 2 CPU cores (shared with other work;
# `docs/results/modern-attacks/`). At NoPeek alpha 4 the adaptive attacker still reaches
# SSIM 0.453 (vanilla) and 0.480 (U-shaped) against the class-mean image's 0.297; SDAR and
# FORA stay near or below the mean image at this flat cut. The table and what it says:
# docs/guide/modern-attacks.md.

# %%
import os
from IPython.display import Image, display
from nopeek import plots
from nopeek.sweeps import PRESET_INFO, attack_comparison, format_table, leak_curve, run_preset

preset = PRESET_INFO["modern-attacks"]
print(preset.description)
rows, out = run_preset("modern-attacks")
print(format_table(rows))

# %% [markdown]
# Every attack beside the free guesses: MSE / SSIM of the reconstructions of the same
# held-out targets. `mean image` is the attacker's mean input; `class mean` the mean input
# of the target's class, which is all a reconstruction carries when it only carries the
# label (in vanilla split learning the server receives the labels anyway). SDAR's label
# inference (U-shaped, where the labels never leave the client) sits beside chance.

# %%
print(attack_comparison(rows))

# %% [markdown]
# The adaptive attacker's leak-fraction curve: the same decoder, trained to convergence on
# whitened messages, with 1% to 50% of the training set leaked.

# %%
print(leak_curve(rows))

# %%
path = plots.attack_comparison_figure(rows, os.path.join(out, "figures", "modern_attacks.png"))
display(Image(path))
