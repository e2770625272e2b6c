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
# # Reconstruction error against accuracy: NoPeek against noise (NoPeek paper)
#
# Vepakomma et al., "NoPeek" (ICDMW 2020), judge the defence by the trade-off between the
# error of a reconstruction attack and test accuracy, beside a baseline that adds uniform
# noise to the activations: the noise reaches chance accuracy before it stops
# reconstruction. The toolkit's sweep trains both defences side by side and attacks every
# cell with the inversion decoder; the error plotted is the better of the attack and the
# mean image (`best_mse`), so no point is flattered by a weak attack.
#
# Small version by default; the full preset and the same figure from the shell:
#
# ```bash
# nopeek sweep --preset nopeek-tradeoff --out runs/tradeoff && nopeek figures runs/tradeoff   # figures/error_tradeoff.png
# ```
#
# **Full preset** (`NOPEEK_NOTEBOOK_SIZE=full`; bundled mnist5k, cnn 8/16/64/32, 3 seeds):
# 402 s on 2 CPU cores (shared; `docs/results/nopeek-tradeoff/`). Both defences lie on about the same curve: NoPeek alpha 12 reaches
# reconstruction MSE 0.048 at accuracy 0.943, uniform noise of scale 4 MSE 0.052 at 0.929.

# %%
import os
from IPython.display import Image, display
from nopeek import plots
from nopeek.sweeps import PRESET_INFO, format_table, run_preset

print(PRESET_INFO["nopeek-tradeoff"].description)
rows, out = run_preset("nopeek-tradeoff")
print(format_table(rows))

# %%
display(Image(plots.error_tradeoff_figure(rows, os.path.join(out, "figures", "error_tradeoff.png"))))
