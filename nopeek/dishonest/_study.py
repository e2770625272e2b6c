"""Does NoPeek stop a hijacking server? FSHA against a client whose defence acts.

Against FSHA, a NoPeek client that adds its penalty's gradient to the one it receives (the
honest client's code, `client_nopeek_step="joint"`) either does not move its messages
(the attacker's scaled gradient dominates) or stops learning anything (its own term
dominates and the messages collapse). The FSHA authors' dCor client instead takes the
NoPeek step on its own (`"separate"`: its one Adam optimiser steps on alpha * dCor(x, z),
then on what the server sent, both gradients taken at the same parameters; the steps share
Adam's moments, so alpha weighs the penalty against the server's gradient). `fsha_nopeek_study` runs that client against FSHA over a grid of the
client's alpha and the attacker's gradient weight, several seeds each, and records per
run: the server's reconstruction scores (MSE, SSIM, and the clean classifier on them,
beside the mean image and the class-mean image), the client's held-out dCor(x, z) with
its permutation null, and whether the messages still carry the task: the accuracy of a
linear probe z -> label fitted on the public set's messages and scored on held-out ones,
beside chance. A setting where the client's dCor falls while the probe still reads the
label and FSHA's error stays at its baseline's would be one where NoPeek stops FSHA.

References: Pasquini, Ateniese, Bernaschi, "Unleashing the tiger: inference attacks on
split learning", CCS 2021 (the authors' notebooks: the dCor client's separate step).
"""

from __future__ import annotations

import dataclasses
import itertools
import time

from nopeek.dishonest._config import FSHAConfig
from nopeek.dishonest._fsha import client_readings, fsha_attack
from nopeek.training import TrainConfig

STUDY_COLUMNS = ["alpha", "fsha_weight", "seed", "steps", "client_nopeek_step", "mse", "baseline_mse", "class_mean_mse",
                 "ssim", "baseline_ssim", "class_mean_ssim", "classifier_accuracy", "baseline_classifier_accuracy",
                 "client_dcor", "client_dcor_null95", "client_pdcor_label", "task_probe_accuracy", "task_probe_chance",
                 "seconds"]


def fsha_nopeek_study(config: TrainConfig, fsha: FSHAConfig, dataset, *, alphas, weights, seeds, steps: int,
                      attack_seed: int = 0, client_nopeek_step: str = "separate", log=None) -> list[dict]:
    """One row per (alpha, attacker weight, seed): FSHA for `steps` iterations against the
    client of `config` at that alpha (see the module docstring for the columns)."""
    rows = []
    for alpha, weight, seed in itertools.product(alphas, weights, seeds):
        t0 = time.perf_counter()
        client = config.replace(alpha=float(alpha), seed=int(seed))
        server = dataclasses.replace(fsha, fsha_weight=float(weight), client_nopeek_step=client_nopeek_step)
        result = fsha_attack(client, server, dataset, attack_seed=attack_seed, steps=steps, checkpoint_every=steps)
        final = result["final"]
        row = {"alpha": float(alpha), "fsha_weight": float(weight), "seed": int(seed), "steps": result["iterations"],
               "client_nopeek_step": client_nopeek_step, **{k: final[k] for k in (
                   "mse", "baseline_mse", "ssim", "baseline_ssim", "classifier_accuracy", "baseline_classifier_accuracy",
                   "client_dcor")}}
        row.update(client_readings(client, server, dataset, result, attack_seed))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        if log:
            log(row)
    return rows
