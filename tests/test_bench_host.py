"""bench/_host.py's host line must not start jax's backend before nopeek has added its XLA
flags: every bench script prints it first, and a backend started without the flags runs the
timings taken inside the bench process under XLA's defaults (it did, from bfc96ae until this
test: the cnn's step 22.35 ms instead of 17.08 at batch 64 on the Xeon,
bench/records/xeon-2026-12-04-slices). nopeek warns when it is imported too late for its
flags. Both need the flags to be wanted (nopeek adds them on the jaxlib versions they were
checked on only)."""

import os
import subprocess
import sys

import pytest

from nopeek.core import _xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    _xla_flags._jaxlib_version() not in _xla_flags.FAST_CONVOLUTION_JAXLIB,
    reason="nopeek adds its XLA flags only on the jaxlib versions they were checked on")

# A convolution compiled in the child: XLA's defaults hand it to YNNPACK (a __ynn_fusion),
# nopeek's convolution flag keeps it out; what the backend did, not what XLA_FLAGS says.
CONVOLUTION = ("import jax, jax.numpy as jnp; "
               "f = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME', "
               "dimension_numbers=('NHWC', 'HWIO', 'NHWC'))); "
               "print('__ynn_fusion' in f.lower(jnp.ones((8, 28, 28, 16)), jnp.ones((3, 3, 16, 32))).compile().as_text())")


def _env():
    return {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "NOPEEK_XLA_DEFAULTS")}


def _run(code, env=None, warnings="always"):
    done = subprocess.run([sys.executable, "-W", warnings, "-c", code], capture_output=True, text=True,
                          env=env or _env(), cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_host_line_keeps_nopeeks_xla_flags():
    done = _run("from bench._host import host_line; print(host_line().startswith('CPU: ')); " + CONVOLUTION)
    is_host_line, in_ynnpack = done.stdout.strip().splitlines()[-2:]
    assert is_host_line == "True"
    assert in_ynnpack == "False", "the host line started jax's backend before nopeek's flags"
    assert "do not apply" not in done.stderr
    # the check itself can fail: XLA's defaults do put this convolution in YNNPACK
    assert _run(CONVOLUTION, env=dict(_env(), NOPEEK_XLA_DEFAULTS="0")).stdout.strip().splitlines()[-1] == "True"


def test_importing_nopeek_after_a_jax_computation_warns():
    """The flags cannot reach a backend that has started: nopeek says so instead of running
    slower in silence; imported first, it does not warn."""
    late = _run("import jax; jax.numpy.zeros(1).block_until_ready(); import nopeek; " + CONVOLUTION)
    early = _run("import nopeek; " + CONVOLUTION)
    assert "do not apply in this process" in late.stderr and "RuntimeWarning" in late.stderr
    assert late.stdout.strip().splitlines()[-1] == "True"  # the warning is right: YNNPACK's convolution
    assert "do not apply" not in early.stderr
    assert early.stdout.strip().splitlines()[-1] == "False"
    # the user's own XLA_FLAGS naming every flag: nothing to add, nothing to warn about
    own = dict(_env(), XLA_FLAGS=" ".join(f"{flag}={value}" for flag, value in _xla_flags.XLA_DEFAULT_FLAGS.items()))
    quiet = _run("import jax; jax.numpy.zeros(1).block_until_ready(); import nopeek", env=own)
    assert "do not apply" not in quiet.stderr
