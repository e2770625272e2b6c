"""The resnet split step written plainly: one jit, jax.grad of CE over the whole model + Adam."""
import sys, time, statistics
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", ".."))
import nopeek  # noqa: F401 (sets nopeek's XLA flags, as users get them)
import jax, jax.numpy as jnp, numpy as np, optax
from flax import nnx
from nopeek.protocol._models import Stem, ResidualBlock, PoolHead
B = int(sys.argv[1])
rngs = nnx.Rngs(0)
class Net(nnx.Module):
    def __init__(self):
        self.b = nnx.List([Stem(1, 16, rngs=rngs), ResidualBlock(16, 16, rngs=rngs), ResidualBlock(16, 32, stride=2, rngs=rngs),
                  ResidualBlock(32, 64, stride=2, rngs=rngs), PoolHead(64, 10, rngs=rngs)])
    def __call__(self, x):
        for m in self.b: x = m(x)
        return x
net = Net()
g, p = nnx.split(net, nnx.Param)
opt = optax.adam(1e-3); s = opt.init(p)
def loss(p, x, y):
    logits = nnx.merge(g, p)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
@jax.jit
def step(p, s, x, y):
    l, gr = jax.value_and_grad(loss)(p, x, y)
    u, s = opt.update(gr, s, p)
    return optax.apply_updates(p, u), s, l
x = jnp.asarray(np.random.default_rng(0).random((B, 28, 28, 1)), jnp.float32); y = jnp.zeros((B,), jnp.int32)
p, s, l = jax.block_until_ready(step(p, s, x, y))
ts = []
for _ in range(40):
    t0 = time.perf_counter(); p, s, l = jax.block_until_ready(step(p, s, x, y)); ts.append(time.perf_counter() - t0)
print(f"plain whole-model step B={B}: {1e3*statistics.median(ts):.2f} ms")
