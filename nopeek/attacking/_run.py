"""`nopeek attack`: run one registered attack against any message of a trained run folder.

The attacker's data (`AttackConfig`): a leaked share of the training set
(`leak_fraction` or `leak_count`), optionally only some classes (`aux_classes`, an
auxiliary set from another distribution), chosen by `attacker_indices` with the
attacker's seed; `nopeek sweep` uses the same function, so the same settings mean the
same samples. The targets: the held-out test set. The message: `--message party:tensor`
(default: the first message the data holder sends). The attack comes from the registry
(`attacks.ATTACKS`, `--list`), with its own defaults; a value given explicitly is always
obeyed. Writes `scores.json` (and `reconstructions.png` for reconstruction attacks,
`label_leakage.png` for the label attack) into `out`; `scores.json` says whether the
attacked model collapsed (`collapsed`, `collapse_reason`: the sweep's rule).
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np

import attacks
from nopeek import data as data_lib
from nopeek.attacking._config import AttackConfig, attacker_indices, heldout_split
from nopeek.attacking._inputs import architecture, check_finite, heldout_gradients, server_of
from nopeek.core import check_output_folder, check_writable, publish_folder, read_json, staging_folder, write_json
from nopeek.errors import ConfigError
from nopeek.plots import label_leakage_figure, reconstruction_grid
from nopeek.protocol import gradient_name
from nopeek.training import chance_accuracy, collapse_reason, load


def list_attacks() -> str:
    """A table of the registered attacks: name, kind, what each needs, its defaults."""
    width = max(10, *(len(n) for n in attacks.ATTACKS))
    lines = [f"{'attack':{width}s} {'kind':15s} {'needs':32s} defaults", "-" * 90]
    for name, s in attacks.ATTACKS.items():
        defaults = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}"
                             for k, v in s.defaults.items())
        lines.append(f"{name:{width}s} {s.kind:15s} {', '.join(sorted(s.needs)):32s} {defaults or '-'}")
        lines.append(f"{'':{width}s} {s.description}")
    return "\n".join(lines)


def _test_accuracy(run, run_dir: str, ds) -> float:
    """The model's test accuracy as its run measured it (metrics.json), else recomputed (without noise)."""
    try:
        value = read_json(os.path.join(run_dir, "metrics.json"))["test_accuracy"]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    loss = run.built.topology.losses[0]
    correct = 0
    for i in range(0, len(ds.x_test), 1024):
        values = run.values(ds.x_test[i : i + 1024], ds.y_test[i : i + 1024])
        correct += int(np.sum(np.argmax(np.asarray(values[loss.logits]), -1) == np.asarray(values[loss.labels])))
    return correct / len(ds.x_test)


def model_health(run, run_dir: str, message: str, ds) -> dict:
    """Whether the attacked model collapsed, by the sweep's rule (`collapse_reason`: accuracy
    at chance, or the message constant over the held-out set): the scores of an attack on a
    collapsed model say little about leakage."""
    accuracy, chance = _test_accuracy(run, run_dir, ds), chance_accuracy(ds.y_test)
    reason = collapse_reason(accuracy, chance, run.sent(message, ds.x_test))
    return {"test_accuracy": accuracy, "chance_accuracy": chance, "collapsed": bool(reason), "collapse_reason": reason}


def check_same_data(run_dir: str, ds) -> None:
    """Refuse data that differ from what the run was trained and measured on (its
    metrics.json's `data_digest`; runs written before it was recorded are not checked): a
    data file replaced or another --data-dir since would give scores of other samples.

    Raises:
      ConfigError: naming the data set and both digests."""
    try:
        recorded = read_json(os.path.join(run_dir, "metrics.json")).get("data_digest")
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(recorded, str):
        return
    now = data_lib.data_digest(ds)
    if recorded != now:
        raise ConfigError(f"{ds.name}: not the data {run_dir} was trained on (digest {now}, the run's {recorded}): "
                          "the file or folder changed since; restore it, or train again on it")


def run_attack(run_dir: str, config: AttackConfig, out: str, *, force: bool = False) -> dict:
    """Run `config.attack` against one message of the model in `run_dir`; write and return the
    scores. `out` is written whole at the end (its figures and scores.json staged beside it and
    renamed into place) and replaces an attack's scores already there only with `force`
    (`check_writable`: never another command's folder)."""
    config.validate()
    check_output_folder(out)
    check_writable(out, ("attack",), force=force)
    spec = attacks.ATTACKS[config.attack]
    run = load(run_dir)
    tc = run.config
    entry = run.entry(config.message)
    message = f"{entry.party}:{entry.label}"
    ds = data_lib.load_config(tc)
    check_same_data(run_dir, ds)
    leak = attacker_indices(ds.y_train, leak_fraction=config.leak_fraction, leak_count=config.leak_count,
                            aux_classes=config.aux_classes, seed=config.attack_seed)
    settings = config.settings()
    if "steps" in settings and settings["steps"] < 1:
        raise ConfigError(f"--attack-steps must be >= 1 for the {config.attack} attack, got {settings['steps']}")
    if spec.whole_input and (entry.replica is not None or entry.merged or entry.source != "x"):
        raise ConfigError(f"--attack {config.attack} inverts a message computed from the whole input; "
                          f"{message} is computed from a slice (use --attack decoder)")
    if spec.kind == "label" and ds.num_classes != 2:
        raise ConfigError(f"the label attack needs a binary task (e.g. breast_cancer); {tc.dataset} has {ds.num_classes} classes")
    t0 = time.perf_counter()
    scores: dict = {**config.to_dict(), "attack": config.attack, "run": run_dir, "message": message,
                    "n_attacker": int(len(leak)), **{f"attack_{k}" if k in ("steps", "lr") else k: v
                                                     for k, v in settings.items()}}
    scores.update(model_health(run, run_dir, message, ds))
    figures = []  # (file name, draw(path)): drawn into the staged folder at the end
    x_leak, y_leak = ds.x_train[leak], ds.y_train[leak]
    inputs = attacks.AttackInputs(seed=config.attack_seed)
    if spec.kind in ("reconstruction", "attribute"):
        z_leak = run.sent(message, x_leak)  # what crossed: noise defence included, as the sweep attacks it
        check_finite(z_leak, message)
        aux, targets = heldout_split(len(ds.x_test), config, [config.attack])
        n = len(targets) if "n_targets" not in settings else min(settings["n_targets"], len(targets))
        x_t, y_t = ds.x_test[targets[:n]], ds.y_test[targets[:n]]
        inputs.x_leak, inputs.z_leak, inputs.y_leak = run.source(message, x_leak), z_leak[None], y_leak
        inputs.x_target, inputs.z_target, inputs.y_target = run.source(message, x_t), run.sent(message, x_t)[None], y_t
        inputs.message_apply, state = run.message_apply(message)  # the sender's function, before any noise
        inputs.message_states = [state]
        inputs.architecture = architecture(run, entry, ds.input_shape)
        inputs.alphas = np.asarray([tc.alpha], np.float32)
        if aux is not None:
            inputs.x_aux, inputs.y_aux = run.source(message, ds.x_test[aux]), ds.y_test[aux]
            scores["n_aux"] = int(len(aux))
        if spec.reads("observed") or spec.reads("pool"):  # what the server received in training
            inputs.x_train, inputs.y_train = run.source(message, ds.x_train), ds.y_train
            inputs.z_train = run.sent(message, ds.x_train)[None]
        for field, value in (server_of(run.built, [run.params], entry) or {}).items():
            setattr(inputs, field, value)
        lacking = attacks.missing(config.attack, inputs)
        if lacking:
            raise ConfigError(f"--attack {config.attack} needs {', '.join(lacking)}, which an attacker of {message} "
                              f"in this {tc.topology} run does not hold")
    if spec.kind == "reconstruction":
        inputs.classifier = attacks.ReferenceClassifier(run.source(message, ds.x_train), ds.y_train)
        output = attacks.run(config.attack, inputs, **settings)[0]
        scores["classifier_clean_accuracy"] = inputs.classifier.accuracy(inputs.x_target, y_t)
        scores.update(attacks.score(config.attack, inputs, output))
        scores["n_targets"] = int(len(output["x_hat"]))
        x_src = inputs.x_target
        title = (f"{config.attack} attack on {tc.topology} {tc.model} {message} (alpha {tc.alpha:g}): "
                 + (f"SSIM {scores['ssim']:.3f}" if np.isfinite(scores["ssim"]) else f"MSE {scores['mse']:.4f}"))
        figures.append(("reconstructions.png", lambda path: reconstruction_grid(
            [x_src[:16], output["x_hat"][:16]], ["original", "reconstructed"], path, title=title)))
    elif spec.kind == "attribute":
        try:
            scores.update(attacks.score(config.attack, inputs, attacks.run(config.attack, inputs, **settings)[0]))
        except ValueError as err:
            raise ConfigError(f"--leak-fraction/--leak-count: {err}") from None
    else:  # label: the gradients the party without the labels receives
        grads, tensor, defences = heldout_gradients(run, ds.x_test, ds.y_test)
        check_finite(grads, gradient_name(tensor))
        if defences:
            scores["gradient_defences"] = defences
        inputs.gradients, inputs.y_target = grads[None], ds.y_test
        result = attacks.score(config.attack, inputs, attacks.run(config.attack, inputs, **settings)[0])
        scores.update(result, gradient=gradient_name(tensor))
        figures.append(("label_leakage.png", lambda path: label_leakage_figure(
            attacks.norm_scores(grads), attacks.direction_scores(grads, result["reference_index"]),
            ds.y_test, result, path)))
    scores["seconds"] = time.perf_counter() - t0
    tmp = staging_folder(out)
    try:
        for name, draw in figures:
            draw(os.path.join(tmp, name))
        write_json(os.path.join(tmp, "scores.json"), scores)
        publish_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return scores
