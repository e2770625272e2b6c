"""Wall-clock timers around the parts of one `nopeek train --dataset digits --epochs 1` run,
in process (caches warm: run it twice and keep the second). Used for the fixed cost's
breakdown in bench/README.md; prints seconds.

    python bench/records/amd-2026-12-05/phases.py   # PYTHONPATH=another checkout to time that one
"""
import functools
import tempfile
import time

T0 = time.perf_counter()
spent = {}


def timed(name, f, sync=False):
    @functools.wraps(f)
    def g(*a, **k):
        t = time.perf_counter()
        try:
            out = f(*a, **k)
            if sync:
                jax.block_until_ready(out)
            return out
        finally:
            spent.setdefault(name, []).append(time.perf_counter() - t)
    return g


t = time.perf_counter()
import jax, flax.nnx, optax  # noqa: E401,E402,F401  (the floor's imports, timed)
print(f"import jax, flax.nnx, optax: {time.perf_counter() - t:.3f}")
t = time.perf_counter()
import nopeek.cli._main as cli  # noqa: E402
import nopeek.protocol._topologies  # noqa: E402,F401
import nopeek.training._loop as loop  # noqa: E402
import nopeek.training._runs as runs  # noqa: E402
print(f"import nopeek (beyond them): {time.perf_counter() - t:.3f}")
loop.build = timed("topology builds (protocol build)", loop.build)
loop.init_stack = timed("init_stack", loop.init_stack)
runs.run_metrics = timed("run_metrics", runs.run_metrics)
make_step_fn, make_epoch_eval = loop.make_step_fn, loop.make_epoch_eval
loop.make_step_fn = lambda *a, **k: timed("steps (the first includes tracing and loading)", make_step_fn(*a, **k), True)
loop.make_epoch_eval = lambda *a, **k: timed("epoch evaluations", make_epoch_eval(*a, **k), True)
with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    code = cli.main(["train", "--dataset", "digits", "--epochs", "1", "--out", tmp + "/run", "--quiet"])
    print(f"main: {time.perf_counter() - t:.3f} (exit status {code})")
for name, ts in spent.items():
    print(f"  {name}: {len(ts)} call(s), first {ts[0]:.3f}, total {sum(ts):.3f}")
print(f"process so far: {time.perf_counter() - T0:.3f}")
