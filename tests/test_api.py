"""The public API and the registries: what `nopeek` exports, the presets' records, and one's
own attack and defence registered from Python and used by training, sweeps and the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attacks
import nopeek
from nopeek import data
from nopeek.cli import build_parser, main
from nopeek.core import Section
from nopeek.defences import DEFENCES, Context, build_defence, register
from nopeek.errors import ConfigError
from nopeek.protocol import Defence
from nopeek.training import TrainConfig, train_stack

PACKAGES = ["nopeek.core", "nopeek.data", "nopeek.protocol", "nopeek.defences", "nopeek.training", "nopeek.attacking",
            "nopeek.dishonest", "nopeek.audit", "nopeek.cost", "nopeek.sweeps", "nopeek.plots", "nopeek.report", "nopeek.cli"]


def test_the_top_level_api_resolves_and_stays_cheap_to_import():
    for name in nopeek.__all__:
        assert getattr(nopeek, name) is not None, name
    assert nopeek.train is nopeek.training.run_train and nopeek.register_attack is attacks.register
    probe = subprocess.run([sys.executable, "-c", "import sys, nopeek; print('jax' in sys.modules)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False"  # the names load when first used


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_exports_public_names_only(package):
    module = importlib.import_module(package)
    assert module.__doc__ and module.__doc__.strip()
    for name in module.__all__:
        assert not name.startswith("_"), name
        assert hasattr(module, name), f"{package}.{name}"


def test_presets_are_records_with_command_time_and_result():
    from nopeek.sweeps import PRESET_INFO, check_sweep

    parser = build_parser()
    for name, preset in PRESET_INFO.items():
        args = parser.parse_args(preset.command.split()[1:])
        assert args.command == "sweep" and args.preset == name, preset.command
        assert preset.result.strip() and preset.description.strip(), name
        assert preset.seconds is None or preset.seconds > 0, name
        if preset.seconds is None:
            assert "not run" in preset.result, name  # the reason it has no measured time
        preset.config.validate()
        check_sweep(preset.small)
        assert preset.small.dataset == "digits" or preset.small.dataset == "breast_cancer", name


def test_help_states_each_default_once_and_the_sweeps_are_the_presets():
    """No option's help says "default" twice; `nopeek sweep --help` shows the default preset's
    values (what a sweep without options runs), not the config class's own defaults."""
    from nopeek.sweeps import PRESETS

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        for action in sub._actions:
            assert (action.help or "").count("(default") <= 1, (name, action.option_strings, action.help)
    sweep = {a.dest: a.help for a in subs.choices["sweep"]._actions}
    default = PRESETS["default"]
    assert f"(default: {default.dataset} in --preset default)" in sweep["dataset"]
    assert f"(default: {default.epochs} in --preset default)" in sweep["epochs"]
    assert f"(default: {','.join(default.cuts)} in --preset default)" in sweep["cuts"]


def test_list_commands_read_the_registries(capsys):
    assert main(["attack", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in attacks.ATTACKS)
    assert main(["train", "--list-defenses"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in DEFENCES)


class Scale(Defence):
    """A toy defence: the data holder multiplies what it sends by (1 + gain * strength)."""

    transforms_messages = True

    def __init__(self, strength, gain=1.0):
        self.strength, self.gain = strength, gain

    def send(self, message, index, z, replicas):
        return z * (1.0 + self.gain * self.strength)

    def send_eval(self, message, index, z, sample_index, replicas):
        return z * (1.0 + self.gain * self.strength)


@dataclasses.dataclass(frozen=True)
class ScaleSettings(Section):
    """The toy defence's setting besides its strength."""

    scale_gain: float = dataclasses.field(default=1.0, metadata={"help": "scale: the gain on its strength"})

    def validate(self):
        if not self.scale_gain > 0:
            raise ConfigError(f"--scale-gain must be > 0, got {self.scale_gain}")
        return self


@pytest.fixture
def own_registrations():
    register("scale", lambda s, ctx: Scale(s, ctx.setting("scale_gain", 1.0)), acts_on="message",
             strength="factor - 1", description="multiplies the message", settings=ScaleSettings)

    def mean_attack(inputs, *, steps):
        x = np.asarray(inputs.x_leak).mean(axis=0)
        return [{"x_hat": np.broadcast_to(x, np.shape(inputs.targets(k)[0])).copy()} for k in range(inputs.models)]

    attacks.register("meanguess", mean_attack, kind="reconstruction", needs=("pairs", "targets"),
                     defaults={"steps": 1}, description="the attacker's mean input, for every target")
    yield
    DEFENCES.pop("scale")
    attacks.ATTACKS.pop("meanguess")


def test_own_defence_at_strength_zero_is_no_defence_bit_for_bit(own_registrations):
    """Unrolled stacks (`map`): a vmapped stack of 2 batches its matmuls, which a stack of 1
    need not sum in the same order on every host (tests/test_defences_dp.py)."""
    ds = data.load("digits", limit=300)
    config = TrainConfig(dataset="digits", epochs=2, limit=300)
    plain = train_stack(config, ds, progress=False, stack_mode="map")
    zero = train_stack(config, ds, strengths=[{"scale": 0.0}, {"scale": 0.5}], seeds=[0, 0], progress=False,
                       stack_mode="map")
    for a, b in zip(jax.tree.leaves(plain.model_params(0)), jax.tree.leaves(zero.model_params(0))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert zero.strengths == [{}, {"scale": 0.5}]
    assert not np.allclose(zero.messages_test["z"][0], zero.messages_test["z"][1])


def test_own_attack_and_defence_in_a_sweep_and_the_cli(own_registrations, tmp_path, capsys):
    from nopeek.sweeps import PRESETS, run_sweep

    config = PRESETS["quick"].replace(cuts=("1",), alphas=(0.0,), noise_scales=(), defenses=("scale=1.0",), epochs=1,
                                      attack_steps=5, limit=300, attacks=("decoder", "meanguess"))
    rows = run_sweep(config, str(tmp_path / "sweep"), progress=False)
    assert [r["defense"] for r in rows] == ["none", "scale"] and rows[1]["strength"] == "1.0"
    for r in rows:  # the mean-image guess scores exactly its own baseline
        assert float(r["meanguess_mse"]) == pytest.approx(float(r["meanguess_baseline_mse"]))
        assert np.isfinite(float(r["attack_mse"]))
    run = str(tmp_path / "run")
    assert main(["train", "--dataset", "digits", "--limit", "300", "--epochs", "1", "--defenses", "scale=0.5",
                 "--scale-gain", "3", "--out", run, "--quiet"]) == 0
    with open(os.path.join(run, "config.json"), encoding="utf-8") as fh:
        assert json.load(fh)["scale_gain"] == 3.0
    assert main(["attack", "--run", run, "--attack", "meanguess"]) == 0
    assert "mse" in capsys.readouterr().out


def test_own_defence_settings_are_config_fields_from_the_registry(own_registrations):
    """A defence's own settings section joins TrainConfig and SweepConfig when it registers
    (fields, flat dicts, checks) and reaches its hooks through the context; a setting name
    another defence already owns is refused."""
    from nopeek.sweeps import PRESETS

    config = TrainConfig(dataset="digits", scale_gain=2.0)
    assert TrainConfig.from_dict(config.to_dict()) == config and config.to_dict()["scale_gain"] == 2.0
    assert PRESETS["quick"].replace(scale_gain=2.0).train_config("vanilla", "1").scale_gain == 2.0
    with pytest.raises(ConfigError, match="--scale-gain must be > 0"):
        config.replace(scale_gain=0.0).validate()
    made = build_defence({"scale": 0.5}, Context(0, settings=config))
    z = jnp.ones((2, 3))
    np.testing.assert_allclose(np.asarray(made.send("z", 0, z, 1)), 2.0)  # 1 + 2 * 0.5
    with pytest.raises(ConfigError, match="dp_clip are already dp_message_settings's"):
        register("clash", lambda s, ctx: Scale(s), acts_on="message", strength="-",
                 settings=dataclasses.make_dataclass("Clash", [("dp_clip", float, 1.0)], bases=(Section,), frozen=True))
    assert "clash" not in DEFENCES


def test_defence_settings_registered_late_or_clashing(own_registrations):
    """A config made before a defence registers reads its settings at their defaults and
    equals one made after; two settings classes of one class name both count; a setting
    named like a field of the training config is refused when the config is used, naming
    the class (else it would shadow that field, or break every command's options)."""
    import nopeek.defences._registry as registry

    def settings_class(name, field):
        return dataclasses.make_dataclass(name, [(field, float, 1.0)], bases=(Section,), frozen=True)

    before = TrainConfig(dataset="digits")
    register("late", lambda s, ctx: Scale(s), acts_on="message", strength="-", settings=settings_class("Settings", "late_a"))
    register("later", lambda s, ctx: Scale(s), acts_on="message", strength="-", settings=settings_class("Settings", "late_b"))
    try:
        assert before.late_a == 1.0 and before == TrainConfig(dataset="digits")
        both = TrainConfig(late_a=2.0, late_b=3.0)
        assert (both.late_a, both.late_b) == (2.0, 3.0) and TrainConfig.from_dict(both.to_dict()) == both
        register("shadow", lambda s, ctx: Scale(s), acts_on="message", strength="-", settings=settings_class("S", "epochs"))
        with pytest.raises(ConfigError, match="S \\(shadow_settings\\): its field 'epochs' is already training_config's"):
            TrainConfig()
        registry.DEFENCES.pop("shadow")
        register("hidden", lambda s, ctx: Scale(s), acts_on="message", strength="-", settings=settings_class("H", "replace"))
        with pytest.raises(ConfigError, match="its field 'replace' is already a name of TrainConfig"):
            TrainConfig()
    finally:
        for name in ("late", "later", "shadow", "hidden"):
            registry.DEFENCES.pop(name, None)
    assert TrainConfig().epochs == 30


def test_own_attacks_run_in_the_audit(own_registrations, tmp_path):
    """The audit runs every registered attack its arrays can feed, by kind: a reconstruction
    attack gets its table columns, an attribute attack its probes (named "NAME:probe")."""
    from nopeek.audit import AuditConfig, run_audit

    def majority(inputs):
        y = np.asarray(inputs.y_leak)
        guess = np.bincount(y).argmax()
        chance = float(np.mean(np.asarray(inputs.y_target) == guess))
        return [{"probes": [{"probe": "majority", "accuracy": chance, "chance": chance}]}]

    attacks.register("guess", majority, kind="attribute", needs=("pairs", "targets", "labels"), defaults={})
    try:
        rng = np.random.default_rng(0)
        x = rng.random((120, 4, 4, 1)).astype(np.float32)
        z = x.reshape(120, -1) @ rng.normal(size=(16, 6)).astype(np.float32)
        y = (x.reshape(120, -1).mean(axis=1) > 0.5).astype(np.int64)
        result = run_audit({"x": x[:80], "z": z[:80], "y": y[:80]}, [{"x": x[80:], "z": z[80:], "y": y[80:]}],
                           str(tmp_path / "audit"), AuditConfig(attack_steps=5), progress=False)
    finally:
        attacks.ATTACKS.pop("guess")
    target = next(iter(result["targets"].values()))
    assert target["meanguess"]["mse"] == pytest.approx(target["meanguess"]["baseline_mse"])
    assert "meanguess SSIM (mean input)" in result["table"]
    assert target["probes"]["y"]["guess:majority"]["accuracy"] == target["probes"]["y"]["guess:majority"]["chance"]
    assert {"linear", "mlp"} <= set(target["probes"]["y"])
