"""The registry of attacks: one call shape for every attack, one defaults record for each.

Every attack takes an `AttackInputs` (what the attacker holds: arrays and callables for K
target models side by side) and its settings, and returns one output per target model.
What it needs is declared (`AttackSpec.needs`) and checked before it runs; what it returns
is scored the same way for every attack of a kind, each score beside the free baseline the
attacker gets without attacking (`score`):

- "reconstruction": outputs {"x_hat": (n, *x_shape)} for the first n targets; scored by
  `scoring.scores_with_baseline` (MSE, PSNR, SSIM, dCor(x, x_hat), a clean classifier's
  accuracy on x_hat; `baseline_*`: the attacker's mean input; `class_mean_*`: each
  target's class mean of the attacker's inputs, what the label alone gives, and
  `beyond_label_*`, the attack's margin over it).
  An output may also carry "label_hat" (n,) labels it inferred (scored `label_accuracy`
  beside `label_chance`, the targets' majority-class rate), "class_mean_source" ("aux": the
  class means are of the attacker's auxiliary labelled data rather than its leaked pairs),
  "extra" {name: {"x_hat", "x_mean"}} more reconstructions (scored `name_*` beside the mean
  image `x_mean` of their own attacker's data, `name_baseline_*`), and numbers (kept as they are).
- "attribute": outputs {"probes": [{"probe", "accuracy", "chance"}]}: a label read from z.
- "label": outputs {"norm_auc", "direction_auc", ...}: labels read from cut gradients (chance at this n: `leak_null95`, the permutation null; 0.5 only for endless samples).

`register` adds one's own attack; `nopeek attack --list`, the audit and sweeps read `ATTACKS`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from attacks import decoder
from attacks.adaptive import adaptive, adaptive_alpha
from attacks.fora import fora
from attacks.sdar import Victim, sdar
from attacks.decoder import vmap_models
from attacks.inversion import unsplit_inversion, whitebox_inversions
from attacks.label_leakage import label_leakage_auc
from attacks.probe import PROBES, probe_accuracy
from attacks.scoring import scores_with_baseline

KINDS = ("reconstruction", "attribute", "label")
# What an attack may need, each a field (or fields) of AttackInputs that must be given.
NEEDS = {
    "pairs": ("x_leak", "z_leak"),
    "targets": ("z_target",),
    "labels": ("y_leak", "y_target"),
    "message_fn": ("message_apply", "message_states"),
    "architecture": ("architecture",),
    "gradients": ("gradients", "y_target"),
    "aux": ("x_aux", "y_aux"),
    "server": ("server_apply", "server_params", "labels_at_server"),
    "observed": ("z_train",),
    "alphas": ("alphas",),
    "pool": ("x_train", "z_train"),
}


@dataclasses.dataclass
class AttackInputs:
    """What an attacker holds against K target models (arrays are NumPy or JAX).

    x_leak: (n_l, ...) inputs the attacker holds together with the messages they produced,
      z_leak: (K, n_l, ...), one set per target model; y_leak: (n_l,) their labels.
    x_target: (n_t, ...) held-out inputs the attack tries to recover (used only to score);
      z_target: (K, n_t, ...) their messages as sent; y_target: (n_t,) their labels. Where
      each model has targets of its own, the three are lists of K arrays (n_k may differ).
    message_apply(state, x) -> message (n, ...), message_states: K pytrees: the sender's
      function up to the message and each model's weights (white box); the weights are an
      argument, so one compiled program inverts every model.
    architecture: seed -> (apply(params, x) -> message, params): the sender's architecture
      up to the message, freshly initialised (the attacker knows it, not its weights).
    gradients: (K, n_t, ...) the per-sample gradients the attacker received for the targets.
    classifier: an object with `accuracy(x, y)` trained on clean inputs (scores reconstructions).
    map_models(fn, in_axes) -> fn: how to run one function over the K models (default vmap);
      place(tree) -> tree: where to put stacked arrays (e.g. sharded over devices).
    seed: the attacker's seed.

    What a server holds besides leaked pairs (SDAR, FORA, the adaptive attackers):
    x_aux, y_aux: (n_a, ...), (n_a,) an auxiliary labelled set of the task's distribution
      that the clients never trained on.
    z_train: (K, n, ...) the messages each model's receiver got for the client's training
      inputs (what an honest-but-curious server observes); y_train: (n,) their labels
      (known to a server the labels are sent to); x_train: (n, ...) those inputs, which no
      attacker holds: they are the universe a leak-fraction curve draws leaked shares from.
    server_apply(params, m) -> out, server_params: K pytrees: the receiver's own trained
      model from the message on; labels_at_server: True when `out` are logits of the labels
      the receiver holds (vanilla: the labels are sent with the messages, so y_target and
      y_train are known to it), False when `out` goes back to the labels' holder, who keeps
      the head and the labels (U-shaped).
    alphas: (K,) each model's NoPeek weight, for an attacker who knows the defence.
    """

    x_leak: Any = None
    z_leak: Any = None
    y_leak: Any = None
    x_target: Any = None
    z_target: Any = None
    y_target: Any = None
    message_apply: Callable | None = None
    message_states: Sequence | None = None
    architecture: Callable | None = None
    gradients: Any = None
    classifier: Any = None
    map_models: Callable = vmap_models
    place: Callable | None = None
    seed: int = 0
    x_aux: Any = None
    y_aux: Any = None
    x_train: Any = None
    z_train: Any = None
    y_train: Any = None
    server_apply: Callable | None = None
    server_params: Sequence | None = None
    labels_at_server: bool | None = None
    alphas: Any = None

    def targets(self, k: int):
        """(x_target, y_target) of model k: the shared arrays, or entry k where each model has
        its own targets (lists of K arrays, ragged)."""
        pick = lambda a: a[k] if isinstance(a, (list, tuple)) else a  # noqa: E731
        return pick(self.x_target), pick(self.y_target)

    @property
    def num_classes(self) -> int:
        """The number of classes: one more than the largest label the attacker knows of."""
        known = [np.asarray(a).ravel() for a in (self.y_aux, self.y_leak, self.y_train) if a is not None]
        if self.y_target is not None and not isinstance(self.y_target, (list, tuple)):
            known.append(np.asarray(self.y_target).ravel())
        return int(max(int(a.max()) for a in known if a.size)) + 1 if known else 0

    @property
    def models(self) -> int:
        """K, the number of target models."""
        for name in ("z_target", "z_leak", "gradients"):
            value = getattr(self, name)
            if value is not None:
                return len(value) if isinstance(value, (list, tuple)) else int(np.shape(value)[0])
        return len(self.message_states or ())


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """A registered attack.

    kind: "reconstruction", "attribute" or "label" (how its outputs are scored).
    needs: the keys of `NEEDS` it requires of its inputs.
    defaults: its settings and their defaults ({"steps": 1500, "lr": 2e-3, ...}); a value
      given explicitly is always obeyed.
    run(inputs, **settings) -> [output per target model].
    stacked: whether it fits the K models together (else one after the other).
    whole_input: whether the message must be computed from the whole input (not a slice).
    uses: keys of `NEEDS` it reads when they are given but can run without.
    """

    name: str
    kind: str
    needs: frozenset
    defaults: Mapping[str, Any]
    run: Callable[..., list]
    description: str = ""
    stacked: bool = False
    whole_input: bool = False
    uses: frozenset = frozenset()

    def reads(self, need: str) -> bool:
        """Whether it needs or uses `need` (a key of `NEEDS`)."""
        return need in self.needs or need in self.uses


ATTACKS: dict[str, AttackSpec] = {}


def register(name: str, run: Callable[..., list], *, kind: str, needs: Sequence[str], defaults: Mapping[str, Any],
             description: str = "", stacked: bool = False, whole_input: bool = False, uses: Sequence[str] = ()) -> None:
    """Make attack `name` available to `nopeek attack`, sweeps, the audit and `run`.

    Args:
      name: its name.
      run: `run(inputs: AttackInputs, **settings) -> list` of one output per target model
        (see the module docstring for each kind's output).

    The keyword arguments (`kind`, `needs`, `defaults`, `description`, `stacked`,
    `whole_input`, `uses`) are the fields of `AttackSpec`, documented there.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an attack name must be a non-empty string, got {name!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = (set(needs) | set(uses)) - set(NEEDS)
    if unknown:
        raise ValueError(f"needs and uses must be among {', '.join(NEEDS)}, got {', '.join(sorted(unknown))}")
    ATTACKS[name] = AttackSpec(name, kind, frozenset(needs), dict(defaults), run, description, stacked, whole_input,
                               frozenset(uses))


def spec(name: str) -> AttackSpec:
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    return ATTACKS[name]


def missing(name: str, inputs: AttackInputs) -> list[str]:
    """The needs of attack `name` that `inputs` does not meet (empty: it can run)."""
    return [need for need in sorted(spec(name).needs)
            if any(getattr(inputs, f) is None for f in NEEDS[need])]


def settings(name: str, **given) -> dict:
    """The attack's settings: its defaults, with every explicitly given value (not None) over them."""
    s = spec(name)
    unknown = {k for k, v in given.items() if v is not None} - set(s.defaults)
    out = dict(s.defaults)
    out.update({k: v for k, v in given.items() if v is not None and k in s.defaults})
    out["_ignored"] = sorted(unknown)
    return out


def run(name: str, inputs: AttackInputs, **given) -> list:
    """Run attack `name` against every target model of `inputs` with its defaults and the
    given settings (None: the default; settings the attack does not take are ignored).

    Raises:
      ValueError: an unknown attack, or inputs that do not meet its needs.
    """
    s = spec(name)
    lacking = missing(name, inputs)
    if lacking:
        raise ValueError(f"the {name} attack needs {', '.join(lacking)}, which the attacker does not hold here")
    resolved = settings(name, **given)
    resolved.pop("_ignored")
    return s.run(inputs, **resolved)


def score(name: str, inputs: AttackInputs, output: dict, *, model: int = 0, subset=None) -> dict:
    """The scores of one output (that of target model `model`) beside their free baselines.

    Reconstruction: `scores_with_baseline` on the targets the output covers (or `subset` of
    them, indices into the targets), and what the output carries besides x_hat (see the
    module docstring); attribute and label outputs are already scores.
    """
    if spec(name).kind != "reconstruction":
        return {k: v for k, v in output.items() if k != "x_hat"}
    x_hat = np.asarray(output["x_hat"])
    index = np.arange(len(x_hat)) if subset is None else np.asarray(subset)
    x_target, y_target = inputs.targets(model)
    x = np.asarray(x_target)[index]
    y = None if y_target is None else np.asarray(y_target)[index]
    baseline_data = inputs.x_leak if inputs.x_leak is not None else inputs.x_target
    # The label-only baseline needs the attacker's labels beside its inputs, and the targets'.
    y_attacker = inputs.y_leak if inputs.x_leak is not None else None
    if output.get("class_mean_source") == "aux" and inputs.x_aux is not None:
        baseline_data, y_attacker = inputs.x_aux, inputs.y_aux
    scores = scores_with_baseline(x, x_hat[index], baseline_data, classifier=inputs.classifier, y=y,
                                  y_attacker=y_attacker)
    if "label_hat" in output and y is not None:
        scores["label_accuracy"] = float(np.mean(np.asarray(output["label_hat"])[index] == y))
        scores["label_chance"] = float(np.max(np.bincount(y)) / len(y))
    for extra, rec in output.get("extra", {}).items():
        part = scores_with_baseline(x, np.asarray(rec["x_hat"])[index], np.asarray(rec["x_mean"])[None],
                                    classifier=inputs.classifier, y=y)
        scores.update({f"{extra}_{k}": v for k, v in part.items()})
        if "n_pairs" in rec:
            scores[f"{extra}_n_pairs"] = int(rec["n_pairs"])
    scores.update({k: v for k, v in output.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in scores})
    return scores


# ---- the built-in attacks ---------------------------------------------------------------


def _decoder(inputs: AttackInputs, *, steps, lr, batch_size) -> list:
    fitted = decoder.fit_decoders(inputs.z_leak, inputs.x_leak, steps=steps, lr=lr, batch_size=batch_size, seed=inputs.seed,
                          map_models=inputs.map_models, place=inputs.place, log_every=min(100, max(1, steps)))
    if isinstance(inputs.z_target, (list, tuple)):  # one array per model, of different lengths
        x_hat = [fitted.select(k).reconstruct(np.asarray(z)[None])[0] for k, z in enumerate(inputs.z_target)]
    else:
        x_hat = fitted.reconstruct(inputs.z_target)
    losses = fitted.loss_history
    return [{"x_hat": x_hat[k], "steps_run": fitted.steps,
             "final_train_loss": float(losses[-1, k]) if losses.ndim == 2 and len(losses) else float("nan")}
            for k in range(len(x_hat))]


def _whitebox(inputs: AttackInputs, *, steps, lr, tv_weight, n_targets) -> list:
    models = range(len(inputs.message_states))
    x_hat = whitebox_inversions(inputs.message_apply, [np.asarray(inputs.z_target[k])[:n_targets] for k in models],
                                [np.shape(inputs.targets(k)[0])[1:] for k in models], inputs.message_states,
                                steps=steps, lr=lr, tv_weight=tv_weight)
    return [{"x_hat": x} for x in x_hat]


def _unsplit(inputs: AttackInputs, *, steps, lr, tv_weight, n_targets) -> list:
    out = []
    for k in range(inputs.models):
        apply, params = inputs.architecture(inputs.seed + 1000)
        z = np.asarray(inputs.z_target[k])[:n_targets]
        x_hat, _ = unsplit_inversion(apply, params, z, np.shape(inputs.targets(k)[0])[1:], rounds=max(1, steps // 100),
                                     lr_input=lr, tv_weight=tv_weight)
        out.append({"x_hat": x_hat})
    return out


def _probe(inputs: AttackInputs) -> list:
    return [{"probes": [probe_accuracy(inputs.z_leak[k], inputs.y_leak, inputs.z_target[k], inputs.targets(k)[1], kind=kind,
                                       seed=inputs.seed) for kind in PROBES]} for k in range(inputs.models)]


def _label(inputs: AttackInputs) -> list:
    return [label_leakage_auc(inputs.gradients[k], inputs.targets(k)[1]) for k in range(inputs.models)]


def _stacked_targets(inputs: AttackInputs, name: str):
    if isinstance(inputs.z_target, (list, tuple)):
        raise ValueError(f"the {name} attack needs the K models' targets as one (K, n, ...) array")
    return np.asarray(inputs.z_target, np.float32)


def _victim(inputs: AttackInputs) -> Victim:
    return Victim(inputs.server_apply, list(inputs.server_params), bool(inputs.labels_at_server), inputs.num_classes)


def _sdar(inputs: AttackInputs, *, steps, batch_size, lr, decoder_lr, head_lr, lambda1, df_lr, lambda2, flip,
          simulator, known_alpha) -> list:
    victim = _victim(inputs)
    architecture = inputs.architecture if simulator == "architecture" else None
    outputs = sdar(inputs.x_aux, inputs.y_aux, inputs.z_train, inputs.y_train if victim.labels_at_server else None,
                   _stacked_targets(inputs, "sdar"), inputs.y_target if victim.labels_at_server else None, victim,
                   architecture=architecture, alphas=inputs.alphas, steps=steps, batch_size=batch_size, lr=lr,
                   decoder_lr=decoder_lr, head_lr=head_lr, lambda1=lambda1, df_lr=df_lr, lambda2=lambda2,
                   flip=None if flip == "auto" else flip, known_alpha=bool(known_alpha), seed=inputs.seed,
                   map_models=inputs.map_models, place=inputs.place)
    return [{**o, "class_mean_source": "aux"} for o in outputs]


def _fora(inputs: AttackInputs, *, steps, batch_size, lr, decoder_lr, critic_lr, mmd_weight, gp_weight) -> list:
    outputs = fora(inputs.x_aux, inputs.z_train, _stacked_targets(inputs, "fora"), steps=steps, batch_size=batch_size,
                   lr=lr, decoder_lr=decoder_lr, critic_lr=critic_lr, mmd_weight=mmd_weight, gp_weight=gp_weight,
                   seed=inputs.seed, map_models=inputs.map_models, place=inputs.place)
    return [{**o, "class_mean_source": "aux"} for o in outputs]


def _adaptive(inputs: AttackInputs, *, steps, lr, batch_size, whiten, patience, leak_fractions) -> list:
    return adaptive(inputs.x_leak, inputs.z_leak, inputs.z_target, x_pool=inputs.x_train,
                    z_pool=inputs.z_train, whiten=whiten, steps=steps, lr=lr, batch_size=batch_size, patience=patience,
                    leak_fractions=tuple(leak_fractions), seed=inputs.seed, map_models=inputs.map_models,
                    place=inputs.place)


def _adaptive_alpha(inputs: AttackInputs, *, steps, lr, batch_size, whiten, patience, shadow_steps) -> list:
    return adaptive_alpha(inputs.architecture, inputs.x_leak, inputs.z_leak, _stacked_targets(inputs, "adaptive_alpha"),
                          inputs.x_aux, alphas=inputs.alphas, y_leak=inputs.y_leak, y_aux=inputs.y_aux,
                          server_apply=inputs.server_apply, server_params=inputs.server_params,
                          labels_at_server=bool(inputs.labels_at_server), shadow_steps=min(shadow_steps, steps),
                          whiten=whiten,
                          steps=steps, lr=lr, batch_size=batch_size, patience=patience, seed=inputs.seed,
                          map_models=inputs.map_models, place=inputs.place)


register("decoder", _decoder, kind="reconstruction", needs=("pairs", "targets"),
         defaults={"steps": 1500, "lr": 2e-3, "batch_size": 64},
         stacked=True, description="black-box inversion: a decoder z -> x fitted on leaked (x, z) pairs (NoPeek's threat model)")
register("whitebox", _whitebox, kind="reconstruction", needs=("message_fn", "targets"),
         defaults={"steps": 1500, "lr": 0.05, "tv_weight": 0.0, "n_targets": 256}, whole_input=True,
         description="white-box inversion: inputs optimised so the sender's own function maps them to z (He et al. 2019)")
register("unsplit", _unsplit, kind="reconstruction", needs=("architecture", "targets"),
         defaults={"steps": 2000, "lr": 0.05, "tv_weight": 0.05, "n_targets": 256}, whole_input=True,
         description="UnSplit: inputs and a clone of the sender's architecture fitted together (Erdogan et al. 2022)")
register("probe", _probe, kind="attribute", needs=("pairs", "targets", "labels"), defaults={},
         description="linear and MLP probes reading the label from z, fitted on leaked pairs, beside chance")
register("label", _label, kind="label", needs=("gradients",), defaults={},
         description="norm and direction attacks reading binary labels from cut gradients (Li et al. 2022)")
register("sdar", _sdar, kind="reconstruction", needs=("targets", "aux", "server", "observed"),
         defaults={"steps": 2000, "batch_size": 32, "lr": 1e-3, "decoder_lr": 5e-4, "head_lr": 1e-3, "lambda1": 1.0,
                   "df_lr": 1e-4, "lambda2": 1e-5, "flip": "auto", "simulator": "architecture", "known_alpha": True},
         stacked=True, whole_input=True,
         description="SDAR (Zhu et al., NDSS 2025): a simulated client and a decoder, adversarially regularised, "
                     "from auxiliary data and the server's own model; U-shaped: also the labels")
register("fora", _fora, kind="reconstruction", needs=("targets", "aux", "observed"),
         defaults={"steps": 3000, "batch_size": 64, "lr": 1e-3, "decoder_lr": 1e-3, "critic_lr": 3e-4, "mmd_weight": 0.8,
                   "gp_weight": 1000.0},
         stacked=True, whole_input=True,
         description="FORA (Xu et al., CVPR 2024): a substitute client of the attacker's design fitted to the "
                     "messages' distribution (MK-MMD and a critic), inverted; needs no labels and no server model")
register("adaptive", _adaptive, kind="reconstruction", needs=("pairs", "targets"),
         defaults={"steps": 20000, "lr": 2e-3, "batch_size": 64, "whiten": "zca", "patience": 10,
                   "leak_fractions": (0.01, 0.05, 0.1, 0.25, 0.5)},
         stacked=True, uses=("pool", "labels"),
         description="the decoder trained to convergence on whitened messages, with its leak-fraction curve "
                     "(1-50%) where the training set's messages are given")
register("adaptive_alpha", _adaptive_alpha, kind="reconstruction", needs=("pairs", "targets", "architecture", "aux", "alphas"),
         defaults={"steps": 20000, "lr": 2e-3, "batch_size": 64, "whiten": "zca", "patience": 10, "shadow_steps": 2000},
         stacked=True, whole_input=True, uses=("server", "labels"),
         description="adaptive, knowing alpha: a shadow client of the architecture fitted to the leaked messages "
                     "under alpha * dCor (at most `steps` steps), its pairs for auxiliary inputs added to the decoder's")
