"""What users run, timed whole: `nopeek train` as a process against a plain PyTorch script of the
same job, the step inside the real training loop, the fixed cost of a run, and the share of an
epoch spent evaluating.

    python bench/process.py [--part process|step|fixed|eval|compile|all] [--rounds 5] [--epochs 1,4,8]
        [--model cnn|resnet]

- process: `nopeek train --dataset mnist5k --model cnn --cut 4 --alpha 1 --epochs E
  --batch-size 64` against `python bench/torch_train.py` (the same job by hand; `pip install
  -e ".[bench]"`), each run once to warm up (file cache, nopeek's compilation cache), then
  `--rounds` times alternating the two; median wall seconds and the ratio, for each E. A
  line through the medians over E splits each into a fixed cost per run and a cost per epoch.
- step: the median step of the training loop `nopeek train` runs (`train_stack`, its step
  function timed with a device sync after each call) at batch 64 and 256, against the median
  step inside the PyTorch script at the same batch; `--rounds` alternating rounds (nopeek's
  in this process, the script's each in its own), the median of their medians and its range.
- `--model resnet` times the small resnet cut at 2 (`--model resnet --cut 2`) instead of the
  cnn cut at 4, in process and step, against the script's `--model resnet`.
- fixed: a one-epoch `nopeek train` on digits (second run: the caches are warm) against
  `python -c "import jax, flax.nnx, optax"`, the floor any JAX program pays (that process
  also pays the interpreter's teardown at exit, which `nopeek`'s own exit skips:
  `nopeek.cli.exit_now`; a row with `NOPEEK_FULL_EXIT=1` times the run with it); median wall
  seconds of `--rounds` alternating rounds, with the range.
- compile: nopeek's XLA flags (nopeek/core/_xla_flags.py: the classic fusion emitters and
  Eigen's convolutions)
  against XLA's own defaults (`NOPEEK_XLA_DEFAULTS=0`), every program compiled
  (NOPEEK_NO_CACHE=1): a 2-epoch mnist5k `nopeek train`, the small modern-attacks sweep and
  FORA's 1,500 steps against that run (a long training loop), whole processes, alternating
  the two settings `--compile-rounds` times (median wall seconds and the ratio); then the
  loop's step at batch 64 and 256 under each setting (each in its own process, caches on,
  alternating; median of the rounds' medians). Not in `all`: it takes minutes.
- eval: the per-epoch evaluation (accuracy, the probe's dCor and readings) as a share of
  an epoch of the mnist5k job, from the loop's own timings.

Every figure is a ratio of two timings taken in the same run; the first line printed is the
host (CPU model, vector extensions, load): on a loaded machine the ratios still hold, the
seconds do not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._host import host_line  # noqa: E402

#: The model's cut in the job (the model's own default cut for the resnet, 2).
CUTS = {"cnn": 4, "resnet": 2}


def job(model: str = "cnn") -> list[str]:
    """`nopeek train`'s arguments for the mnist5k job with `model` at its cut, NoPeek's alpha 1."""
    return ["--dataset", "mnist5k", "--model", model, "--cut", str(CUTS[model]), "--alpha", "1"]


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _wall(cmd: list[str], env=None) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-600:]}")
    return seconds, done.stdout


def nopeek_cmd(epochs: int, batch: int, out: str, extra=(), model: str = "cnn") -> list[str]:
    return [sys.executable, "-m", "nopeek.cli", "train", *job(model), "--epochs", str(epochs), "--batch-size", str(batch),
            "--out", out, "--force", "--quiet", *extra]


def torch_cmd(epochs: int, batch: int, out: str, model: str = "cnn") -> list[str]:
    return [sys.executable, os.path.join(ROOT, "bench", "torch_train.py"), "--epochs", str(epochs),
            "--batch-size", str(batch), "--out", out, "--model", model]


def process(rounds: int, epochs_list: list[int], batch: int = 64, model: str = "cnn") -> None:
    have_torch = _torch_available()
    print(f"\n## Whole process: `nopeek train {' '.join(job(model))} --epochs E --batch-size {batch}` "
          f"against bench/torch_train.py ({rounds} alternating rounds after a warm-up; median wall seconds)")
    if not have_torch:
        print("(PyTorch is not installed: pip install -e \".[bench]\"; nopeek's times only)")
    print("| epochs | nopeek (s) | PyTorch script (s) | nopeek speed relative to PyTorch |")
    print("|---|---|---|---|")
    medians = {}
    with tempfile.TemporaryDirectory(prefix="nopeek-bench-") as tmp:
        for epochs in epochs_list:
            ours, theirs = [], []
            runs = [("nopeek", nopeek_cmd(epochs, batch, os.path.join(tmp, "nopeek"), model=model))]
            if have_torch:
                runs.append(("torch", torch_cmd(epochs, batch, os.path.join(tmp, "torch"), model)))
            for _, cmd in runs:  # warm-up: file cache, nopeek's compilation and data caches
                _wall(cmd)
            for _ in range(rounds):
                for name, cmd in runs:
                    (ours if name == "nopeek" else theirs).append(_wall(cmd)[0])
            m_ours = statistics.median(ours)
            m_theirs = statistics.median(theirs) if theirs else float("nan")
            medians[epochs] = (m_ours, m_theirs)
            print(f"| {epochs} | {m_ours:.2f} (min {min(ours):.2f}) | "
                  + (f"{m_theirs:.2f} (min {min(theirs):.2f}) | {m_theirs / m_ours:.2f}x |" if theirs else "- | - |"),
                  flush=True)
    if len(medians) >= 2:
        xs = sorted(medians)
        for i, name in enumerate(("nopeek", "PyTorch script")):
            ys = [medians[e][i] for e in xs]
            if any(y != y for y in ys):
                continue
            slope, intercept = _line(xs, ys)
            print(f"{name}: fixed cost per run {intercept:.2f} s, per epoch {slope:.2f} s (least squares over E = "
                  f"{','.join(map(str, xs))})")


def _line(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def loop_step_ms(batch: int, epochs: int = 2, model: str = "cnn", cut: int = 4) -> dict:
    """The median step (ms) of `train_stack` on the mnist5k job (by default the cnn cut at 4,
    NoPeek's alpha 1), each step followed by a sync,
    the median per-epoch evaluation (ms; accuracy and the probe's dCor) and the last epoch's
    (with the readings: U-statistic, permutation null, partial dCor), from the loop nopeek
    train runs."""
    import jax

    from nopeek.data import load
    from nopeek.training import TrainConfig, _loop

    steps, evals, evals_last = [], [], []
    make_step, make_eval = _loop.make_step_fn, _loop.make_epoch_eval

    def timed_step(*a, **k):
        step = make_step(*a, **k)

        def run(*args):
            t0 = time.perf_counter()
            out = jax.block_until_ready(step(*args))
            steps.append(time.perf_counter() - t0)
            return out
        return run

    def timed_eval(*a, **k):
        evaluate = make_eval(*a, **k)

        def run(*args, readings=True):
            t0 = time.perf_counter()
            out = evaluate(*args, readings=readings)
            if readings:  # the last epoch's: its first call traces its program; time a second
                t0 = time.perf_counter()
                out = evaluate(*args, readings=readings)
            (evals_last if readings else evals).append(time.perf_counter() - t0)
            return out
        return run

    _loop.make_step_fn, _loop.make_epoch_eval = timed_step, timed_eval
    try:
        config = TrainConfig(dataset="mnist5k", model=model, cuts=(cut,), alpha=1.0, epochs=epochs, batch_size=batch)
        dataset = load("mnist5k")
        _loop.train_stack(config, dataset, progress=False)  # compiles (or loads from the cache)
        steps.clear()
        evals.clear()
        evals_last.clear()
        t0 = time.perf_counter()
        _loop.train_stack(config, dataset, progress=False)
        total = time.perf_counter() - t0
    finally:
        _loop.make_step_fn, _loop.make_epoch_eval = make_step, make_eval
    per_epoch = len(steps) // epochs
    # the first step and evaluation of a fresh train_stack trace their programs: leave them out
    return {"step_ms": 1e3 * statistics.median(steps[1:]), "eval_ms": 1e3 * statistics.median(evals[1:] or evals),
            "eval_last_ms": 1e3 * statistics.median(evals_last),
            "steps_per_epoch": per_epoch, "epoch_ms": 1e3 * statistics.median(steps[1:]) * per_epoch,
            "total_s": total}


def step(rounds: int = 5, batches=(64, 256), model: str = "cnn") -> None:
    """The loop's median step against the PyTorch script's, `rounds` alternating rounds per
    batch; the median of the rounds' medians and their range (the host's drift between
    rounds is larger than the spread within one)."""
    have_torch = _torch_available()
    print(f"\n## The step inside the training loop, {model} cut {CUTS[model]} (median ms of {rounds} alternating "
          "round(s), each the median "
          "step of a 2-epoch run; range in brackets; nopeek: train_stack's step with a sync after each; "
          "PyTorch: bench/torch_train.py's own step timer)")
    print("| batch | nopeek (ms) | PyTorch (ms) | nopeek speed relative to PyTorch |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="nopeek-bench-") as tmp:
        for batch in batches:
            ours, theirs = [], []
            for _ in range(rounds):
                ours.append(loop_step_ms(batch, model=model, cut=CUTS[model])["step_ms"])
                if have_torch:
                    _, out = _wall(torch_cmd(2, batch, tmp, model))
                    theirs.append(json.loads(out.strip().splitlines()[-1])["median_step_ms"])
            m_ours = statistics.median(ours)
            cell = f"{m_ours:.2f} ({min(ours):.2f}-{max(ours):.2f})"
            if theirs:
                m_theirs = statistics.median(theirs)
                print(f"| {batch} | {cell} | {m_theirs:.2f} ({min(theirs):.2f}-{max(theirs):.2f}) | "
                      f"{m_theirs / m_ours:.2f}x |", flush=True)
            else:
                print(f"| {batch} | {cell} | - | - |", flush=True)


def fixed(rounds: int) -> None:
    print("\n## Fixed cost: a one-epoch digits run (second run, caches warm) against importing jax, flax and optax")
    print("| what | median wall (s) | range (s) | ratio to the imports |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="nopeek-bench-") as tmp:
        imports = [sys.executable, "-c", "import jax, flax.nnx, optax"]
        run = [sys.executable, "-m", "nopeek.cli", "train", "--dataset", "digits", "--epochs", "1", "--out",
               os.path.join(tmp, "digits"), "--force", "--quiet"]
        cold_env = dict(os.environ, NOPEEK_NO_CACHE="1")
        teardown_env = dict(os.environ, NOPEEK_FULL_EXIT="1")
        rows = {"import jax, flax.nnx, optax": (imports, None), "nopeek train --dataset digits --epochs 1": (run, None),
                "the same, NOPEEK_FULL_EXIT=1 (with the interpreter's teardown)": (run, teardown_env),
                "the same, NOPEEK_NO_CACHE=1": (run, cold_env)}
        for cmd, env in rows.values():
            _wall(cmd, env)
        times = {name: [] for name in rows}
        for _ in range(rounds):
            for name, (cmd, env) in rows.items():
                times[name].append(_wall(cmd, env)[0])
        floor = statistics.median(times["import jax, flax.nnx, optax"])
        for name, ts in times.items():
            print(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f}-{max(ts):.2f} | "
                  f"{statistics.median(ts) / floor:.2f}x |", flush=True)


def eval_share() -> None:
    print("\n## Per-epoch evaluation against an epoch (mnist5k job, batch 64; medians from train_stack's own loop)")
    print("| steps per epoch | step (ms) | epoch of steps (ms) | evaluation (ms) | evaluation / epoch "
          "| last epoch's evaluation, with the readings (ms) |")
    print("|---|---|---|---|---|---|")
    got = loop_step_ms(64, epochs=4)
    print(f"| {got['steps_per_epoch']} | {got['step_ms']:.2f} | {got['epoch_ms']:.0f} | {got['eval_ms']:.1f} | "
          f"{got['eval_ms'] / got['epoch_ms']:.1%} | {got['eval_last_ms']:.1f} |", flush=True)


def compile_effort(rounds: int, batches=(64, 256)) -> None:
    print("\n## XLA's compile effort: nopeek's flags against XLA's defaults, every program compiled "
          f"(NOPEEK_NO_CACHE=1; {rounds} alternating round(s))")
    print("| what | nopeek's flags | XLA's defaults (NOPEEK_XLA_DEFAULTS=0) | speed with nopeek's flags relative |")
    print("|---|---|---|---|")
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "NOPEEK_XLA_DEFAULTS")}
    settings = {"nopeek": dict(base, NOPEEK_NO_CACHE="1"), "xla": dict(base, NOPEEK_NO_CACHE="1", NOPEEK_XLA_DEFAULTS="0")}
    with tempfile.TemporaryDirectory(prefix="nopeek-bench-") as tmp:
        jobs = {"nopeek train, mnist5k cnn, 2 epochs (s)": lambda: nopeek_cmd(2, 64, os.path.join(tmp, "train")),
                "nopeek sweep --preset modern-attacks --small (s)": lambda: [
                    sys.executable, "-m", "nopeek.cli", "sweep", "--preset", "modern-attacks", "--small", "--out",
                    os.path.join(tmp, f"sweep{time.perf_counter_ns()}"), "--quiet"],
                "nopeek attack --attack fora --attack-steps 1500 on that run (s)": lambda: [
                    sys.executable, "-m", "nopeek.cli", "attack", "--run", os.path.join(tmp, "train"), "--attack",
                    "fora", "--attack-steps", "1500", "--out", os.path.join(tmp, f"fora{time.perf_counter_ns()}")]}
        for name, cmd in jobs.items():
            times = {key: [] for key in settings}
            for _ in range(rounds):
                for key, env in settings.items():
                    times[key].append(_wall(cmd(), env)[0])
            ours, theirs = statistics.median(times["nopeek"]), statistics.median(times["xla"])
            print(f"| {name} | {ours:.1f} | {theirs:.1f} | {theirs / ours:.2f}x |", flush=True)
        probe = [sys.executable, "-c", "import json, sys; from bench.process import loop_step_ms; "
                 "print(json.dumps(loop_step_ms(int(sys.argv[1]))['step_ms']))"]
        for batch in batches:
            times = {key: [] for key in settings}
            for _ in range(rounds):
                for key, env in settings.items():
                    env = {k: v for k, v in env.items() if k != "NOPEEK_NO_CACHE"}
                    times[key].append(float(_wall([*probe, str(batch)], env)[1].strip().splitlines()[-1]))
            ours, theirs = statistics.median(times["nopeek"]), statistics.median(times["xla"])
            print(f"| training step, batch {batch} (ms) | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("process", "step", "fixed", "eval", "compile", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile-rounds", type=int, default=3, help="rounds for --part compile (minutes each)")
    parser.add_argument("--epochs", default="1,4,8", help="comma-separated epoch counts for --part process")
    parser.add_argument("--model", default="cnn", choices=tuple(CUTS),
                        help="the job's model for --part process and step (cnn cut 4, resnet cut 2)")
    args = parser.parse_args()
    print(host_line())
    if args.part in ("fixed", "all"):
        fixed(args.rounds)
    if args.part in ("eval", "all"):
        eval_share()
    if args.part in ("step", "all"):
        step(args.rounds, model=args.model)
    if args.part in ("process", "all"):
        process(args.rounds, [int(e) for e in args.epochs.split(",")], model=args.model)
    if args.part == "compile":
        compile_effort(args.compile_rounds)


if __name__ == "__main__":
    main()
