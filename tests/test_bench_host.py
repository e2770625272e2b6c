"""bench/_host.py's host line must not start jax's backend before nopeek has added its XLA
flags: every bench script prints it first, and a backend started without the flags runs the
whole benchmark under XLA's defaults (it did, from bfc96ae until this test: the cnn's step
30.5 ms instead of 20.1 on the Xeon). nopeek warns when it is imported too late for its flags;
here the warning is an error."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_host_line_keeps_nopeeks_xla_flags():
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "NOPEEK_XLA_DEFAULTS")}
    code = ("import os; from bench._host import host_line; line = host_line(); "
            "from nopeek.core import _xla_flags; "
            "print(line.startswith('CPU: ')); print(_xla_flags._defaults_wanted()); print(os.environ.get('XLA_FLAGS', ''))")
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    is_host_line, wanted, flags = done.stdout.strip().splitlines()[-3:]
    assert is_host_line == "True"
    assert wanted == "True"
    from nopeek.core import QUICK_COMPILE_FLAGS
    for flag, value in QUICK_COMPILE_FLAGS.items():
        assert f"{flag}={value}" in flags.split()


def test_importing_nopeek_after_a_jax_computation_warns():
    """The flags cannot reach a backend that has started: nopeek says so instead of running
    slower in silence; imported first, it does not warn."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "NOPEEK_XLA_DEFAULTS")}
    late = "import jax; jax.numpy.zeros(1).block_until_ready(); import nopeek"
    early = "import nopeek; import jax; jax.numpy.zeros(1).block_until_ready()"
    runs = {name: subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True,
                                 env=env, cwd=ROOT, timeout=300) for name, code in (("late", late), ("early", early))}
    assert all(run.returncode == 0 for run in runs.values()), [run.stderr[-1500:] for run in runs.values()]
    assert "do not apply in this process" in runs["late"].stderr
    assert "RuntimeWarning" in runs["late"].stderr
    assert "do not apply" not in runs["early"].stderr
    # the user's own XLA_FLAGS naming every flag: nothing to add, nothing to warn about
    from nopeek.core import XLA_DEFAULT_FLAGS
    own = dict(env, XLA_FLAGS=" ".join(f"{flag}={value}" for flag, value in XLA_DEFAULT_FLAGS.items()))
    run = subprocess.run([sys.executable, "-W", "always", "-c", late], capture_output=True, text=True, env=own,
                         cwd=ROOT, timeout=300)
    assert run.returncode == 0 and "do not apply" not in run.stderr
