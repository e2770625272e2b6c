import sys, time, statistics, json
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", ".."))
import nopeek  # noqa: F401 (sets nopeek's XLA flags, as users get them)
import jax
from nopeek.data import load
from nopeek.training import TrainConfig, _loop
B = int(sys.argv[1]); alpha = float(sys.argv[2]); model = sys.argv[3] if len(sys.argv) > 3 else "resnet"
cut = 2 if model == "resnet" else 4
steps = []
make_step = _loop.make_step_fn
def timed_step(*a, **k):
    step = make_step(*a, **k)
    def run(*args):
        t0 = time.perf_counter(); out = jax.block_until_ready(step(*args)); steps.append(time.perf_counter() - t0); return out
    return run
_loop.make_step_fn = timed_step
config = TrainConfig(dataset="mnist5k", model=model, cuts=(cut,), alpha=alpha, epochs=1, batch_size=B)
ds = load("mnist5k")
_loop.train_stack(config, ds, progress=False); steps.clear()
_loop.train_stack(config, ds, progress=False)
print(json.dumps({"B": B, "alpha": alpha, "step_ms": 1e3 * statistics.median(steps[1:])}))
