"""Named random-key streams: every random draw of nopeek comes from one of these.

A model seeded `seed` draws stream s at step t from `fold_in(fold_in(key(seed), s), t)`
(`step_key`); per-sample draws at evaluation fold in the sample's position instead of the
step. Each purpose has its own number, so two purposes never share draws, whatever the
seeds. The numbers of the first two are part of the results' reproducibility: results
written by earlier versions used 0 and 1 for them.

A model's initialisation does not use these streams: block k of replica r is initialised
from `fold_in(fold_in(key(seed), r), k)` (`nopeek.protocol.block_key`), as in every earlier
version. Its replica numbers overlap the stream numbers (replica 0's root is
TRAIN_NOISE's), so the training noise of step t < the number of blocks is drawn from the
key that initialised block t of replica 0. Changing either would change every result
written so far, so it is kept, and said here.
"""

from __future__ import annotations

import enum


class Stream(enum.IntEnum):
    """The random-key streams of a seed (see the module docstring)."""

    TRAIN_NOISE = 0  # message transforms during training (noise defence, Gaussian mechanism, bottleneck samples)
    TEST_NOISE = 1  # the same transforms at evaluation, one draw per held-out sample
    LABEL_DEFENCE = 2  # the label holder's perturbation of the gradients it returns (max-norm, Marvell)
    SERVER = 3  # a dishonest server's own draws (FSHA's gradient penalty), from the attacker's seed
    LABEL_DEFENCE_EVAL = 4  # the label defence applied batch by batch to held-out samples (label attacks)
    PARAMETER_NOISE = 5  # noise on a party's parameter gradients (DP-SGD)
    ATTACK = 6  # an attack's own draws (initialisation, shuffling), from the attacker's seed
    NULL = 7  # the permutations of a leakage reading's null (from seed 0: the same for every model)
    DEFENCE_PARAMETERS = 8  # the initialisation of parameters a defence owns (MID's bottleneck)


class NumpyStream(enum.IntEnum):
    """NumPy's draws on the host (sample picks, batch orders), `numpy_rng(seed, stream)`:
    `numpy.random.default_rng([seed, stream])`. A generator apart from JAX's keys, so these
    numbers never meet `Stream`'s; they are the numbers earlier versions used, so the same
    samples are drawn as before. (`attacks`, which never imports nopeek, names its own in
    each module: adaptive 1, 2; sdar 3; fora 4.)"""

    FSHA_PUBLIC = 1  # which training samples are the FSHA server's public data (from the client's seed)
    FSHA_PUBLIC_BATCHES = 2  # the order the FSHA server draws its public batches in (attacker's seed)
    SPLITGUARD = 5  # SplitGuard's fake batches and label flips
    DISHONEST_NETS = 12  # the dishonest server's networks' host-side draws
    HELDOUT_SPLIT = 22  # which held-out samples are an attacker's auxiliary data (attacker's seed)


def numpy_rng(seed: int, stream: NumpyStream):
    """`numpy.random.default_rng([seed, stream])`: the host-side draws of one purpose."""
    import numpy as np

    return np.random.default_rng([int(seed), int(stream)])


def seed_key(seed, stream: Stream):
    """`fold_in(key(seed), stream)`: the stream's key for a seed (seed may be traced)."""
    import jax

    return jax.random.fold_in(jax.random.key(seed), int(stream))


def step_key(seed, stream: Stream, step):
    """`fold_in(seed_key(seed, stream), step)`: the stream's key at one step (both may be traced)."""
    import jax

    return jax.random.fold_in(seed_key(seed, stream), step)
