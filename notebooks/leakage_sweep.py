# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Leakage sweep: how much does each cut leak, and what does NoPeek buy?
#
# This notebook runs the `quick` preset (scikit-learn digits, an MLP, 2 cuts, NoPeek at alpha 0/1/5 and the noise baseline) through the public API, then reads the table and figures back. Its small version runs by default; the full `quick` preset (`NOPEEK_NOTEBOOK_SIZE=full`) took 187 s on 2 CPU cores (shared with other work; `docs/results/quick/`) and gave, at cut 1, accuracy 0.902 / dCor 0.957 / decoder SSIM 0.933 undefended, 0.891 / 0.904 / 0.930 at alpha 1 and 0.429 / 0.659 / 0.763 at alpha 5 (mean image 0.366). Swap in `PRESETS['default']` for the bundled mnist5k grid, or `PRESETS['paper-mnist']` with `data_dir=` for the paper's setting.

# %%
import os, tempfile
from IPython.display import Image, display
from nopeek.sweeps import PRESET_INFO, format_table, run_sweep

# The quick preset; its small version (fewer epochs and decoder steps) unless NOPEEK_NOTEBOOK_SIZE=full.
preset = PRESET_INFO['quick']
config = preset.config if os.environ.get('NOPEEK_NOTEBOOK_SIZE') == 'full' else preset.small
out = os.path.join(os.environ.get('NOPEEK_NOTEBOOK_OUT') or tempfile.mkdtemp(prefix='nopeek-'), 'quick')
config

# %% [markdown]
# `run_sweep` trains every cell of one cut as one stacked program, fits the inversion decoders against them the same way, and appends one row per cell to `results.csv`. Interrupt it and run it again: finished cells are kept.

# %%
rows = run_sweep(config, out, progress=False)
print(format_table(rows))

# %% [markdown]
# ## How to read the table
#
# * `acc`: test accuracy of the split model (the utility).
# * `dCor`: distance correlation between held-out raw inputs and what crosses the cut (0 = independent, 1 = a rotation/scaling of the input), beside `null95`, the 95% quantile of its permutation null (what independent data reads at this sample size), and `pdCor|y`, the partial dCor given the label (what leaks beyond the label the task needs).
# * `best SSIM`: how well the best attack (a decoder trained on 10% leaked (x, z) pairs) rebuilds held-out inputs; `>label`: its margin over the class-mean image, what the label alone gives the attacker. An attack only leaks what it wins over that.
# * `atk clf` / `lbl clf`: accuracy of a clean classifier shown the reconstructions / the class-mean images. Reconstructions read below `lbl clf` show the label crossing, not the image.
#
# A lower dCor alone does not prove protection: read it next to the attack's scores.

# %%
display(Image(os.path.join(out, 'figures', 'tradeoff.png')))

# %% [markdown]
# Each point is one defence setting: moving left means less leakage, moving down costs accuracy. NoPeek (solid) and the noise baseline (dashed) are drawn side by side for each cut; a defence is better where its curve stays higher at the same leakage.

# %%
display(Image(os.path.join(out, 'figures', 'dcor_vs_alpha.png')))
display(Image(os.path.join(out, 'figures', 'ssim_vs_alpha.png')))

# %%
display(Image(os.path.join(out, 'figures', 'reconstructions_cut1.png')))

# %% [markdown]
# Rows are NoPeek weights, columns the same held-out digits. The reconstructions blur as alpha grows, but at moderate weights they stay readable: that is why the toolkit always reports the attack next to dCor.
