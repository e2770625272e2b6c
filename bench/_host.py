"""What machine a benchmark ran on, printed first by every script in bench/ and stored beside
every results file: hosts of the same kind differ (XLA's convolutions are fast on one and
slow on another), so a figure without its host cannot be compared."""

from __future__ import annotations

import os
import platform

VECTOR_PREFIXES = ("sse4", "avx", "fma", "amx")


def cpu() -> str:
    """'MODEL; N cores; vector extensions' from /proc/cpuinfo (Linux), else what platform says."""
    model, flags = "", []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = sorted({f for f in line.split(":", 1)[1].split() if f.startswith(VECTOR_PREFIXES)})
                if model and flags:
                    break
    except OSError:
        pass
    return f"{model or platform.processor() or 'unknown CPU'}; {os.cpu_count()} cores; {' '.join(flags) or 'no vector extensions listed'}"


def load() -> float:
    """The 1-minute load average (NaN where unknown): above the core count, timings lie."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return float("nan")


def accelerators() -> str:
    """What JAX and PyTorch compute on: 'jax: N x KIND (platform)', 'torch: cuda NAME' (a GPU
    only); 'none' on a CPU-only host."""
    found = []
    try:
        # nopeek first: it adds its XLA flags only before jax starts its backend, which
        # jax.devices() below does (without this, every later nopeek program in the process
        # ran under XLA's defaults: the cnn's step 22.35 ms instead of 17.08 on the Xeon,
        # bench/records/xeon-2026-12-04-slices).
        import nopeek  # noqa: F401
    except ImportError:  # run outside this checkout: jax alone
        pass
    try:
        import jax

        devices = jax.devices()
        if devices[0].platform != "cpu":
            found.append(f"jax: {len(devices)} x {devices[0].device_kind} ({devices[0].platform})")
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            found.append(f"torch: cuda {torch.cuda.get_device_name(0)}")
    except ImportError:
        pass
    return "; ".join(found) or "none"


def host_line() -> str:
    """One line: CPU, its extensions, the load, the accelerators (a GPU's name) and the
    versions that decide speed."""
    versions = []
    for name in ("jax", "jaxlib", "torch"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    return f"CPU: {cpu()}; load {load():.1f}; accelerator: {accelerators()}; {', '.join(versions)}"


def docs_results():
    """docs/results.py as a module: `write_run` stores a results folder's run.json (command,
    seconds, CPU, load, date, commit) the way the documentation's tables expect it."""
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("docs_results", os.path.join(root, "docs", "results.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
