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
# # Reconstructions at alpha 0.1 and 0.9 (workshop paper, Figs. 7 and 8)
#
# The workshop paper shows images rebuilt from the cut layer at NoPeek weights 0.1 and 0.9
# (qualitatively). Here an attacker who holds 10% of the training images with their
# activations fits an inversion decoder (one per model, as one stack) and rebuilds held-out
# images; every score sits next to what the attacker gets for free (the mean image), and a
# clean classifier reads the reconstructions.
#
# Small version by default; the full preset and the same grid from the shell:
#
# ```bash
# nopeek sweep --preset workshop-reconstructions --out runs/fig7 && nopeek figures runs/fig7   # figures/reconstructions_cut4.png
# ```
#
# **Full preset** (`NOPEEK_NOTEBOOK_SIZE=full`; bundled mnist5k, cnn 8/16/64/32, 3 seeds):
# 140 s on 2 shared CPU cores (`docs/results/workshop-reconstructions/`). Cut 4: decoder SSIM
# 0.651 / 0.640 / 0.572 at alpha 0 / 0.1 / 0.9 (the class-mean image, what the label alone
# gives: 0.295); a clean classifier reads 91.0-91.3% of the reconstructions at every weight.

# %%
import os
from IPython.display import Image, display
from nopeek import plots
from nopeek.sweeps import PRESET_INFO, format_table, run_preset

print(PRESET_INFO["workshop-reconstructions"].description)
rows, out = run_preset("workshop-reconstructions")
print(format_table(rows))

# %% [markdown]
# Rows: the original held-out images, then the decoder's reconstructions of the same images
# for each NoPeek weight (first seed).

# %%
paths = plots.sweep_figures(rows, os.path.join(out, "figures"), samples_dir=os.path.join(out, "samples"))
for path in paths:
    if "reconstructions" in path:
        display(Image(path))
