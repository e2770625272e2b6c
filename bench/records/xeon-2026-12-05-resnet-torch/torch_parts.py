import sys, time, statistics, os
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__import__("os").path.abspath(__file__)), "..", ".."))
import torch
from torch import nn
from torch_train import ResidualBlock
torch.set_num_threads(os.cpu_count())
B = int(sys.argv[1]) if len(sys.argv) > 1 else 64
blocks = [("stem", nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.GroupNorm(8, 16, eps=1e-6), nn.ReLU()), (B, 1, 28, 28)),
          ("stage1", ResidualBlock(16, 16), (B, 16, 28, 28)), ("stage2", ResidualBlock(16, 32, 2), (B, 16, 28, 28)),
          ("stage3", ResidualBlock(32, 64, 2), (B, 32, 14, 14)), ("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)), (B, 64, 7, 7))]
def timeit(f, n=30):
    f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)
tf = tb = 0
for name, m, shape in blocks:
    x = torch.randn(shape)
    def fwd():
        with torch.no_grad():
            m(x)
    def bwd():
        xx = x.clone().requires_grad_(True)
        m.zero_grad()
        torch.tanh(m(xx)).sum().backward()
    f, b = timeit(fwd), timeit(bwd)
    tf += f; tb += b
    print(f"{name:8} fwd {f:7.2f} ms  fwd+bwd {b:7.2f} ms")
print(f"total    fwd {tf:7.2f} ms  fwd+bwd {tb:7.2f} ms")
