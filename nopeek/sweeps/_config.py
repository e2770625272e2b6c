"""A sweep's config: the grid (topologies x cut lists x defences x seeds, and the attacks run
on every cell) and how each cell is trained and attacked; its cells.

A cell is one trained model: a defence of one topology at one cut list, at one strength,
with one seed. The defences of the grid: none; NoPeek at each alpha > 0 (`alphas`); the
noise at each scale (`noise_scales`); and any other registered defence at each strength
given (`defenses`, NAME=STRENGTH entries, one cell each).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import field

import attacks
from nopeek.attacking import AttackConfig
from nopeek.core import Composed, Section, finite, raise_first_failure
from nopeek.data import DataConfig, sample_shape
from nopeek.defences import DEFENCES, NONE, check_defence, defence_settings, parse_defences
from nopeek.dishonest import FSHAConfig
from nopeek.errors import ConfigError, TopologyError
from nopeek.protocol import DEFAULT_TOPOLOGY, TOPOLOGIES, ModelConfig, model_blocks
from nopeek.sweeps._results import fmt_number
from nopeek.training import TrainConfig, TrainingConfig, build_topology


DISHONEST = ("fsha",)  # the `servers` a sweep can run against its cells (their columns: nopeek.sweeps._columns)


def parse_cut_spec(spec: str) -> tuple[int, ...]:
    """"4" -> (4,); "2-5" -> (2, 5): the cut list of one cell."""
    try:
        cuts = tuple(int(p) for p in str(spec).split("-"))
    except ValueError:
        raise ConfigError(f"--cuts: {spec!r} is not a cut (an int, or ints joined by '-' like 2-5)") from None
    return cuts


def cut_spec(cuts) -> str:
    return "-".join(str(int(c)) for c in cuts)


@dataclasses.dataclass(frozen=True)
class GridConfig(Section):
    """The grid: its lists replace the per-cell fields topology, cuts, alpha, noise_scale,
    defenses and seed; `attacks` are run against every cell."""

    topologies: tuple[str, ...] = field(default=(DEFAULT_TOPOLOGY,), metadata={"help": "configurations (see `nopeek train --topology`)"})
    cuts: tuple[str, ...] = field(default=("1",), metadata={"help": "cut lists, one per cell: 4 or 2-5 (two cuts); each goes to the topologies it fits"})
    alphas: tuple[float, ...] = field(default=(0.0, 1.0), metadata={"help": "NoPeek weights (0 = no defence)"})
    noise_scales: tuple[float, ...] = field(default=(), metadata={"help": "noise-defence scales (empty: none)"})
    defenses: tuple[str, ...] = field(default=(), metadata={"help": "other defences, NAME=STRENGTH each, one cell each (e.g. maxnorm=1,maxnorm=4)"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "model seeds (initialisation, data order, noise)"})
    attacks: tuple[str, ...] = field(default=("decoder", "label"), metadata={"help": "attacks run on every cell where they apply (`nopeek attack --list`); empty: none"})
    max_stack: int = field(default=0, metadata={"help": "train a group's cells in stacks of at most N models (0: one stack per group); bounds a large grid's compile time and memory"})
    servers: tuple[str, ...] = field(default=(), metadata={"help": f"dishonest-server protocols run against every cell where they apply ({', '.join(DISHONEST)}: its fsha_* columns, --fsha-steps iterations); empty: none"})

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if "cuts" in d and isinstance(d["cuts"], (list, tuple)):
            cuts = d["cuts"]
            for c in cuts:
                if isinstance(c, bool) or not isinstance(c, (int, str)):
                    raise ConfigError(f"cuts: expected a list of cut lists (ints like 4 or strings like \"2-5\"), "
                                      f"got {type(c).__name__} {c!r} in the list")
            d["cuts"] = [str(c) for c in cuts]
        return super().from_dict(d)

    def validate(self) -> "GridConfig":
        checks = [
            (len(self.topologies) > 0, "--topologies must name at least one topology"),
            (all(t in TOPOLOGIES for t in self.topologies), f"--topologies must be among {', '.join(TOPOLOGIES)}, got {','.join(self.topologies)}"),
            (len(self.cuts) > 0, "--cuts must name at least one cut"),
            (len(self.alphas) > 0 or len(self.noise_scales) > 0 or len(self.defenses) > 0, "give at least one alpha, noise scale or defence"),
            (all(finite(a) and a >= 0 for a in self.alphas), f"--alphas must be finite and >= 0, got {self.alphas}"),
            (all(finite(s) and s > 0 for s in self.noise_scales), f"--noise-scales must be finite and > 0, got {self.noise_scales}"),
            (len(self.seeds) > 0, "--seeds must name at least one seed"),
            (len(set(self.seeds)) == len(self.seeds), f"--seeds must be distinct, got {self.seeds}"),
            (all(s >= 0 for s in self.seeds), f"--seeds must be >= 0, got {self.seeds}"),
            (all(a in attacks.ATTACKS for a in self.attacks), f"--attacks must be among {', '.join(attacks.ATTACKS)}, got {','.join(self.attacks)}"),
            (len(set(self.attacks)) == len(self.attacks), f"--attacks must be distinct, got {','.join(self.attacks)}"),
            (self.max_stack >= 0, f"--max-stack must be >= 0, got {self.max_stack}"),
            (all(s in DISHONEST for s in self.servers), f"--servers must be among {', '.join(DISHONEST)}, got {','.join(self.servers)}"),
            (len(set(self.servers)) == len(self.servers), f"--servers must be distinct, got {','.join(self.servers)}"),
        ]
        raise_first_failure(checks)
        for spec in self.cuts:
            cuts = parse_cut_spec(spec)
            if any(b <= a for a, b in zip(cuts, cuts[1:])):
                raise ConfigError(f"--cuts: {spec} must be increasing")
        for entry in self.defenses:
            strength = parse_defences([entry])
            if not all(v > 0 for v in strength.values()):
                raise ConfigError(f"--defenses: {entry}: a defence cell needs a strength > 0 (the undefended cell is always run)")
        return self


class SweepConfig(Composed):
    """The grid (topologies x cuts x defences x seeds) and how each cell is trained (data,
    model, training sections) and attacked (attack section, a dishonest server's columns)."""

    SECTIONS = (("data_config", DataConfig), ("model_config", ModelConfig), ("training_config", TrainingConfig),
                ("grid_config", GridConfig), ("attack_config", AttackConfig), ("fsha_config", FSHAConfig))
    EXCLUDED = frozenset({
        ("model_config", "topology"), ("model_config", "cuts"),
        ("training_config", "alpha"), ("training_config", "noise_scale"), ("training_config", "seed"),
        ("training_config", "defenses"), ("training_config", "epoch_readings"), ("fsha_config", "checkpoint_every"),
        ("attack_config", "attack"), ("attack_config", "message"), ("attack_config", "n_targets"),
        ("attack_config", "tv_weight"),
    })

    @classmethod
    def extra_sections(cls) -> tuple:
        return defence_settings()

    @classmethod
    def from_dict(cls, d: dict):
        return super().from_dict(cls.upgrade(d))

    @staticmethod
    def upgrade(d: dict) -> dict:
        """A (possibly partial) dict of fields as an older nopeek wrote it, in today's
        fields: applied by `from_dict`, and to a `--config` file before the command line's
        fields are merged in. A `fsha_steps` without `servers` (written before `servers`)
        means an FSHA column where it is > 0."""
        d = dict(d)
        if "fsha_steps" in d and "servers" not in d:  # sweeps written before `servers`: N > 0 steps meant an FSHA column
            d["servers"] = ["fsha"] if d["fsha_steps"] else []
        if "data_seed" in d and "split_seed" not in d:  # sweeps written before the engine
            d["split_seed"] = d.pop("data_seed")
        # Sweeps written before the attack and defence registries: attack_steps 0 meant no
        # attack; label defences were a list of names and one of strengths.
        if d.get("attack_steps") == 0:
            d["attack_steps"] = None
            d["attacks"] = ["label"]
        if "label_defenses" in d or "label_strengths" in d:
            names, strengths = d.pop("label_defenses", []) or [], d.pop("label_strengths", []) or []
            d.setdefault("defenses", [f"{n}={fmt_number(s)}" for n in names for s in strengths])
        return d

    def digest(self) -> str:
        """A short hash of the whole config (`to_dict`), written into every row of its
        results as `config_hash`, so a row of another config (a shard file copied or left in
        another sweep's folder) is told apart from this config's."""
        return dict_digest(self.to_dict())

    def groups(self) -> list[tuple[str, str]]:
        """(topology, cut spec) pairs, each trained as one stack: every cut list goes to every
        topology that takes that many cuts."""
        return [(t, spec) for t in self.topologies for spec in self.cuts if TOPOLOGIES[t].takes(parse_cut_spec(spec))]

    def validate(self) -> "SweepConfig":
        """Every section's values and how they fit together: the attack options given are
        taken by a chosen attack, the FSHA options by `servers`, each cut list fits some
        topology. What needs the data or the models is `check_sweep`'s."""
        super().validate()
        self.attack_config.check_taken(self.attacks)
        if "fsha" not in self.servers:
            unused = [f.name for f in dataclasses.fields(FSHAConfig) if ("fsha_config", f.name) not in self.EXCLUDED
                      and getattr(self.fsha_config, f.name) != f.default]
            if unused:
                raise ConfigError(f"--{unused[0].replace('_', '-')}: an FSHA option; it applies with --servers fsha")
        elif self.alpha_warmup > 0:
            raise ConfigError("--servers fsha: the FSHA client does not ramp alpha; drop --alpha-warmup or the FSHA column")
        for spec in self.cuts:
            if not any(TOPOLOGIES[t].takes(parse_cut_spec(spec)) for t in self.topologies):
                raise ConfigError(f"--cuts {spec}: no topology of {','.join(self.topologies)} takes "
                                  f"{len(parse_cut_spec(spec))} cut(s)")
        for t in self.topologies:
            if not any(TOPOLOGIES[t].takes(parse_cut_spec(s)) for s in self.cuts):
                raise ConfigError(f"--topologies {t}: takes {TOPOLOGIES[t].cuts_text}; none of --cuts "
                                  f"{','.join(self.cuts)} fits (e.g. 2-4 for two cuts)")
        for topology, spec in self.groups():
            self.train_config(topology, spec).validate()
        return self

    def train_config(self, topology: str, spec: str) -> TrainConfig:
        """The TrainConfig of one group's cells (the defence and seed come per cell)."""
        return TrainConfig(
            data_config=self.data_config,
            model_config=dataclasses.replace(self.model_config, topology=topology, cuts=parse_cut_spec(spec)),
            training_config=self.training_config,
            **{name: self.section(name) for name, _ in defence_settings()},
        )


def check_sweep(config: SweepConfig) -> SweepConfig:
    """`config.validate()`, then the grid against the data set's shapes and the models (what
    a config's values alone cannot tell): each defence applies to the data and every
    configuration, the FSHA public classes exist, each cut is inside the model, every group
    builds. Raises ConfigError before any training; returns `config`."""
    config.validate()
    shape, classes = sample_shape(config.dataset, config.data_dir)
    for t in config.topologies:
        for defense, strength in cell_defences(config):
            if defense != NONE:
                check_defence(defense, strength, classes, TOPOLOGIES[t])
    if "fsha" in config.servers:
        if not any(TOPOLOGIES[t].malicious_server for t in config.topologies):
            takes = ", ".join(n for n, s in TOPOLOGIES.items() if s.malicious_server)
            raise ConfigError(f"--servers fsha: none of --topologies {','.join(config.topologies)} has a server FSHA "
                              f"applies to (those that do: {takes})")
        bad = [c for c in config.public_classes if c >= classes]
        if bad:
            raise ConfigError(f"--public-classes {','.join(map(str, config.public_classes))}: the data has "
                              f"{classes} classes (0-{classes - 1})")
    n_blocks = len(model_blocks(config.model, classes, config.widths))
    for topology, spec in config.groups():
        try:
            if not all(1 <= c < n_blocks for c in parse_cut_spec(spec)):
                raise ConfigError(f"--cuts {spec} out of range: {config.model} has cuts 1..{n_blocks - 1}")
            build_topology(config.train_config(topology, spec), shape, classes)
        except TopologyError as err:
            raise ConfigError(f"{topology} at cuts {spec}: {err}") from err
    return config


def dict_digest(d: dict) -> str:
    """The short hash `SweepConfig.digest` takes of a config's dict (as `to_dict` gives it, or
    as a config.json holds it)."""
    text = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the grid: a defence at one strength, of one topology at one cut
    list, one seed."""

    topology: str
    cut: str  # cut spec, "4" or "2-5"
    defense: str  # "none" or a registered defence
    strength: float
    seed: int

    @property
    def alpha(self) -> float:
        """NoPeek's weight: the strength of a NoPeek cell, else 0 (the `alpha` column)."""
        return self.strength if self.defense == "nopeek" else 0.0

    @property
    def noise_scale(self) -> float:
        """The noise's scale: the strength of a noise cell, else 0 (the `noise_scale` column)."""
        return self.strength if self.defense == "noise" else 0.0

    @property
    def strengths(self) -> dict[str, float]:
        """{defence: strength} of this cell, for `train_stack` ({} for the undefended cell)."""
        return {} if self.defense == NONE else {self.defense: self.strength}

    def key(self, config: SweepConfig) -> tuple:
        return (config.dataset, config.model, self.topology, self.cut, self.defense, fmt_number(self.strength),
                fmt_number(self.alpha), fmt_number(self.noise_scale), str(self.seed))

    @property
    def name(self) -> str:
        """The cell's file-name stem (its history, its samples)."""
        if self.defense == NONE or DEFENCES[self.defense].config_field is not None:  # the names sweeps always had
            return (f"{self.topology}-cut{self.cut}-{self.defense}-a{fmt_number(self.alpha)}"
                    f"-n{fmt_number(self.noise_scale)}-s{self.seed}")
        return f"{self.topology}-cut{self.cut}-{self.defense}{fmt_number(self.strength)}-s{self.seed}"


def cell_defences(config: SweepConfig) -> list[tuple[str, float]]:
    """(defense, strength) of each cell of one seed and group: none, NoPeek at each alpha > 0,
    the noise at each scale, then each `defenses` entry."""
    out = [(NONE, 0.0)]
    out += [("nopeek", float(a)) for a in config.alphas if a > 0]
    out += [("noise", float(s)) for s in config.noise_scales]
    for entry in config.defenses:
        out += list(parse_defences([entry]).items())
    return out


def cells(config: SweepConfig) -> list[Cell]:
    """Every cell of the grid, grouped by (topology, cut list): the unit trained as one stack."""
    out = []
    for topology, spec in config.groups():
        for seed in config.seeds:
            out += [Cell(topology, spec, d, s, seed) for d, s in cell_defences(config)]
    return out


def load_config_file(path: str) -> dict:
    """A partial SweepConfig from a TOML or JSON file (keys = SweepConfig fields)."""
    if not path.lower().endswith((".toml", ".json")):
        raise ConfigError(f"{path}: a sweep config is a .toml or .json file (keys: SweepConfig's fields, as "
                          "config.json of a sweep folder holds them)")
    try:
        if path.lower().endswith(".toml"):
            import tomllib

            with open(path, "rb") as fh:
                loaded = tomllib.load(fh)
        else:
            with open(path, encoding="utf-8") as fh:
                loaded = json.load(fh)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the sweep config ({err})") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a table of SweepConfig fields, got {type(loaded).__name__}")
    return loaded
