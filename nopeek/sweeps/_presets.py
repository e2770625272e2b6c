"""Named sweep configurations: the CI preset, the default sweep, and one per paper figure.

Each `Preset` is a record: the full configuration, a small version that runs in seconds
(what CI and a freshly opened notebook run), the command that runs it, the run time its
full version took on 2 CPU cores and the result it gave (None, with the reason in
`result`, for a preset not run here). `nopeek sweep --preset NAME` runs the full one;
`--preset NAME --small` the small one. A test checks every record.
"""

from __future__ import annotations

import dataclasses

import attacks
from nopeek.protocol import TOPOLOGIES
from nopeek.sweeps._config import SweepConfig

_MNIST_CNN = dict(dataset="mnist5k", model="cnn", widths=[8, 16, 64, 32])
MODERN_ATTACKS = ("decoder", "adaptive", "adaptive_alpha", "sdar", "fora")
_SMALL = dict(dataset="digits", model="mlp", widths=[64, 32], cuts=["1"], epochs=3, attack_steps=80, seeds=[0])


def image_attacks() -> list[str]:
    """Every reconstruction attack the registry holds (when the presets are built)."""
    return [name for name, spec in attacks.ATTACKS.items() if spec.kind == "reconstruction"]


# Both modern-attacks presets' small version: a smoke run of every modern attack in a sweep (2
# epochs, 15 attack steps; the attacks' numbers are checked at sizes that mean something, in
# both topologies, in tests/test_modern_attacks.py). U-shaped only, the topology with the most
# to run (SDAR's label inference too): with vanilla beside it the run compiled twice the
# programs (43 s against 23 s alone).
_MODERN_SMALL = dict(model="cnn", widths=[4, 8, 32, 16], topologies=["u_shaped"], cuts=["2-5"],
                     cut_activation="linear", alpha_warmup=1.0, alphas=[0.0, 4.0], noise_scales=[], epochs=2,
                     attack_steps=15, attacks=list(MODERN_ATTACKS))


def _strengths(name: str, values) -> list[str]:
    return [f"{name}={v:g}" for v in values]


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named sweep.

    config: the full configuration; small: a version that runs in seconds on digits.
    command: the shell command that runs the full version.
    seconds: its measured wall time on 2 CPU cores (None: not run here, see `result`).
    result: what the full run gave, in one or two sentences (with the number that matters).
    description: what it is for.
    """

    name: str
    config: SweepConfig
    small: SweepConfig
    description: str
    command: str
    seconds: float | None
    result: str


def _preset(name: str, description: str, *, seconds: float | None, result: str, small: dict | None = None,
            **fields) -> Preset:
    config = SweepConfig.from_dict(fields)
    command = f"nopeek sweep --preset {name} --out runs/{name}"
    return Preset(name, config, config.replace(**{**_SMALL, **(small or {})}), description, command, seconds, result)


def _all() -> dict[str, Preset]:
    presets = [
        _preset(
            "quick", "The leakage-sweep notebook: digits, mlp, 2 cuts, NoPeek at 1 and 5, noise 1.",
            seconds=187.4, result="dCor falls with alpha at both cuts (0.957 to 0.659 at cut 1, 0.912 to 0.364 at cut "
            "2), and accuracy with it (0.902 to 0.429 and 0.131 at alpha 5); at alpha 5 and cut 2 the decoder no "
            "longer beats the class-mean image (SSIM 0.395 against 0.700).",
            small=dict(cuts=["1", "2"], alphas=[0.0, 1.0, 5.0], noise_scales=[1.0]),
            dataset="digits", model="mlp", widths=[64, 32], cuts=["1", "2"], alphas=[0.0, 1.0, 5.0],
            noise_scales=[1.0], epochs=6, attack_steps=300,
        ),
        _preset(
            "default", "`nopeek sweep` with no arguments: bundled mnist5k, 3 cuts x 7 defences.",
            seconds=139.8, result="alpha 1 lowers dCor from 0.89 to 0.59 (cut 4) and 0.84 to 0.54 (cut 5) at accuracy 0.916 "
            "and 0.918 against 0.937; alpha 3 collapses cut 4; a clean classifier reads 0.855-0.929 of every live cell's "
            "reconstructions.",
            small=dict(cuts=["1"], alphas=[0.0, 1.0], noise_scales=[1.0]),
            **_MNIST_CNN, cuts=["3", "4", "5"], alphas=[0.0, 0.1, 0.5, 1.0, 3.0], noise_scales=[0.5, 2.0],
            epochs=4, attack_steps=600,
        ),
        _preset(
            "paper-mnist", "The workshop paper's MNIST setting as far as it is given: the NoPeek MNIST "
            "network cut after dense 500, full MNIST from --data-dir, 30 epochs; for a GPU or an afternoon.",
            seconds=None, result="not run here: it needs the full MNIST files (--data-dir) and hours of CPU.",
            small=dict(alphas=[0.0, 0.15], noise_scales=[0.5]),
            dataset="mnist", model="cnn_nopeek", cuts=["4"], alphas=[0.0, 0.05, 0.15, 0.5, 1.0, 3.0],
            noise_scales=[0.5, 2.0], epochs=30, attack_steps=3000, seeds=[0, 1, 2],
        ),
        # The configuration gallery: every topology of the engine on one data set.
        _preset(
            "configurations", "Every split-learning configuration on digits (mlp 64-32), NoPeek alpha 0 and 1, "
            "30 epochs, 3 seeds, decoder attack on every message.",
            seconds=170.8, result="NoPeek alpha 1 lowers the first message's dCor from 0.952-0.957 to "
            "0.814-0.844 at unchanged accuracy (0.961-0.970) in every topology, each vertical client's from "
            "0.967-0.976 to 0.714-0.725 (the nulls' 95% quantiles: 0.175-0.370).",
            small=dict(cuts=["1", "1-2"], topologies=list(TOPOLOGIES), alphas=[0.0, 1.0], noise_scales=[], epochs=2,
                       attacks=[]),
            dataset="digits", model="mlp", widths=[64, 32], topologies=list(TOPOLOGIES), cuts=["1", "1-2"],
            alphas=[0.0, 1.0], noise_scales=[], epochs=30, attack_steps=300, seeds=[0, 1, 2],
        ),
        # Label defences: labels at the server (vanilla: sent to it; vertical: held by it).
        _preset(
            "labels", "The label-defence trade-off: breast cancer, vanilla and vertical, max-norm and Marvell at "
            "strengths 0.25/1/4/16, 20 epochs, 3 seeds, label attacks only (figures/label_tradeoff.png).",
            seconds=53.7, result="without a defence the direction attack reads every label (AUC 1.000); both defences "
            "pull it towards chance as their strength grows, Marvell at less accuracy (0.902 at strength 16, "
            "max-norm 0.874; vanilla, 3 seeds).",
            small=dict(dataset="breast_cancer", topologies=["vanilla"], defenses=["maxnorm=1.0", "marvell=1.0"],
                       epochs=3, attacks=["label"]),
            dataset="breast_cancer", model="mlp", widths=[64, 32], topologies=["vanilla", "vertical"], cuts=["1"],
            alphas=[0.0], noise_scales=[],
            defenses=[f"{d}={s}" for d in ("maxnorm", "marvell") for s in (0.25, 1.0, 4.0, 16.0)],
            seeds=[0, 1, 2], epochs=20, attacks=["label"],
        ),
        # Workshop paper, Figs. 5 and 6: dCor over epochs.
        _preset(
            "workshop-dcor-epochs", "dCor(x, z) over epochs (workshop paper Figs. 5, 6): mnist5k cnn cut after "
            "fc2 with a linear cut layer, alpha 0 / 3 / 12, 20 epochs, 3 seeds.",
            seconds=237.1, result="alpha 3 lowers held-out dCor from 0.784 (alpha 0) to 0.309 +- 0.017 (its null "
            "0.133, the label's 0.643) at accuracy 0.955 +- 0.008 (alpha 0: 0.960); alpha 12 collapses 1 of 3 seeds.",
            small=dict(alphas=[0.0, 3.0], noise_scales=[]),
            **_MNIST_CNN, cuts=["5"], cut_activation="linear", alphas=[0.0, 3.0, 12.0], noise_scales=[], epochs=20,
            attacks=[], seeds=[0, 1, 2],
        ),
        # Workshop paper, Figs. 10 and 11: accuracy over epochs at alpha 0.05 and 0.15.
        _preset(
            "workshop-accuracy-epochs", "Test accuracy over epochs at alpha 0.05 and 0.15 (workshop paper Figs. "
            "10, 11) beside alpha 0: mnist5k cnn cut 5, 30 epochs, 3 seeds.",
            seconds=334.1, result="0.951 +- 0.035 (alpha 0.05) and 0.959 +- 0.007 (alpha 0.15) beside 0.960 at "
            "alpha 0, held-out dCor 0.624 and 0.495 beside 0.827.",
            small=dict(alphas=[0.0, 0.05, 0.15], noise_scales=[]),
            **_MNIST_CNN, cuts=["5"], alphas=[0.0, 0.05, 0.15], noise_scales=[], epochs=30, attacks=[],
            seeds=[0, 1, 2],
        ),
        # Workshop paper, Figs. 7 and 8: reconstructions at alpha 0.1 and 0.9.
        _preset(
            "workshop-reconstructions", "Decoder reconstructions at alpha 0.1 and 0.9 (workshop paper Figs. 7, 8) "
            "beside alpha 0: mnist5k cnn cut after fc1 (64-d), 8 epochs, 3 seeds.",
            seconds=140.0, result="decoder SSIM 0.651 / 0.640 / 0.572 at alpha 0 / 0.1 / 0.9 (the class-mean "
            "image: 0.295); a clean classifier reads 91.0% to 91.3% of the reconstructions at every weight.",
            small=dict(alphas=[0.0, 0.1, 0.9], noise_scales=[]),
            **_MNIST_CNN, cuts=["4"], alphas=[0.0, 0.1, 0.9], noise_scales=[], epochs=8, attack_steps=600,
            seeds=[0, 1, 2],
        ),
        # NoPeek paper: reconstruction error against accuracy, NoPeek against uniform noise.
        _preset(
            "nopeek-tradeoff", "Reconstruction error against accuracy, NoPeek against uniform noise on the "
            "activations (NoPeek paper): mnist5k cnn cut 5 (linear), alpha warm-up 2 epochs, 8 epochs, 3 seeds.",
            seconds=401.7, result="both defences lie on about the same curve: NoPeek alpha 12 reaches MSE 0.048 at "
            "accuracy 0.943, uniform noise of scale 4 MSE 0.052 at 0.929.",
            small=dict(alphas=[0.0, 3.0], noise_scales=[1.0]),
            **_MNIST_CNN, cuts=["5"], cut_activation="linear", alpha_warmup=2.0, alphas=[0.0, 1.0, 3.0, 8.0, 12.0],
            noise_kind="uniform", noise_scales=[0.5, 1.0, 2.0, 4.0], epochs=8, attack_steps=600, seeds=[0, 1, 2],
        ),
        # Where NoPeek protects: the alpha grid with the cliff, and what moves it.
        _preset(
            "region-constant", "Where NoPeek protects, constant alpha (the cliff): mnist5k cnn cut 5 (ReLU), "
            "alpha 0..12, 8 epochs, 5 seeds; 10% of the training set held out to choose on.",
            seconds=350.8, result="alpha 2 collapses 2 of 5 seeds (the other 3: accuracy 0.947, dCor 0.377); "
            "alpha 3 and 4 collapse 4 of 5, alpha 5 and above all 5.",
            small=dict(alphas=[0.0, 8.0], noise_scales=[]),
            **_MNIST_CNN, cuts=["5"], alphas=[0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0], noise_scales=[], epochs=8,
            attack_steps=600, seeds=[0, 1, 2, 3, 4], validation_fraction=0.1,
        ),
        _preset(
            "region-warmup", "As region-constant, with alpha ramped up over the first 2 epochs.",
            seconds=358.7, result="no seed collapses up to alpha 12: dCor falls from 0.820 (alpha 0) to 0.479 at alpha 2 "
            "and 0.313 at alpha 12 (its null 0.131), accuracy from 0.950 to 0.949 and 0.911; the decoder stays above the "
            "class-mean image (SSIM 0.385 at alpha 12 against 0.288).",
            small=dict(alphas=[0.0, 8.0], noise_scales=[]),
            **_MNIST_CNN, cuts=["5"], alpha_warmup=2.0, alphas=[0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0],
            noise_scales=[], epochs=8, attack_steps=600, seeds=[0, 1, 2, 3, 4], validation_fraction=0.1,
        ),
        _preset(
            "region-linear", "As region-constant, with a linear cut layer (no ReLU before the cut).",
            seconds=393.8, result="alpha 2 to 6 keep every seed (accuracy 0.945 to 0.938, dCor 0.409 to 0.344; alpha 0: "
            "0.961, 0.790); alpha 8 and 12 collapse 1 of 5 (seed 1), and at 12 a second seed falls to 0.185; the decoder "
            "stays above the class-mean image (SSIM 0.413 at alpha 8 against 0.288).",
            small=dict(alphas=[0.0, 8.0], noise_scales=[]),
            **_MNIST_CNN, cuts=["5"], cut_activation="linear", alphas=[0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0],
            noise_scales=[], epochs=8, attack_steps=600, seeds=[0, 1, 2, 3, 4], validation_fraction=0.1,
        ),
        # The operating point: the two changes that move the cliff, and longer training.
        _preset(
            "operating-point", "NoPeek's operating region on bundled mnist5k: cnn cut 5 with a linear cut "
            "layer, alpha warm-up over 2 epochs, 20 epochs, alpha 0..12, 5 seeds, decoder attack; the point is "
            "chosen on a validation split (10% of the training set), never on the test split.",
            seconds=2321.3, result="alpha 4, chosen on validation: accuracy 0.959 +- 0.008 at held-out dCor 0.259 "
            "+- 0.024 (its null 0.132, the label's 0.643; alpha 0: 0.965, 0.791); partial dCor given the label "
            "-0.012, yet the decoder beats the class-mean image by SSIM 0.106.",
            small=dict(alphas=[0.0, 6.0], noise_scales=[]),
            **_MNIST_CNN, cuts=["5"], cut_activation="linear", alpha_warmup=2.0, alphas=[0.0, 4.0, 6.0, 8.0, 12.0],
            noise_scales=[], epochs=20, attack_steps=600, seeds=[0, 1, 2, 3, 4], validation_fraction=0.1,
        ),
        # Issue 23: every input-side defence at matched utility.
        _preset(
            "defences", "Every input-side defence ranked at matched utility: bundled mnist5k, cnn cut 4 (fc1, 64 "
            "values), no defence and NoPeek, noise, the Gaussian mechanism (dp_message), DP-SGD (dp_sgd) and MID at 4 "
            "strengths each, 5 seeds, 4 epochs, every image attack of the registry; writes ranking.md, ranking.csv and "
            "figures/defence_frontier.png.",
            seconds=18020.1, result="5 seeds, all 7 attacks (49-79 min per seed on 2 cores): at 2 points of accuracy "
            "dp_message 0.1 leaks least (strongest attack, SDAR, SSIM 0.283, at the class-mean image's level; "
            "epsilon 971), then MID 0.001 (0.437), noise 1 (0.561), NoPeek 1 (0.601); DP-SGD has no setting within 5 points.",
            small=dict(alphas=[0.0, 1.0, 5.0], noise_scales=[0.5, 2.0],
                       defenses=[*_strengths("dp_message", (0.25, 1.0)), *_strengths("dp_sgd", (1.0, 4.0)),
                                 *_strengths("mid", (0.01, 1.0))],
                       seeds=[0, 1], epochs=4, max_stack=0, attacks=["decoder", "whitebox"]),
            **_MNIST_CNN, cuts=["4"], alphas=[0.0, 0.1, 0.3, 1.0, 2.0], noise_scales=[0.25, 0.5, 1.0, 2.0],
            defenses=[*_strengths("dp_message", (0.1, 0.25, 0.5, 1.0)), *_strengths("dp_sgd", (0.3, 0.6, 1.0, 2.0)),
                      *_strengths("mid", (0.0001, 0.001, 0.01, 0.1))],
            seeds=[0, 1, 2, 3, 4], epochs=4, attack_steps=600, attacks=image_attacks(), max_stack=21,
        ),
        # The attacks of 2023-25 against the operating point (docs/guide/modern-attacks.md).
        _preset(
            "modern-attacks", "The attacks of 2023-25 at NoPeek's operating point: mnist5k cnn, vanilla at cut 5 "
            "and U-shaped at cuts 4-5 (linear cut layer, alpha warm-up 2 epochs, 20 epochs), no defence, NoPeek "
            "alpha 4 and uniform noise 2; the decoder, the adaptive attacker (and knowing alpha), SDAR and FORA, "
            "all scored on the half of the held-out set that is not the attacker's auxiliary data.",
            seconds=2759.2, result="NoPeek alpha 4 lowers every attack without bringing any to the label-only bar: "
            "the adaptive attacker's SSIM 0.453 (vanilla) and 0.480 (U-shaped) against the class-mean image's 0.297; "
            "SDAR's best MSE, 0.0642, is near the mean image's 0.0678, and FORA's above it.",
            small=_MODERN_SMALL,
            **_MNIST_CNN, topologies=["vanilla", "u_shaped"], cuts=["5", "4-5"], cut_activation="linear",
            alpha_warmup=2.0, alphas=[0.0, 4.0], noise_kind="uniform", noise_scales=[2.0], epochs=20,
            attacks=list(MODERN_ATTACKS), seeds=[0],
        ),
        _preset(
            "modern-attacks-digits", "The same attacks where their papers run them, on spatial messages: digits, "
            "cnn 8/16/64/32 cut after its second convolution (8x8x16 messages), vanilla at cut 2 and U-shaped at "
            "cuts 2-5, 20 epochs, no defence, NoPeek alpha 4 and uniform noise 2.",
            seconds=1521.2, result="On spatial messages, undefended and under NoPeek alpha 4 every attack beats the "
            "class-mean image (SSIM 0.703): NoPeek lowers dCor from 0.985 to 0.911 only and the decoder still reads "
            "0.993; SDAR reads the U-shaped labels at 0.938 against a chance of 0.133. Uniform noise 2 brings SDAR "
            "and FORA below the class-mean image, not the decoder (0.951).",
            small=_MODERN_SMALL,
            dataset="digits", model="cnn", widths=[8, 16, 64, 32], topologies=["vanilla", "u_shaped"],
            cuts=["2", "2-5"], cut_activation="linear", alpha_warmup=2.0, alphas=[0.0, 4.0], noise_kind="uniform",
            noise_scales=[2.0], epochs=20, attacks=list(MODERN_ATTACKS), seeds=[0],
        ),
    ]
    return {p.name: p for p in presets}


PRESET_INFO: dict[str, Preset] = _all()
PRESETS: dict[str, SweepConfig] = {name: p.config for name, p in PRESET_INFO.items()}


def run_preset(name: str, out: str | None = None, *, size: str | None = None, progress: bool = False):
    """Run preset `name` (the notebooks' entry point): its small version unless `size` (or the
    environment's NOPEEK_NOTEBOOK_SIZE) is "full". Resumes what `out` already holds.

    Returns:
      (rows, out): the results table and the output folder (a new temporary one by default).
    """
    import os
    import tempfile

    from nopeek.sweeps._sweep import run_sweep

    if name not in PRESET_INFO:
        raise KeyError(f"unknown preset {name!r}; choose from {', '.join(PRESET_INFO)}")
    size = size or os.environ.get("NOPEEK_NOTEBOOK_SIZE", "small")
    if size not in ("small", "full"):
        raise ValueError(f"size must be 'small' or 'full', got {size!r}")
    preset = PRESET_INFO[name]
    config = preset.config if size == "full" else preset.small
    out = out or os.path.join(os.environ.get("NOPEEK_NOTEBOOK_OUT") or tempfile.mkdtemp(prefix="nopeek-"), name)
    return run_sweep(config, out, progress=progress, log=lambda line: print(line)), out
