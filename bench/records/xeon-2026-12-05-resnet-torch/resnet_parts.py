"""Where the resnet's step goes: each block's forward and forward+backward, jitted alone, batch 64."""
import sys, time, statistics
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", "..", ".."))
import nopeek  # noqa: F401 (sets nopeek's XLA flags, as users get them)
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from nopeek.protocol._models import Stem, ResidualBlock, PoolHead

B = int(sys.argv[1]) if len(sys.argv) > 1 else 64
rngs = nnx.Rngs(0)
blocks = [("stem", Stem(1, 16, rngs=rngs), (B, 28, 28, 1)), ("stage1", ResidualBlock(16, 16, rngs=rngs), (B, 28, 28, 16)),
          ("stage2", ResidualBlock(16, 32, stride=2, rngs=rngs), (B, 28, 28, 16)),
          ("stage3", ResidualBlock(32, 64, stride=2, rngs=rngs), (B, 14, 14, 32)), ("head", PoolHead(64, 10, rngs=rngs), (B, 7, 7, 64))]

def timeit(f, *a, n=30):
    jax.block_until_ready(f(*a))
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)

tot_f = tot_b = 0
for name, m, shape in blocks:
    g, p = nnx.split(m)
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    fwd = jax.jit(lambda p, x: nnx.merge(g, p)(x))
    def loss(p, x):
        return jnp.sum(jnp.tanh(nnx.merge(g, p)(x)))
    bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
    f, b = timeit(fwd, p, x), timeit(bwd, p, x)
    tot_f += f; tot_b += b
    print(f"{name:8} fwd {f:7.2f} ms  fwd+bwd {b:7.2f} ms")
print(f"total    fwd {tot_f:7.2f} ms  fwd+bwd {tot_b:7.2f} ms")
