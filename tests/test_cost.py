"""Cost accounting: FLOPs from compiled programs equal the closed forms, bytes equal the
transcript and the parameter counts, the seed table's shape, and one-line errors."""

import csv
import dataclasses
import math
import os
import re

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from nopeek import protocol as T
from nopeek.cli import main
from nopeek.core import list_in_manifest
from nopeek.cost import COST_PRESETS, CostConfig, crossover, method_costs, profiles, run_cost
from nopeek.cost import compiled_flops
from nopeek.cost import CSV_COLUMNS, sensitivity_rows
from nopeek.errors import ConfigError
from nopeek.protocol import transcript
from nopeek.protocol import Conv, Dense, build_model

B = 16


def _costs(config, clients, flops_for="all"):
    return {c.method: c for c in method_costs(config.validate(), clients, flops_for)}


# ---- FLOPs: what XLA counts, against closed forms ------------------------------------


def dense_forward(n, d_in, d_out, relu):
    """Matmul 2*n*d_in*d_out (a multiply-add is 2), bias n*d_out, ReLU n*d_out."""
    return 2 * n * d_in * d_out + n * d_out + (n * d_out if relu else 0)


def dense_step(n, d_in, d_out, relu):
    """Forward, then dW (2*n*d_in*d_out), db ((n - 1)*d_out adds) and, with a ReLU, 3*n*d_out
    for its gradient (compare and select as XLA lowers it); no gradient of the data input.
    Determined on jax 0.10.2 (CPU) and asserted exactly."""
    return dense_forward(n, d_in, d_out, relu) + 2 * n * d_in * d_out + (n - 1) * d_out + (3 * n * d_out if relu else 0)


def same_taps(length, k=3):
    """Kernel taps inside the input, summed over output positions, of a SAME convolution along one axis."""
    return sum(min(o + k // 2, length - 1) - max(o - k // 2, 0) + 1 for o in range(length))


def conv_forward(n, h, w, c_in, c_out):
    """2 * multiply-adds over the taps inside the image (SAME padding's zeros are free), bias and ReLU."""
    return 2 * n * c_in * c_out * same_taps(h) * same_taps(w) + 2 * n * h * w * c_out


def _step_program(module, x_shape, out_shape):
    graphdef, state = nnx.split(module)

    def step(s, ct, x):
        out, vjp = jax.vjp(lambda q: nnx.merge(graphdef, q)(x), s)
        return out, vjp(ct)

    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    fwd, _ = compiled_flops(lambda s, xx: nnx.merge(graphdef, s)(xx), state, x)
    total, _ = compiled_flops(step, state, jax.ShapeDtypeStruct(out_shape, jnp.float32), x)
    return fwd, total


@pytest.mark.parametrize("n,d_in,d_out", [(8, 16, 4), (32, 64, 10), (5, 7, 3)])
@pytest.mark.parametrize("relu", [True, False])
def test_dense_flops_equal_closed_form(n, d_in, d_out, relu):
    fwd, total = _step_program(Dense(d_in, d_out, activation=relu, rngs=nnx.Rngs(0)), (n, d_in), (n, d_out))
    assert fwd == dense_forward(n, d_in, d_out, relu)
    assert total == dense_step(n, d_in, d_out, relu)


@pytest.mark.parametrize("n,h,w,c_in,c_out", [(2, 8, 8, 3, 4), (3, 5, 6, 2, 5), (1, 1, 4, 1, 2)])
def test_conv_flops_equal_closed_form(n, h, w, c_in, c_out):
    fwd, total = _step_program(Conv(c_in, c_out, rngs=nnx.Rngs(0)), (n, h, w, c_in), (n, h, w, c_out))
    assert same_taps(8) == 3 * 8 - 2 and same_taps(1) == 1
    assert fwd == conv_forward(n, h, w, c_in, c_out)
    # the weight gradient has exactly the forward's multiply-adds; the rest is elementwise (bias, ReLU)
    assert total - fwd - 2 * n * c_in * c_out * same_taps(h) * same_taps(w) == 7 * n * h * w * c_out - c_out


def test_profile_counts_the_client_segment_and_the_parties_partition_the_whole_model():
    # mlp on 8x8 digits cut after fc1: the client's step is one Dense(64 -> 128) + ReLU
    config = CostConfig(model="mlp", dataset="digits", cuts=(1,), batch_size=B, client_counts=(2,)).validate()
    split, whole = profiles(config, 2)
    assert split.data_holder.forward_flops == dense_forward(B, 64, 128, True)
    assert split.data_holder.step_flops == dense_step(B, 64, 128, True)
    # the server's step (fc2, head, loss) plus the client's is the whole model's step
    assert split.data_holder.step_flops + split.party("server").step_flops == pytest.approx(whole.data_holder.step_flops, rel=1e-6)
    cnn = CostConfig(model="cnn", dataset="mnist5k", cuts=(1,), batch_size=B, client_counts=(2,)).validate()
    split, whole = profiles(cnn, 2)
    assert split.data_holder.forward_flops == conv_forward(B, 28, 28, 1, 16)
    # to within 0.1%: XLA fuses the ReLU's gradient at the seam differently in one program
    assert split.data_holder.step_flops + split.party("server").step_flops == pytest.approx(whole.data_holder.step_flops, rel=2e-3)


def test_nopeek_term_adds_to_the_data_holder_only():
    base = CostConfig(model="mlp", dataset="digits", cuts=(1,), batch_size=B, client_counts=(2,))
    plain, _ = profiles(base.validate(), 2)
    with_term, _ = profiles(dataclasses.replace(base, include_nopeek=True).validate(), 2)
    assert with_term.data_holder.step_flops > plain.data_holder.step_flops
    assert with_term.party("server").step_flops == plain.party("server").step_flops


# ---- bytes: the transcript and the parameters -----------------------------------------


def _real_transcript(topology, setup, batch, optimizer=None):
    built = T.build(topology, setup)
    params = built.init(0)
    x = jax.ShapeDtypeStruct((batch, *setup.input_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32)
    state = None if optimizer is None else {p: (params[p], optimizer.init(params[p])) for p in params}
    return transcript(built.topology, params, jax.eval_shape(built.prepare, x, y), handoff_state=state)


@pytest.mark.parametrize("topology,cuts", [("vanilla", (1,)), ("u_shaped", (1, 2)), ("round_robin", (1,))])
def test_split_learning_bytes_equal_the_transcript_over_an_epoch(topology, cuts):
    clients, steps, epochs = 4, 3, 2
    config = CostConfig(model="mlp", dataset="digits", topology=topology, cuts=cuts, batch_size=B, client_counts=(clients,),
                        dataset_size=clients * steps * B, epochs=epochs)
    setup = T.Setup(model="mlp", widths=(), input_shape=(8, 8, 1), num_classes=10, cuts=cuts, clients=2)
    messages = _real_transcript(topology, setup, B, optax.adam(1e-3))
    per_step = sum(m.bytes for m in messages if m.per == "step" and "client" in (m.sender, m.receiver))
    per_turn = sum(m.bytes for m in messages if m.per == "turn" and "client1" in (m.sender, m.receiver))
    assert per_step > 0 and (per_turn > 0) == (topology == "round_robin")
    got = _costs(config, clients, "none")["split_learning"]
    assert got.client_bytes == epochs * (steps * per_step + per_turn)
    assert got.exchanges == epochs * steps


def test_vertical_clients_each_send_their_slice_of_every_sample():
    config = CostConfig(model="mlp", dataset="digits", topology="vertical", cuts=(1,), batch_size=B, client_counts=(2,),
                        dataset_size=5 * B, epochs=3)
    setup = T.Setup(model="mlp", widths=(), input_shape=(8, 8, 1), num_classes=10, cuts=(1,), clients=2)
    messages = _real_transcript("vertical", setup, B)
    per_step = sum(m.bytes for m in messages if "client1" in (m.sender, m.receiver))
    assert _costs(config, 2, "none")["split_learning"].client_bytes == 3 * 5 * per_step


@pytest.mark.parametrize("precision,local,rounds", [(4, 1, None), (2, 2, None), (4, 1, 7)])
def test_federated_bytes_are_twice_the_client_held_parameters_per_round(precision, local, rounds):
    config = CostConfig(model="cnn", dataset="mnist5k", batch_size=B, client_counts=(10,), epochs=5, precision_bytes=precision,
                        fl_local_epochs=local, fl_rounds=rounds)
    params = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(build_model("cnn", (28, 28, 1), 10))))
    expected_rounds = rounds if rounds is not None else math.ceil(5 / local)
    fl = _costs(config, 10, "none")["federated_learning"]
    assert fl.exchanges == expected_rounds
    assert fl.client_bytes == expected_rounds * 2 * params * precision
    sgd = _costs(config, 10, "none")["large_batch_sgd"]
    assert sgd.client_bytes == 5 * math.ceil(4000 / config.sgd_global_batch) * 2 * params * precision


def test_precision_scales_floats_but_not_labels():
    base = dict(model="mlp", dataset="digits", cuts=(1,), batch_size=B, client_counts=(4,), dataset_size=4 * B, epochs=1)
    f32 = _costs(CostConfig(**base), 4, "none")["split_learning"].client_bytes
    f16 = _costs(CostConfig(**base, precision_bytes=2), 4, "none")["split_learning"].client_bytes
    labels = B * 4  # int32 labels sent to the server in vanilla
    assert f16 - labels == (f32 - labels) / 2


def test_compute_per_client_and_the_crossover():
    config = CostConfig(model="mlp", dataset="digits", cuts=(1,), batch_size=B, client_counts=(4,), epochs=3).validate()
    split, whole = profiles(config, 4)
    costs = _costs(config, 4)
    steps = 3 * (1347 / 4) / B
    assert costs["split_learning"].client_flops == pytest.approx(steps * split.data_holder.step_flops)
    assert costs["federated_learning"].client_flops == pytest.approx(steps * whole.data_holder.step_flops)
    assert costs["large_batch_sgd"].client_flops == costs["federated_learning"].client_flops
    n_star = crossover(config)
    for n in (math.floor(n_star), math.ceil(n_star)):
        c = _costs(config, n, "none")
        above = c["split_learning"].client_bytes > c["federated_learning"].client_bytes
        assert above == (n < n_star)
    # printed: the first whole number of clients where split learning sends less (not N* rounded)
    first = math.floor(n_star) + 1
    below = {n: _costs(config, n, "none") for n in (first - 1, first)}
    assert [c["split_learning"].client_bytes < c["federated_learning"].client_bytes for c in below.values()] == [False, True]
    assert re.search(rf"crossover \(split below federated from\)\s+{first} clients\n", run_cost([config]).text)


def test_seed_table_preset_has_the_seeds_shape():
    """Compute: SL/FL between 1/400 and 1/95 (seed ~1/190); communication: SL above FL at
    100 clients and below at 500. The real preset's configs (VGG-16 and ResNet-50 shapes)."""
    compute, communication = COST_PRESETS["seed-table"]
    split, whole = profiles(compute.validate(), 100, "holder")
    ratio = split.data_holder.step_flops / whole.data_holder.step_flops
    assert 1 / 400 <= ratio <= 1 / 95
    at = {n: _costs(communication, n, "none") for n in (100, 500)}
    assert at[100]["split_learning"].client_bytes > at[100]["federated_learning"].client_bytes
    assert at[500]["split_learning"].client_bytes < at[500]["federated_learning"].client_bytes
    assert 100 < crossover(communication) < 500


def test_sensitivity_covers_every_cut():
    config = CostConfig(model="mlp", dataset="digits", widths=(32, 16, 8), batch_size=B, client_counts=(4,)).validate()
    rows = sensitivity_rows(config)
    assert [r["cut"] for r in rows] == [1, 2, 3]
    assert [r["block"] for r in rows] == ["fc1", "fc2", "fc3"]
    assert all(r["compute_ratio_sl_fl"] and r["crossover_clients"] for r in rows)
    assert float(rows[0]["compute_ratio_sl_fl"]) < float(rows[2]["compute_ratio_sl_fl"])


def test_measured_step_times():
    config = CostConfig(model="mlp", dataset="digits", batch_size=B, client_counts=(2,), measure=True).validate()
    split, whole = profiles(config, 2)
    assert all(p.step_seconds > 0 for p in split.parties) and whole.data_holder.step_seconds > 0


# ---- the command line -------------------------------------------------------------------


def test_cost_command_writes_the_table_and_figure(tmp_path, capsys):
    out = tmp_path / "cost"
    assert main(["cost", "--model", "mlp", "--dataset", "digits", "--client-counts", "2,10", "--epochs", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "federated learning" in text and "assumptions:" in text and "crossover" in text
    with open(out / "cost.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[:6] == ["method", "model", "dataset", "clients", "client_tflops", "client_gb"]
        assert reader.fieldnames == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == 6 and {r["method"] for r in rows} == {"large_batch_sgd", "federated_learning", "split_learning"}
    assert (out / "cost.png").stat().st_size > 0
    assert (out / "cost.txt").read_text() == text.split("\nwrote ")[0].strip() + "\n"  # what it printed, kept
    assert not [f for f in os.listdir(out) if "tmp" in f]
    # written whole: a second report there needs --force, which leaves nothing of the first
    # (an earlier report's sensitivity files) and never a file of the user's
    again = ["cost", "--model", "mlp", "--dataset", "digits", "--client-counts", "4", "--epochs", "3", "--out", str(out)]
    with pytest.raises(SystemExit):
        main(again)
    assert "holds a cost report (`nopeek cost`) already; use another --out, or --force" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        main([*again, "--force"])
    assert "did not write (notes.txt)" in capsys.readouterr().err and (out / "notes.txt").exists()
    (out / "notes.txt").unlink()
    (out / "cost_sensitivity.csv").write_text("an earlier report's")
    list_in_manifest(str(out), "cost_sensitivity.csv")
    assert main([*again, "--force"]) == 0
    assert not (out / "cost_sensitivity.csv").exists()
    with open(out / "cost.csv", newline="") as f:
        assert {r["clients"] for r in csv.DictReader(f)} == {"4"}


@pytest.mark.parametrize("args,message", [
    (["--cuts", "99"], "--cuts must be between 1 and 20 for vgg16"),
    (["--client-counts", "0"], "--client-counts must be >= 1"),
    (["--client-counts", "10,-3"], "--client-counts must be >= 1"),
    (["--epochs", "-1"], "--epochs must be >= 1"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--model", "nope"], "unknown model"),
    (["--dataset", "nope"], "unknown dataset"),
    (["--topology", "u_shaped", "--cuts", "1"], "u_shaped takes 2 cuts"),
    (["--precision-bytes", "3"], "--precision-bytes"),
    (["--model", "vgg16", "--dataset", "digits"], "is too small for this model"),
    (["--preset", "seed-table", "--fl-local-epochs", "0"], "--fl-local-epochs must be >= 1"),
    (["--client-counts", "many"], "expected comma-separated ints"),
    (["--client-counts", "10,10"], "--client-counts: each number once (one column each), got 10,10"),
    (["--leakage", "log_dcor"], "--leakage log_dcor chooses the NoPeek term to count: add --include-nopeek"),
    (["--handoff", "mail"], "argument --handoff: invalid choice"),
])
def test_bad_input_is_one_error_line(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["cost", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nopeek cost: error: ") and message in err
    assert "Traceback" not in err


def test_cost_config_judges_values_and_check_cost_the_data_and_model():
    """`CostConfig.validate` builds no model and reads no data set's size: a cut past the
    model and more clients than samples pass it, and `check_cost` (which `run_cost` and
    `nopeek cost` call first) refuses them."""
    from nopeek.cost import check_cost

    for changes, message in ((dict(cuts=(99,)), "--cuts must be between 1 and 2 for mlp"),
                             (dict(client_counts=(5000,)), "fewer samples than --client-counts 5000")):
        config = CostConfig(model="mlp", dataset="digits", **changes)
        assert config.validate() is config
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_cost(config)
