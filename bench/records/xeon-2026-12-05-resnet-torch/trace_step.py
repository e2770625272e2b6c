"""Trace nopeek's resnet step (train_stack's loop) and sum XLA op time by name."""
import sys, glob, collections, shutil
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", ".."))
import nopeek  # noqa: F401 (sets nopeek's XLA flags, as users get them)
import jax
from nopeek.data import load
from nopeek.training import TrainConfig, _loop
B = int(sys.argv[1]); which = sys.argv[2]
out = f"/tmp/prof/trace_{which}"
shutil.rmtree(out, ignore_errors=True)
assert which == "nopeek", "usage: trace_step.py BATCH nopeek"
config = TrainConfig(dataset="mnist5k", model="resnet", cuts=(2,), alpha=1.0, epochs=1, batch_size=B)
ds = load("mnist5k")
_loop.train_stack(config, ds, progress=False)
with jax.profiler.trace(out):
    _loop.train_stack(config, ds, progress=False)
nsteps = 4000 // B
from jax.profiler import ProfileData
path = glob.glob(f"{out}/**/*.xplane.pb", recursive=True)[0]
pd = ProfileData.from_file(path)
tot = collections.Counter(); cnt = collections.Counter()
for plane in pd.planes:
    for line in plane.lines:
        for ev in line.events:
            tot[(plane.name[:20], line.name[:30], ev.name[:60])] += ev.duration_ns
            cnt[(plane.name[:20], line.name[:30], ev.name[:60])] += 1
for k, v in tot.most_common(45):
    print(f"{v/1e6/nsteps:8.3f} ms/step  x{cnt[k]/nsteps:5.1f}  {k}")
print("---- XLA ops")
ops = collections.Counter(); ocnt = collections.Counter()
for plane in pd.planes:
    for line in plane.lines:
        if not line.name.startswith("tf_XLA"):
            continue
        for ev in line.events:
            if "ThunkExecutor" in ev.name: continue
            ops[ev.name[:70]] += ev.duration_ns; ocnt[ev.name[:70]] += 1
total = sum(ops.values())
print(f"total XLA op time {total/1e6/nsteps:.2f} ms/step")
for k, v in ops.most_common(40):
    print(f"{v/1e6/nsteps:8.3f} ms/step x{ocnt[k]/nsteps:5.1f} {k}")
